//! The generic tensor code behind `ops`, for every backend and for training.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::{sigmoid, softmax};

/// `gelu_new`, the tanh approximation `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))`; the erf GELU
/// gives plausible but wrong output. Computed as the identical `x·σ(2√(2/π)(x + 0.044715x³))`
/// (since `0.5(1 + tanh(u)) = σ(2u)`): on the CPU backend `σ` costs one `exp` where `tanh` costs
/// far more, and it is two elementwise passes fewer. The cube is two multiplications: `powf`
/// costs far more on the CPU backend.
pub fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * sigmoid(inner)
}

/// `[batch, heads, seq, dim]` queries against every key and value `[batch, kv_heads, keys, dim]`;
/// the product with the values in `matmul` when given.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    dropout: &Dropout,
    scale: f64,
    matmul: Option<FloatDType>,
) -> Tensor<B, 4> {
    let heads = q.dims()[1];
    let (k, v) = (repeat_kv(k, heads), repeat_kv(v, heads));
    let seq = q.dims()[2];
    let keys = k.dims()[2];
    // phi-2 overflows f16 in q·kᵀ: scores, mask and softmax run in f32 on every backend.
    let value_dtype = v.dtype();
    let mut scores = q
        .cast(FloatDType::F32)
        .matmul(k.cast(FloatDType::F32).swap_dims(2, 3))
        .mul_scalar(scale);
    if let Some(mask) = mask {
        scores = scores.mask_fill(mask, f32::NEG_INFINITY);
    } else if seq > 1 {
        // Bottom-right aligned: query i, at slot keys - seq + i, sees keys up to there.
        let offset = (keys - seq) as i64;
        let future = Tensor::<B, 2, Bool>::tril_mask([seq, keys], offset, &scores.device());
        scores = scores.mask_fill(future.reshape([1, 1, seq, keys]), f32::NEG_INFINITY);
    }
    let probs = dropout.forward(softmax(scores, 3));
    match matmul {
        // Mixed precision: the weighted sum of values in `matmul`, the output in v's type.
        Some(dtype) => probs.cast(dtype).matmul(v.cast(dtype)).cast(value_dtype),
        None => probs.cast(value_dtype).matmul(v),
    }
}

/// Key/value heads serve `heads / kv_heads` consecutive query heads each.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [batch, kv_heads, seq, head_dim] = x.dims();
    let groups = heads / kv_heads;
    if groups == 1 {
        return x;
    }
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, kv_heads * groups, seq, head_dim])
}

/// `ops::cross_entropy_rows` in tensor operations (for backends without the CPU kernel).
#[cfg(feature = "train")]
pub(crate) fn cross_entropy_rows<B: Backend>(
    products: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let rows = products.dims()[0];
    let logits = products + bias.unsqueeze();
    let targets = targets.reshape([rows, 1]);
    let weights = weights.reshape([rows, 1]);
    let max = logits.clone().max_dim(1);
    let shifted_target = logits.clone().gather(1, targets.clone()) - max.clone();
    let exp = (logits - max).exp();
    let sum = exp.clone().sum_dim(1);
    let unused = weights.clone().equal_elem(0.0);
    let nll = (sum.clone().log() - shifted_target).mask_fill(unused, 0.0);
    let grad = (exp / sum * weights.clone()).scatter(
        1,
        targets,
        weights.neg(),
        burn::tensor::IndexingUpdateOp::Add,
    );
    (grad, nll.reshape([rows]))
}
