//! One Phi decoder layer: a parallel block with a single LayerNorm,
//!
//! ```text
//! x  = LayerNorm(h)
//! h' = h + dropout(Attention(x)) + dropout(MLP(x))
//! Attention(x) = dense(softmax(rot(q)·rot(k)ᵀ / √d, causal)·v),   q, k, v = x·W + b per head
//! MLP(x)       = fc2(gelu_new(fc1(x)))
//! ```
//!
//! where `rot` rotates the first `rotary_dim` channels of each head (NeoX convention), keys and
//! values may come from a cache of earlier positions, and adapters may add to any projection.
//! Where each step runs as a CPU kernel or as tensor code is `ops`'s business.

use burn::nn::{Dropout, LayerNorm};
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::adapters::{Adapters, Projection};
use super::cache::LayerCache;
use super::linear::PhiLinear;
use super::ops;
use super::positions::Positions;
use super::rotary::PartialRotary;

/// What every block of one forward pass shares.
pub(crate) struct Pass<'a, B: Backend> {
    pub rotary: &'a PartialRotary<B>,
    pub positions: &'a Positions<B>,
    pub adapters: Option<&'a dyn Adapters<B>>,
    /// The type matrix products run in (mixed precision); `None`: the parameters'.
    pub matmul: Option<FloatDType>,
}

impl<B: Backend> Pass<'_, B> {
    /// `linear(x)`, plus what the adapters add at block `layer`'s `projection`.
    fn project(
        &self,
        linear: &PhiLinear<B>,
        layer: usize,
        projection: Projection,
        x: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let Some(adapters) = self.adapters else {
            return linear.forward_in(x, self.matmul);
        };
        let y = linear.forward_in(x.clone(), self.matmul);
        match adapters.delta(layer, projection, x) {
            Some(delta) => y + delta,
            None => y,
        }
    }
}

/// A decoder layer; field names mirror transformers' keys (`model.layers.3.self_attn.q_proj`).
#[derive(Module, Debug)]
pub struct PhiDecoderLayer<B: Backend> {
    /// The one LayerNorm, shared by attention and MLP.
    pub input_layernorm: LayerNorm<B>,
    /// Self-attention.
    pub self_attn: PhiAttention<B>,
    /// The feed-forward half.
    pub mlp: PhiMlp<B>,
    /// Dropout on both halves' outputs (training only).
    pub resid_dropout: Dropout,
}

impl<B: Backend> PhiDecoderLayer<B> {
    /// The linear layer behind `projection`: the one map from projection names to this block's
    /// layers, which adapters, merging and export share.
    pub fn projection(&self, projection: Projection) -> &PhiLinear<B> {
        match projection {
            Projection::Q => &self.self_attn.q_proj,
            Projection::K => &self.self_attn.k_proj,
            Projection::V => &self.self_attn.v_proj,
            Projection::Dense => &self.self_attn.dense,
            Projection::Fc1 => &self.mlp.fc1,
            Projection::Fc2 => &self.mlp.fc2,
        }
    }

    /// As [`projection`](Self::projection), to replace or update the layer.
    pub fn projection_mut(&mut self, projection: Projection) -> &mut PhiLinear<B> {
        match projection {
            Projection::Q => &mut self.self_attn.q_proj,
            Projection::K => &mut self.self_attn.k_proj,
            Projection::V => &mut self.self_attn.v_proj,
            Projection::Dense => &mut self.self_attn.dense,
            Projection::Fc1 => &mut self.mlp.fc1,
            Projection::Fc2 => &mut self.mlp.fc2,
        }
    }

    /// `h: [batch, seq, hidden]` → `[batch, seq, hidden]`; block number `layer` of the pass.
    pub(crate) fn forward(
        &self,
        h: Tensor<B, 3>,
        layer: usize,
        pass: &Pass<'_, B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let x = self.input_layernorm.forward(h.clone());
        let attention = self.self_attn.forward(x.clone(), layer, pass, cache);
        let mlp = self.mlp.forward(x, layer, pass);
        h + self.resid_dropout.forward(attention) + self.resid_dropout.forward(mlp)
    }
}

/// Self-attention: q/k/v projections with bias, optional per-head q/k LayerNorm, partial rotary,
/// grouped-query heads.
#[derive(Module, Debug)]
pub struct PhiAttention<B: Backend> {
    /// Queries.
    pub q_proj: PhiLinear<B>,
    /// Keys.
    pub k_proj: PhiLinear<B>,
    /// Values.
    pub v_proj: PhiLinear<B>,
    /// The output projection.
    pub dense: PhiLinear<B>,
    /// One LayerNorm over `head_dim`, shared by all heads (only with `qk_layernorm`).
    pub q_layernorm: Option<LayerNorm<B>>,
    /// The keys' counterpart of `q_layernorm`.
    pub k_layernorm: Option<LayerNorm<B>>,
    /// Dropout on the attention weights (training only).
    pub attention_dropout: Dropout,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than `num_heads` with grouped-query attention).
    pub num_kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl<B: Backend> PhiAttention<B> {
    /// `x: [batch, seq, hidden]` → `[batch, seq, hidden]`. With a cache, the new keys and values
    /// are stored at slots `positions.start..` and attention covers every slot so far.
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        layer: usize,
        pass: &Pass<'_, B>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, self.head_dim]);
        let q = pass.project(&self.q_proj, layer, Projection::Q, x.clone());
        let k = pass.project(&self.k_proj, layer, Projection::K, x.clone());
        let v = pass.project(&self.v_proj, layer, Projection::V, x);
        let (mut q, mut k) = (split(q, self.num_heads), split(k, self.num_kv_heads));
        if let (Some(q_norm), Some(k_norm)) = (&self.q_layernorm, &self.k_layernorm) {
            q = q_norm.forward(q);
            k = k_norm.forward(k);
        }
        // Heads first from here, `[batch, heads, seq, head_dim]`, as attention and the cache
        // (which holds keys after rotary) take them.
        let heads = ops::swap_heads_and_positions;
        let angles = &pass.positions.angles;
        let q = ops::rotary(heads(q), pass.rotary, angles);
        let k = ops::rotary(heads(k), pass.rotary, angles);
        let v = heads(split(v, self.num_kv_heads));
        let (k, v) = match cache {
            Some(cache) => cache.append(pass.positions.start, pass.positions.keys, k, v),
            None => (k, v),
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let mask = pass.positions.mask.clone();
        let out = ops::attention(q, k, v, mask, &self.attention_dropout, scale, pass.matmul);
        pass.project(&self.dense, layer, Projection::Dense, out)
    }
}

/// The feed-forward half: `fc2(gelu_new(fc1(x)))`.
#[derive(Module, Debug)]
pub struct PhiMlp<B: Backend> {
    /// `hidden → intermediate`.
    pub fc1: PhiLinear<B>,
    /// `intermediate → hidden`.
    pub fc2: PhiLinear<B>,
}

impl<B: Backend> PhiMlp<B> {
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        layer: usize,
        pass: &Pass<'_, B>,
    ) -> Tensor<B, 3> {
        let up = pass.project(&self.fc1, layer, Projection::Fc1, x);
        pass.project(&self.fc2, layer, Projection::Fc2, ops::gelu_new(up))
    }
}
