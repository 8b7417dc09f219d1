//! Perplexity over a token stream with sliding windows, as transformers' perplexity recipe
//! computes it: windows of `context` tokens that start `stride` apart, each token scored once (in
//! the first window that reaches it), with up to `context - stride` tokens of left context. The
//! stream's first token has no context and is not scored; with `stride = context` neither is the
//! first token of any window.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use phi_zoo_common::{LanguageModel, Options, PhiError, Result};
use serde::Serialize;

/// What a perplexity run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Tokens scored.
    pub tokens: usize,
    /// Windows run through the model.
    pub windows: usize,
    /// Σ −log p(token | its left context), in nats, summed in f64.
    pub nll_sum: f64,
    /// `nll_sum / tokens`.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Bytes of UTF-8 text the scored tokens stand for, when known.
    pub bytes: Option<u64>,
    /// `nll_sum / (ln 2 · bytes)`: bits per byte, comparable across tokenizers.
    pub bits_per_byte: Option<f64>,
}

/// One window: tokens `begin..end` run through the model, tokens `first..end` scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First token fed.
    pub begin: usize,
    /// First token scored.
    pub first: usize,
    /// One past the last token fed and scored.
    pub end: usize,
}

/// The windows over `len` tokens: `context` long, `stride` apart.
pub fn windows(len: usize, context: usize, stride: usize) -> Vec<Window> {
    let mut windows = vec![];
    let (mut begin, mut scored_to) = (0, 0);
    while begin < len {
        let end = (begin + context).min(len);
        let first = scored_to.max(begin + 1);
        if first < end {
            windows.push(Window { begin, first, end });
        }
        scored_to = end;
        if end == len {
            break;
        }
        begin += stride;
    }
    windows
}

/// The perplexity of `model` on `ids`, windows of `context` tokens `stride` apart, `batch`
/// windows of equal length per forward pass. `bytes`: the text's length, for bits per byte.
/// `progress(done, total)` is called after each batch of windows.
#[allow(clippy::too_many_arguments)]
pub fn perplexity<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    ids: &[u32],
    context: usize,
    stride: usize,
    batch: usize,
    bytes: Option<u64>,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityReport> {
    let max_context = model.phi().config().max_position_embeddings;
    if context < 2 || context > max_context {
        return Err(PhiError::Input(format!(
            "a perplexity window of {context} tokens: it must be 2 to the model's context of {max_context}"
        )));
    }
    if stride == 0 || stride > context {
        return Err(PhiError::Input(format!(
            "stride {stride}: it must be 1 to the window length {context}"
        )));
    }
    let all = windows(ids.len(), context, stride);
    if all.is_empty() {
        return Err(PhiError::Input(
            "nothing to score: perplexity needs at least two tokens".into(),
        ));
    }
    let (mut nll_sum, mut tokens) = (0.0f64, 0usize);
    let mut done = 0;
    // Consecutive windows of one length go through the model together.
    for group in all.chunk_by(|a, b| a.end - a.begin == b.end - b.begin) {
        for chunk in group.chunks(batch.max(1)) {
            let log_probs = target_log_probs(model, ids, chunk, device)?;
            for (window, row) in chunk.iter().zip(log_probs) {
                // Entry j is the log-probability of token begin + 1 + j.
                let skip = window.first - window.begin - 1;
                nll_sum -= row[skip..].iter().map(|&lp| lp as f64).sum::<f64>();
                tokens += window.end - window.first;
            }
            done += chunk.len();
            progress(done, all.len());
        }
    }
    let mean_nll = nll_sum / tokens as f64;
    Ok(PerplexityReport {
        tokens,
        windows: all.len(),
        nll_sum,
        mean_nll,
        perplexity: mean_nll.exp(),
        bytes,
        bits_per_byte: bytes
            .filter(|&b| b > 0)
            .map(|b| nll_sum / (std::f64::consts::LN_2 * b as f64)),
    })
}

/// For windows of one length: each row's log p(token t+1 | tokens begin..=t), for t from begin
/// to end − 2.
fn target_log_probs<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    ids: &[u32],
    windows: &[Window],
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    let phi = model.phi();
    let rows: Vec<Vec<u32>> = windows
        .iter()
        .map(|w| ids[w.begin..w.end - 1].to_vec())
        .collect();
    let targets: Vec<Vec<u32>> = windows
        .iter()
        .map(|w| ids[w.begin + 1..w.end].to_vec())
        .collect();
    let logits = phi.logits(
        phi.ids_tensor(&rows, device)?,
        Options::default().with_adapters(model.adapters()),
    )?;
    let [batch, seq, _] = logits.dims();
    let targets = phi.ids_tensor(&targets, device)?.reshape([batch, seq, 1]);
    let picked = log_softmax(logits, 2).gather(2, targets);
    let values: Vec<f32> = picked.into_data().iter::<f32>().collect();
    Ok(values.chunks(seq).map(<[f32]>::to_vec).collect())
}
