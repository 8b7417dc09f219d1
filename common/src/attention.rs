//! Phi self-attention: q/k/v projections with bias, optional per-head q/k LayerNorm, partial
//! rotary, grouped-query heads, and scores and softmax in f32 (PHI_SPEC §1.3, §5).

use burn::nn::{Dropout, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::softmax;

use crate::cache::LayerCache;
use crate::lora::{LayerAdapters, project};
use crate::positions::Positions;
use crate::rotary::PartialRotary;

#[derive(Module, Debug)]
pub struct PhiAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub dense: Linear<B>,
    /// One LayerNorm over `head_dim`, shared by all heads (only with `qk_layernorm`).
    pub q_layernorm: Option<LayerNorm<B>>,
    pub k_layernorm: Option<LayerNorm<B>>,
    pub attention_dropout: Dropout,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> PhiAttention<B> {
    /// `x: [batch, seq, hidden]` at `positions` → `[batch, seq, hidden]`. With a cache, the new
    /// keys and values are stored at slots `positions.start..` and attention covers every slot so
    /// far; without one, `positions.start` is 0. `adapters` add LoRA updates to the projections.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rotary: &PartialRotary<B>,
        positions: &Positions<B>,
        cache: Option<&mut LayerCache<B>>,
        adapters: Option<&LayerAdapters<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let cpu_fast = crate::cpu::applies(&x);
        let q = project(
            &self.q_proj,
            adapters.and_then(|a| a.q_proj.as_ref()),
            x.clone(),
        );
        let k = project(
            &self.k_proj,
            adapters.and_then(|a| a.k_proj.as_ref()),
            x.clone(),
        );
        let v = project(&self.v_proj, adapters.and_then(|a| a.v_proj.as_ref()), x);
        // `[batch, seq, heads * head_dim]` → `[batch, seq, heads, head_dim]` (a view).
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, self.head_dim]);
        let (mut q, mut k) = (split(q, self.num_heads), split(k, self.num_kv_heads));
        if let (Some(qn), Some(kn)) = (&self.q_layernorm, &self.k_layernorm) {
            // Normalises each head's channels: the same in either layout.
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let heads = |t: Tensor<B, 4>| t.swap_dims(1, 2);
        // The cache stores keys after rotary (PHI_SPEC §1.3).
        let (q, k) = if cpu_fast {
            // One pass over the projections' own layout instead of rotary's tensor ops.
            let rotate = |t: Tensor<B, 4>, n: usize| {
                let flat = t.reshape([batch, seq, n * self.head_dim]);
                split(
                    crate::cpu::rotary::apply(flat, self.head_dim, &positions.angles),
                    n,
                )
            };
            (
                heads(rotate(q, self.num_heads)),
                heads(rotate(k, self.num_kv_heads)),
            )
        } else {
            (
                rotary.apply(heads(q), &positions.angles),
                rotary.apply(heads(k), &positions.angles),
            )
        };
        let v = heads(split(v, self.num_kv_heads));
        let (k, v) = match cache {
            Some(cache) => cache.append(positions.start, k, v),
            None => (k, v),
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        // A decode step (one query) takes the generic path on the CPU too: its matmuls read the
        // cache in place, where the kernel would copy every cached key and value first.
        let out = if cpu_fast && seq > 1 {
            // Back to `[batch, seq, heads * head_dim]`: a view of the rotary kernel's output.
            let q = q.swap_dims(1, 2).reshape([batch, seq, hidden]);
            let mask = positions.mask.clone();
            crate::cpu::attention::attention(q, k, v, mask, self.num_heads, scale as f32)
        } else {
            self.scores_softmax_values(q, self.repeat_kv(k), self.repeat_kv(v), positions, scale)
                .swap_dims(1, 2)
                .reshape([batch, seq, hidden])
        };
        project(&self.dense, adapters.and_then(|a| a.dense.as_ref()), out)
    }

    /// The generic attention core, `[batch, heads, seq, dim]` queries against every cached key.
    fn scores_softmax_values(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        positions: &Positions<B>,
        scale: f64,
    ) -> Tensor<B, 4> {
        let seq = q.dims()[2];
        let keys = k.dims()[2];
        // phi-2 overflows f16 in q·kᵀ: scores, mask and softmax run in f32 on every backend.
        let value_dtype = v.dtype();
        let mut scores = q
            .cast(FloatDType::F32)
            .matmul(k.cast(FloatDType::F32).swap_dims(2, 3))
            .mul_scalar(scale);
        if let Some(mask) = &positions.mask {
            scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        } else if seq > 1 {
            // Bottom-right aligned: query i, at slot keys - seq + i, sees keys up to there.
            let offset = (keys - seq) as i64;
            let future = Tensor::<B, 2, Bool>::tril_mask([seq, keys], offset, &scores.device());
            scores = scores.mask_fill(future.reshape([1, 1, seq, keys]), f32::NEG_INFINITY);
        }
        let probs = self
            .attention_dropout
            .forward(softmax(scores, 3))
            .cast(value_dtype);
        probs.matmul(v)
    }

    /// Key/value heads serve `num_heads / num_kv_heads` consecutive query heads each.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let groups = self.num_heads / self.num_kv_heads;
        if groups == 1 {
            return x;
        }
        let [batch, kv_heads, seq, head_dim] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([batch, kv_heads, groups, seq, head_dim])
            .reshape([batch, kv_heads * groups, seq, head_dim])
    }
}
