//! The mixture as burn's `Dataset`, and the `Batcher` that turns windows into language-model
//! batches: inputs are a window's first `seq_len` tokens, targets the `seq_len` after them.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;

use crate::mixture::Mixture;
pub use phi_zoo_common::LmBatch;

/// One training sample: `seq_len + 1` tokens, and its index in the mixture's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenWindow {
    /// Its index in the mixture's sample stream.
    pub index: u64,
    /// `seq_len + 1` token ids (inputs and, shifted by one, targets).
    pub tokens: Vec<u32>,
}

/// Samples `start .. start + len` of a mixture. A training run covers its steps with
/// `start = first_step × batch_size`, so a resumed run reads exactly what it would have read.
#[derive(Debug, Clone)]
pub struct MixtureDataset {
    mixture: Arc<Mixture>,
    start: u64,
    len: usize,
}

impl MixtureDataset {
    /// `len` samples of `mixture` from sample `start` on.
    pub fn new(mixture: Arc<Mixture>, start: u64, len: usize) -> Self {
        Self {
            mixture,
            start,
            len,
        }
    }

    /// The mixture sampled.
    pub fn mixture(&self) -> &Mixture {
        &self.mixture
    }
}

impl Dataset<TokenWindow> for MixtureDataset {
    fn get(&self, index: usize) -> Option<TokenWindow> {
        if index >= self.len {
            return None;
        }
        let index = self.start + index as u64;
        // Windows are in range by construction and the stores are memory-mapped: no error
        // can arise here that `Mixture::new` and `TokenStore::open` did not already report.
        let tokens = self.mixture.get(index).ok()?;
        Some(TokenWindow { index, tokens })
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[derive(Debug, Clone, Copy, Default)]
/// Batches token windows into `LmBatch`es (inputs and targets shifted by one).
pub struct LmBatcher;

impl<B: Backend> Batcher<B, TokenWindow, LmBatch<B>> for LmBatcher {
    fn batch(&self, items: Vec<TokenWindow>, device: &B::Device) -> LmBatch<B> {
        let width = items.first().map_or(1, |w| w.tokens.len());
        assert!(
            width >= 2 && items.iter().all(|w| w.tokens.len() == width),
            "windows of one batch must share a length of at least 2"
        );
        let (batch, seq) = (items.len(), width - 1);
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for window in &items {
            inputs.extend(window.tokens[..seq].iter().map(|&t| t as i64));
            targets.extend(window.tokens[1..].iter().map(|&t| t as i64));
        }
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [batch, seq]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, seq]), device),
            loss_mask: None,
        }
    }
}
