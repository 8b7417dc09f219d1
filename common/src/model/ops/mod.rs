//! The model's execution choices, in one place: on burn's CPU backend, in inference and in f32,
//! phi-zoo's kernels (`cpu`); everywhere else (GPU backends, training under autodiff, f16 on the
//! CPU) the generic tensor code (`tensor`). Both compute the same f32 arithmetic, so a choice
//! changes speed, never results (each kernel is tested against the code it replaces). Model code
//! calls these functions and never asks which backend it runs on.

pub(super) mod cpu;
pub(super) mod tensor;

use std::any::TypeId;

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::DType;

use super::rotary::{PartialRotary, RotaryAngles};

/// Whether `B` runs on burn's CPU backend (directly or under autodiff): told by its device type.
pub(crate) fn is_cpu<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        TypeId::of::<B::Device>() == TypeId::of::<burn::backend::flex::FlexDevice>()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = TypeId::of::<B::Device>;
        false
    }
}

/// The CPU kernels apply to `x`: an f32 inference tensor on the CPU backend.
fn kernels_apply<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    is_cpu::<B>() && !B::ad_enabled(&x.device()) && x.dtype() == DType::F32
}

/// `gelu_new`, elementwise.
pub(crate) fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if kernels_apply(&x) {
        cpu::gelu::gelu_new(x)
    } else {
        tensor::gelu_new(x)
    }
}

/// Partial rotary on `x: [batch, seq, heads, head_dim]` (queries or keys, heads split but not
/// moved), in the same layout.
pub(crate) fn rotary<B: Backend>(
    x: Tensor<B, 4>,
    rotary: &PartialRotary<B>,
    angles: &RotaryAngles<B>,
) -> Tensor<B, 4> {
    let [batch, seq, heads, head_dim] = x.dims();
    if kernels_apply(&x) {
        // One pass over the projection's own layout instead of rotary's slices and concatenations.
        let flat = x.reshape([batch, seq, heads * head_dim]);
        cpu::rotary::apply(flat, head_dim, angles).reshape([batch, seq, heads, head_dim])
    } else {
        rotary.apply(x.swap_dims(1, 2), angles).swap_dims(1, 2)
    }
}

/// Causal attention of queries `q: [batch, seq, heads, head_dim]` at the last `seq` key slots
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
    let [batch, seq, heads, head_dim] = q.dims();
    // A decode step (one query) takes the generic path on the CPU too: its matmuls read the
    // cache in place, where the kernel would copy every cached key and value first.
    if kernels_apply(&q) && seq > 1 {
        let q = q.reshape([batch, seq, heads * head_dim]);
        cpu::attention::attention(q, k, v, mask, heads, scale as f32)
    } else {
        tensor::attention(q.swap_dims(1, 2), k, v, mask, dropout, scale)
            .swap_dims(1, 2)
            .reshape([batch, seq, heads * head_dim])
    }
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
