//! Next-token cross-entropy, computed in f32 whatever the model's float type.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::log_softmax;

/// Mean negative log-likelihood of `targets` under `logits` (`[batch, seq, vocab]`), over the
/// positions `mask` keeps (all when `None`), as a one-element tensor. A batch whose mask keeps
/// nothing has loss 0 (and no gradient), not NaN.
pub fn lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 1> {
    let [batch, seq, vocab] = logits.dims();
    let rows = batch * seq;
    let log_probs = log_softmax(logits.cast(FloatDType::F32).reshape([rows, vocab]), 1);
    let nll = log_probs
        .gather(1, targets.reshape([rows, 1]))
        .reshape([rows])
        .neg();
    match mask {
        None => nll.mean(),
        Some(mask) => {
            let weights = mask.reshape([rows]).float().cast(FloatDType::F32);
            let kept = weights.clone().sum().clamp_min(1.0);
            (nll * weights).sum() / kept
        }
    }
}
