//! The model's execution choices, in one place: on burn's CPU backend, in inference and in f32,
//! phi-zoo's kernels (`cpu`); everywhere else (GPU backends, training under autodiff, f16 on the
//! CPU) the generic tensor code (`tensor`). Both compute the same f32 arithmetic, so a choice
//! changes speed, never results (each kernel is tested against the code it replaces). Model code
//! calls these functions and never asks which backend it runs on.

pub(super) mod cpu;
pub(super) mod tensor;

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::DType;

use super::rotary::{PartialRotary, RotaryAngles};

/// Whether `B` runs on burn's CPU backend (directly or under autodiff): told by its device type.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn is_cpu<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        use std::any::TypeId;
        TypeId::of::<B::Device>() == TypeId::of::<burn::backend::flex::FlexDevice>()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

/// The CPU kernels apply to `x`: an f32 inference tensor on the CPU backend.
fn kernels_apply<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    is_cpu::<B>() && !B::ad_enabled(&x.device()) && x.dtype() == DType::F32
}

/// `x·W + b` for `x: [rows, in]` with `weight` in `PhiLinear`'s CPU layout, when the CPU kernel
/// applies (`None`: the caller's tensor code runs).
pub(crate) fn few_rows_linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    if !kernels_apply(x) || weight.dtype() != DType::F32 {
        return None;
    }
    #[cfg(feature = "flex")]
    return cpu::few_rows::linear(x.clone(), weight, bias);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, bias);
        None
    }
}

/// `gelu_new`, elementwise.
pub(crate) fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if kernels_apply(&x) {
        cpu::gelu::gelu_new(x)
    } else {
        tensor::gelu_new(x)
    }
}

/// Partial rotary on `x: [batch, heads, seq, head_dim]` (queries or keys), in the same layout.
pub(crate) fn rotary<B: Backend>(
    x: Tensor<B, 4>,
    rotary: &PartialRotary<B>,
    angles: &RotaryAngles<B>,
) -> Tensor<B, 4> {
    if !kernels_apply(&x) {
        return rotary.apply(x, angles);
    }
    // One pass over the projection's own `[batch, seq, heads·head_dim]` layout (of which `x`
    // is a view) instead of rotary's slices and concatenations.
    let [batch, heads, seq, head_dim] = x.dims();
    let flat = x.swap_dims(1, 2).reshape([batch, seq, heads * head_dim]);
    cpu::rotary::apply(flat, head_dim, angles)
        .reshape([batch, seq, heads, head_dim])
        .swap_dims(1, 2)
}

/// Causal attention of queries `q: [batch, heads, seq, head_dim]` at the last `seq` key slots
/// over keys and values `[batch, kv_heads, keys, head_dim]`, hiding what `mask`
/// (`[batch, 1, seq, keys]`, true = hidden) hides when given (else plain causal masking):
/// `softmax(q·kᵀ·scale)·v`, scores and softmax in f32, heads merged, `[batch, seq, heads·head_dim]`.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    dropout: &Dropout,
    scale: f64,
) -> Tensor<B, 3> {
    let [batch, heads, seq, head_dim] = q.dims();
    // Back to `[batch, seq, heads·head_dim]`: for the CPU kernel's input, and the output's layout.
    let merge = |t: Tensor<B, 4>| t.swap_dims(1, 2).reshape([batch, seq, heads * head_dim]);
    if kernels_apply(&q) && seq > 1 {
        return cpu::attention::attention(merge(q), k, v, mask, heads, scale as f32);
    }
    // A decode step: a kernel that reads the cache in place and reduces over each row's own
    // slots only, so a row decodes the same in any batch.
    #[cfg(feature = "flex")]
    if kernels_apply(&q)
        && let Some(out) = cpu::decode_attention::attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask.clone(),
            scale as f32,
        )
    {
        return out;
    }
    merge(tensor::attention(q, k, v, mask, dropout, scale))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_backend_is_recognised_with_and_without_autodiff() {
        use burn::backend::{Autodiff, Flex};
        assert!(super::is_cpu::<Flex>());
        assert!(super::is_cpu::<Autodiff<Flex>>());
    }
}
