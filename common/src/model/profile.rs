//! Doors for the developer tools in `examples/` (`prefill_profile`, `linear_bench`): one block's
//! stages, and each CPU kernel next to the tensor code it replaces. Not part of the stable API.

use burn::nn::Dropout;
use burn::prelude::*;

use super::Phi;
use super::block::Pass;
use super::ops::{self, cpu, tensor};
use super::positions::Positions;

/// Timed calls for one block of `phi` on `x: [1, seq, hidden]` (no cache, no adapters).
pub struct BlockStages<'a, B: Backend> {
    phi: &'a Phi<B>,
    positions: Positions<B>,
}

impl<'a, B: Backend> BlockStages<'a, B> {
    /// For inputs of `seq` positions from position 0.
    pub fn new(phi: &'a Phi<B>, seq: usize, device: &B::Device) -> Self {
        Self {
            phi,
            positions: Positions::new(&phi.model.rotary, 0, seq, &[], None, device),
        }
    }

    fn pass(&self) -> Pass<'_, B> {
        Pass {
            rotary: &self.phi.model.rotary,
            positions: &self.positions,
            adapters: None,
            matmul: None,
        }
    }

    /// The whole first block.
    pub fn block(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.phi.model.layers[0].forward(x, 0, &self.pass(), None)
    }

    /// Its attention half.
    pub fn attention(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.phi.model.layers[0]
            .self_attn
            .forward(x, 0, &self.pass(), None)
    }

    /// Its MLP half.
    pub fn mlp(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.phi.model.layers[0].mlp.forward(x, 0, &self.pass())
    }

    /// Rotary on `x: [batch, heads, seq, head_dim]` with tensor ops.
    pub fn rotary_tensor(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.phi
            .model
            .rotary
            .apply(x, &self.positions.angles, ops::rotary_partners::<B>())
    }

    /// Rotary on `x: [batch, seq, heads·head_dim]` with the CPU kernel.
    pub fn rotary_kernel(&self, x: Tensor<B, 3>, head_dim: usize) -> Tensor<B, 3> {
        cpu::rotary::apply(x, head_dim, &self.positions.angles)
    }
}

/// `gelu_new` with tensor ops.
pub fn gelu_tensor<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor::gelu_new(x)
}

/// `gelu_new` with the CPU kernel.
pub fn gelu_kernel<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    cpu::gelu::gelu_new(x)
}

/// Causal attention with tensor ops, `q: [batch, heads, seq, dim]`, `k`, `v` the same.
pub fn attention_tensor<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
) -> Tensor<B, 4> {
    tensor::attention(q, k, v, None, &Dropout { prob: 0.0 }, scale, None)
}

/// Causal attention with the CPU kernel, `q: [batch, seq, heads·dim]`, `k`, `v`:
/// `[batch, kv_heads, keys, dim]`.
pub fn attention_kernel<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    heads: usize,
    scale: f32,
) -> Tensor<B, 3> {
    cpu::attention::attention(q, k, v, None, heads, scale)
}
