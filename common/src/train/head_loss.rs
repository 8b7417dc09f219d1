//! The LM head and the cross-entropy of a training step as one computation, with the gradients
//! they produce worked out while the loss is: the `[batch, seq, vocab]` logits never enter the
//! autodiff graph.
//!
//! Through autodiff, the head and `lm_loss` keep the logits and most of the log-softmax's
//! intermediates (each `[rows, 51200]`) alive until the backward pass, which then runs a pass per
//! operation over them: on the CPU, the tiny config's loss and its backward took longer than the
//! rest of the model's forward and backward together. Here, for chunks of rows, the logits are
//! computed outside the graph, turned in place into their gradient
//! `w·(softmax − onehot(target))` (with the loss read on the way), and multiplied out into the
//! gradients of the hidden states (`G·Wᵀ`) and of the head (`hᵀ·G`, `Σ G`). A surrogate
//! `s = Σ h·∂h`, whose gradient is exactly that constant, carries `∂h` into the graph (the
//! step's loss is `(s − s) + loss`: its value the loss, its gradient `∂s`); the head's
//! gradients join the backward pass's when it is taken (`HeadLoss::backward`), as burn's
//! registration would have added them. Memory: one chunk of logits at a time instead of the
//! whole batch's several times over.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;

use crate::model::PhiLinear;
use crate::model::ops;

/// Logits per chunk: 256 MB of f32 on the CPU, 1 GB on an accelerator. Smaller chunks cost
/// speed on the CPU (at 16 MB the tiny config's loss took 30% longer: more, smaller products
/// and a sum of head gradients per chunk); the chunk bounds memory for long batches (phi-1.5
/// at 8 × 2048 positions: 3.4 GB of logits whole).
fn chunk_logits<B: Backend>() -> usize {
    if ops::is_cpu::<B>() { 1 << 26 } else { 1 << 28 }
}

/// The mean next-token cross-entropy of the head's logits over `hidden: [batch, seq, hidden]`
/// against `targets: [batch, seq]`, over the positions `mask` keeps (all when `None`), ready to
/// backpropagate: the same value and gradients as `lm_loss(head.forward(hidden), targets, mask)`.
/// A batch whose mask keeps nothing has loss 0 and no gradient. With `matmul` (mixed
/// precision) the head's three products run in that type; softmax, loss and gradients in f32.
pub fn head_loss<B: AutodiffBackend>(
    head: &PhiLinear<B>,
    hidden: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Option<Tensor<B, 2, Bool>>,
    matmul: Option<FloatDType>,
) -> HeadLoss<B> {
    let [batch, seq, d_in] = hidden.dims();
    let rows = batch * seq;
    let hidden = hidden.reshape([rows, d_in]);
    let (weight, bias) = (head.weight.val(), head.bias.val());
    let hidden_dtype = hidden.dtype();
    let h = hidden.clone().inner();
    let w = weight.clone().inner();
    let (h, w) = match matmul {
        Some(dtype) => (h.cast(dtype), w.cast(dtype)),
        None => (h, w),
    };
    let bias32 = bias.clone().inner().cast(FloatDType::F32);
    let vocab = w.dims()[1];
    let device = h.device();
    let targets = targets.inner().reshape([rows]);
    // Each row's share of the mean: 1/kept where kept, 0 elsewhere.
    let row_weights = match mask {
        None => Tensor::<B::InnerBackend, 1>::full([rows], 1.0 / rows as f64, &device),
        Some(mask) => {
            let kept = mask.inner().reshape([rows]).float().cast(FloatDType::F32);
            let count = kept.clone().sum().clamp_min(1.0);
            kept / count
        }
    };

    let train_head = weight.is_require_grad();
    let chunk = (chunk_logits::<B>() / vocab).clamp(1, rows);
    let mut hidden_grads = Vec::with_capacity(rows.div_ceil(chunk));
    let mut head_grads = None;
    let mut loss = Tensor::<B::InnerBackend, 1>::zeros([1], &device);
    for start in (0..rows).step_by(chunk) {
        let range = start..(start + chunk).min(rows);
        let h_part = h.clone().slice([range.clone(), 0..d_in]);
        let w_part = row_weights.clone().slice([range.clone()]);
        // The bias joins inside the kernel, saving a pass over the logits.
        let products = h_part.clone().matmul(w.clone()).cast(FloatDType::F32);
        let targets = targets.clone().slice([range]);
        let (grad, nll) =
            ops::cross_entropy_rows(products, bias32.clone(), targets, w_part.clone());
        loss = loss + (nll * w_part).sum();
        let grad = grad.cast(h.dtype());
        // `G·Wᵀ`: on the CPU `Wᵀ` is the weight's `[vocab, in]` memory, read in order.
        hidden_grads.push(grad.clone().matmul(w.clone().transpose()));
        if train_head {
            // `∂W = hᵀ·G` (`[in, vocab]`) and `∂b = Σ G`, summed over chunks in f32.
            let part = (
                h_part
                    .transpose()
                    .matmul(grad.clone())
                    .cast(FloatDType::F32),
                grad.sum_dim(0).reshape([vocab]).cast(FloatDType::F32),
            );
            head_grads = Some(match head_grads {
                None => part,
                Some((gw, gb)) => (gw + part.0, gb + part.1),
            });
        }
    }

    // `Σ h·∂h` carries `∂h` into the graph; `(s − s)` is exactly 0 in value (a finite number
    // minus itself) and `∂h` in gradient.
    let hidden_grad = Tensor::cat(hidden_grads, 0).cast(hidden_dtype);
    let carrier = (hidden * Tensor::from_inner(hidden_grad))
        .sum()
        .cast(FloatDType::F32);
    let loss = carrier.clone() - carrier.detach() + Tensor::from_inner(loss);
    let head = head_grads.map(|(gw, gb)| HeadGrads {
        weight_grad: gw.cast(weight.dtype()),
        bias_grad: gb.cast(bias.dtype()),
        weight,
        bias,
    });
    HeadLoss { loss, head }
}

/// A training step's loss from [`head_loss`], with the head's gradients it has computed.
pub struct HeadLoss<B: AutodiffBackend> {
    /// The mean loss, `[1]`; its backward pass reaches the model below the head.
    pub loss: Tensor<B, 1>,
    head: Option<HeadGrads<B>>,
}

/// The head's parameters (as tracked tensors, for their identity) and their gradients.
struct HeadGrads<B: AutodiffBackend> {
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    weight_grad: Tensor<B::InnerBackend, 2>,
    bias_grad: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> HeadLoss<B> {
    /// The gradients of the loss for every parameter: the backward pass below the head, and the
    /// head's own, registered as the pass would have (added to any the pass found).
    pub fn backward(&self) -> B::Gradients {
        let mut grads = self.loss.backward();
        if let Some(head) = &self.head {
            add_grad(&mut grads, &head.weight, head.weight_grad.clone());
            add_grad(&mut grads, &head.bias, head.bias_grad.clone());
        }
        grads
    }
}

/// Adds `grad` to whatever gradient `grads` holds for `param`.
fn add_grad<B: AutodiffBackend, const D: usize>(
    grads: &mut B::Gradients,
    param: &Tensor<B, D>,
    grad: Tensor<B::InnerBackend, D>,
) {
    let grad = match param.grad_remove(grads) {
        Some(found) => found + grad,
        None => grad,
    };
    param.grad_replace(grads, grad);
}
