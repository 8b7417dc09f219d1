//! The language-model step behind burn-train's `TrainStep` / `InferenceStep` (implemented on
//! `Trainee`): only the loss crosses to the metrics (never the `[batch, seq, vocab]` logits), and
//! dropout is active exactly when the model runs on an autodiff backend, i.e. in training.

use std::time::Instant;

use burn::prelude::*;
use burn::train::metric::{Adaptor, ItemLazy, LossInput};

use burn::tensor::backend::AutodiffBackend;

use crate::batch::LmBatch;
use crate::model::{Adapters, Options, Phi};
use crate::train::head_loss::head_loss;
use crate::train::loss::lm_loss;

/// What a step reports: its loss, how many target tokens it covered, and when it was issued.
#[derive(Debug, Clone)]
pub struct LmStepOutput<B: Backend> {
    /// The mean loss over the counted target tokens, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Target tokens counted in the loss.
    pub tokens: usize,
    /// When the step began on the host (throughput metrics time from the first step of an
    /// epoch, excluding what came before it).
    pub issued: Instant,
}

/// The step's figures on the host, as the metrics consume them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmStepFigures {
    /// The mean loss over the counted target tokens.
    pub loss: f64,
    /// Target tokens counted in the loss.
    pub tokens: usize,
    /// When the step began on the host.
    pub issued: Instant,
}

impl<B: Backend> ItemLazy for LmStepOutput<B> {
    type ItemSync = LmStepFigures;

    fn sync(self) -> LmStepFigures {
        LmStepFigures {
            loss: self.loss.into_scalar().elem::<f64>(),
            tokens: self.tokens,
            issued: self.issued,
        }
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for LmStepFigures {
    fn adapt(&self) -> LossInput<B> {
        let device = B::Device::default();
        LossInput::new(Tensor::from_data([self.loss], &device))
    }
}

impl<B: Backend> Phi<B> {
    /// Loss of `batch` and the number of target tokens it counts.
    pub fn lm_step(&self, batch: LmBatch<B>) -> LmStepOutput<B> {
        self.lm_step_adapted(batch, None)
    }

    /// `lm_step` with LoRA `adapters` in the forward pass.
    pub fn lm_step_adapted(
        &self,
        batch: LmBatch<B>,
        adapters: Option<&dyn Adapters<B>>,
    ) -> LmStepOutput<B> {
        let issued = Instant::now();
        let tokens = counted_tokens(&batch);
        let logits = self
            .logits(batch.inputs, Options::default().with_adapters(adapters))
            .expect("training windows fit the context and adapters match the model: both are checked when training starts");
        LmStepOutput {
            loss: lm_loss(logits, batch.targets, batch.loss_mask),
            tokens,
            issued,
        }
    }
}

impl<B: AutodiffBackend> Phi<B> {
    /// `lm_step_adapted` as a training step takes it, with its gradients: the same loss and
    /// gradients as `lm_step_adapted(..).loss.backward()`, the LM head and the loss computed
    /// together (`train::head_loss`), never holding the logits.
    pub fn lm_train_step(
        &self,
        batch: LmBatch<B>,
        adapters: Option<&dyn Adapters<B>>,
    ) -> (LmStepOutput<B>, B::Gradients) {
        let issued = Instant::now();
        let tokens = counted_tokens(&batch);
        let hidden = self
            .hidden_states(batch.inputs, Options::default().with_adapters(adapters))
            .expect("training windows fit the context and adapters match the model: both are checked when training starts");
        let loss = head_loss(
            &self.lm_head,
            hidden,
            batch.targets,
            batch.loss_mask,
            self.matmul_dtype(),
        );
        let grads = loss.backward();
        let output = LmStepOutput {
            loss: loss.loss,
            tokens,
            issued,
        };
        (output, grads)
    }
}

/// Target tokens a batch counts in its loss.
fn counted_tokens<B: Backend>(batch: &LmBatch<B>) -> usize {
    match &batch.loss_mask {
        Some(mask) => mask.clone().int().sum().into_scalar().elem::<i64>() as usize,
        None => batch.targets.dims().iter().product(),
    }
}
