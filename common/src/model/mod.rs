//! `Phi<B>`: the one implementation behind Phi-1, Phi-1.5 and Phi-2.
//!
//! embedding → N parallel blocks (`block`) → final LayerNorm → LM head with bias. Field names
//! mirror the Hugging Face keys (`model.layers.3.self_attn.q_proj`), so a burn record path reads
//! like the checkpoint key it came from. Every forward pass goes through `Phi::hidden_states`:
//! token ids or embeddings in, an optional KV cache, optional adapters.

mod adapters;
mod block;
mod cache;
mod embedding;
mod init;
mod linear;
pub(crate) mod ops;
pub mod packed;
mod params;
mod positions;
#[doc(hidden)]
pub mod profile;
mod rotary;

use burn::nn::{Dropout, DropoutConfig, LayerNorm};
use burn::prelude::*;
use burn::tensor::FloatDType;

pub use adapters::{Adapters, Projection};
pub use block::{PhiAttention, PhiDecoderLayer, PhiMlp};
pub use cache::KvCache;
pub use embedding::TokenEmbedding;
pub(crate) use init::FreshInit;
pub use linear::PhiLinear;
pub use packed::{PackedWeight, WeightFormat};
pub(crate) use params::{HfParam, hf_params};
pub use params::{Leaf, ParamSource, Part};
pub use rotary::PartialRotary;

use crate::config::PhiConfig;
use crate::error::{PhiError, Result};
use block::Pass;
use positions::Positions;

/// The transformer body: everything but the LM head.
#[derive(Module, Debug)]
pub struct PhiModel<B: Backend> {
    /// Token embeddings, `[vocab, hidden]`.
    pub embed_tokens: TokenEmbedding<B>,
    /// Dropout on the embeddings (training only).
    pub embed_dropout: Dropout,
    /// The decoder blocks.
    pub layers: Vec<PhiDecoderLayer<B>>,
    /// LayerNorm before the language-model head.
    pub final_layernorm: LayerNorm<B>,
    /// Rotary position tables shared by every block.
    pub rotary: PartialRotary<B>,
}

/// A Phi causal language model.
#[derive(Module, Debug)]
pub struct Phi<B: Backend> {
    /// The transformer below the head.
    pub model: PhiModel<B>,
    /// Untied from the embedding, with bias.
    pub lm_head: PhiLinear<B>,
    #[module(skip)]
    config: PhiConfig,
    /// The type matrix products run in under mixed precision; `None`: the parameters' type.
    #[module(skip)]
    matmul_dtype: Option<FloatDType>,
}

/// What a forward pass starts from: token ids, or embeddings (which skip the embedding lookup).
pub enum Input<B: Backend> {
    /// `[batch, seq]` token ids.
    Ids(Tensor<B, 2, Int>),
    /// `[batch, seq, hidden]` input embeddings.
    Embeddings(Tensor<B, 3>),
}

impl<B: Backend> From<Tensor<B, 2, Int>> for Input<B> {
    fn from(ids: Tensor<B, 2, Int>) -> Self {
        Input::Ids(ids)
    }
}

impl<B: Backend> From<Tensor<B, 3>> for Input<B> {
    fn from(embeddings: Tensor<B, 3>) -> Self {
        Input::Embeddings(embeddings)
    }
}

impl<B: Backend> Input<B> {
    fn dims(&self) -> [usize; 2] {
        match self {
            Input::Ids(ids) => ids.dims(),
            Input::Embeddings(e) => {
                let [batch, seq, _] = e.dims();
                [batch, seq]
            }
        }
    }
}

/// The optional parts of a forward pass: a KV cache to read and extend, adapters to apply.
pub struct Options<'a, B: Backend> {
    /// Earlier positions' keys and values; the new ones are appended and the cache advanced.
    pub cache: Option<&'a mut KvCache<B>>,
    /// Terms added to the projections (unmerged LoRA).
    pub adapters: Option<&'a dyn Adapters<B>>,
}

impl<B: Backend> Default for Options<'_, B> {
    fn default() -> Self {
        Self {
            cache: None,
            adapters: None,
        }
    }
}

impl<'a, B: Backend> Options<'a, B> {
    /// A pass that reads and extends `cache`.
    pub fn cached(cache: &'a mut KvCache<B>) -> Self {
        Self {
            cache: Some(cache),
            adapters: None,
        }
    }

    /// The same pass with `adapters` applied (`None`: none).
    pub fn with_adapters(mut self, adapters: Option<&'a dyn Adapters<B>>) -> Self {
        self.adapters = adapters;
        self
    }
}

impl<B: Backend> Phi<B> {
    /// A freshly initialised model, as transformers initialises one: normal(0, 0.02) weights,
    /// zero biases, unit LayerNorms.
    pub fn new(config: &PhiConfig, device: &B::Device) -> Self {
        let mut source = FreshInit::new(device.clone(), 0.02, WeightFormat::F32);
        Self::build(config, &mut source).expect("fresh initialisation cannot fail")
    }

    /// `new` with every linear layer's weight in `format` (packed formats: the CPU backend;
    /// each layer is packed as it is drawn).
    pub fn new_as(config: &PhiConfig, device: &B::Device, format: WeightFormat) -> Result<Self> {
        let mut source = FreshInit::new(device.clone(), 0.02, format);
        Self::build(config, &mut source)
    }

    /// The same model with every linear layer's weight (the projections and the LM head) in
    /// `format`, for inference: f16, bf16, `Q8_0` or `Q4_0` packed for the CPU backend's
    /// kernels, or f32 again. Embeddings and norms keep the backend's float type.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Result<Self> {
        for layer in &mut self.model.layers {
            for projection in Projection::ALL {
                let linear = layer.projection_mut(projection);
                *linear = linear.clone().into_format(format)?;
            }
        }
        self.lm_head = self.lm_head.into_format(format)?;
        let embedding = format.embedding_format();
        self.model.embed_tokens = self.model.embed_tokens.into_format(embedding)?;
        Ok(self)
    }

    /// How the linear layers' weights are stored (the LM head's format).
    pub fn weight_format(&self) -> WeightFormat {
        self.lm_head.format()
    }

    /// Builds the model, asking `source` for every parameter in turn.
    pub fn build(config: &PhiConfig, source: &mut impl ParamSource<B>) -> Result<Self> {
        let (d, f, hd, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim(),
            config.kv_dim(),
        );
        let eps = config.layer_norm_eps;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let (q_layernorm, k_layernorm) = if config.qk_layernorm {
                (
                    Some(source.layer_norm(Part::QNorm(i), hd, eps)?),
                    Some(source.layer_norm(Part::KNorm(i), hd, eps)?),
                )
            } else {
                (None, None)
            };
            layers.push(PhiDecoderLayer {
                input_layernorm: source.layer_norm(Part::InputNorm(i), d, eps)?,
                self_attn: PhiAttention {
                    q_proj: source.linear(Part::Q(i), d, d)?,
                    k_proj: source.linear(Part::K(i), d, kv)?,
                    v_proj: source.linear(Part::V(i), d, kv)?,
                    dense: source.linear(Part::Dense(i), d, d)?,
                    q_layernorm,
                    k_layernorm,
                    attention_dropout: DropoutConfig::new(config.attention_dropout).init(),
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: hd,
                },
                mlp: PhiMlp {
                    fc1: source.linear(Part::Fc1(i), d, f)?,
                    fc2: source.linear(Part::Fc2(i), f, d)?,
                },
                resid_dropout: DropoutConfig::new(config.resid_pdrop).init(),
            });
        }
        let device = source.device();
        Ok(Phi {
            model: PhiModel {
                embed_tokens: source.embedding(Part::Embed, config.vocab_size, d)?,
                embed_dropout: DropoutConfig::new(config.embd_pdrop).init(),
                layers,
                final_layernorm: source.layer_norm(Part::FinalNorm, d, eps)?,
                rotary: PartialRotary::new(
                    config.rotary_dim(),
                    config.head_dim(),
                    config.max_position_embeddings,
                    config.rope_theta,
                    &device,
                ),
            },
            lm_head: source.linear(Part::Head, d, config.vocab_size)?,
            config: config.clone(),
            matmul_dtype: None,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// The same model computing its matrix products in `dtype` (mixed precision, e.g. bf16 for
    /// training on GPUs): the parameters, their gradients and the optimizer keep their own type
    /// (f32 master weights), as do norms, softmax, the residual stream and the loss; scores
    /// `q·kᵀ` stay in f32 as always. `None`: products in the parameters' type.
    pub fn with_matmul_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.matmul_dtype = dtype;
        self
    }

    /// The type of matrix products under mixed precision (`None`: the parameters').
    pub fn matmul_dtype(&self) -> Option<FloatDType> {
        self.matmul_dtype
    }

    /// The same weights with other dropout rates (a training recipe's, or none for exact runs);
    /// the config records them, so an export says what the model was trained with.
    pub fn with_dropout(mut self, attention: f64, resid: f64, embd: f64) -> Self {
        self.config.attention_dropout = attention;
        self.config.resid_pdrop = resid;
        self.config.embd_pdrop = embd;
        self.model.embed_dropout = DropoutConfig::new(embd).init();
        for layer in &mut self.model.layers {
            layer.self_attn.attention_dropout = DropoutConfig::new(attention).init();
            layer.resid_dropout = DropoutConfig::new(resid).init();
        }
        self
    }

    /// The forward pass every other one is: `input` (ids or embeddings) → embedding → blocks →
    /// final LayerNorm, `[batch, seq, hidden]`. With a cache, the input's positions follow those
    /// the cache holds, attention covers them all, and the cache records the new ones; adapters
    /// add their terms to the projections they target.
    pub fn hidden_states(
        &self,
        input: impl Into<Input<B>>,
        options: Options<'_, B>,
    ) -> Result<Tensor<B, 3>> {
        let input = input.into();
        let [batch, seq] = input.dims();
        if seq == 0 {
            return Err(PhiError::Input("no tokens to feed".into()));
        }
        let Options {
            mut cache,
            adapters,
        } = options;
        let start = cache.as_deref().map_or(0, KvCache::len);
        if let Some(cache) = cache.as_deref() {
            if batch != cache.batch() {
                return Err(PhiError::Input(format!(
                    "{batch} sequences given to a cache made for {}",
                    cache.batch()
                )));
            }
            if start + seq > cache.capacity() {
                return Err(PhiError::Input(format!(
                    "{} positions requested but the cache holds {}",
                    start + seq,
                    cache.capacity()
                )));
            }
        }
        self.check_positions(start, seq)?;
        if let Some(adapters) = adapters
            && adapters.num_layers() != self.model.layers.len()
        {
            return Err(PhiError::Input(format!(
                "adapters for {} layers given to a model of {}",
                adapters.num_layers(),
                self.model.layers.len()
            )));
        }
        let body = &self.model;
        let embeddings = match input {
            Input::Ids(ids) => body.embed_tokens.forward(ids),
            Input::Embeddings(embeddings) => embeddings,
        };
        let device = embeddings.device();
        let pads = cache.as_deref().map(KvCache::padding).unwrap_or(&[]);
        let fixed_keys = cache
            .as_deref()
            .and_then(|c| ops::attended_slots::<B>(start + seq, c.slots()));
        let positions = Positions::new(&body.rotary, start, seq, pads, fixed_keys, &device);
        let pass = Pass {
            rotary: &body.rotary,
            positions: &positions,
            adapters,
            matmul: self.matmul_dtype,
        };
        let mut h = body.embed_dropout.forward(embeddings);
        for (i, layer) in body.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            h = layer.forward(h, i, &pass, layer_cache);
        }
        if let Some(cache) = cache {
            cache.advance(seq);
        }
        Ok(body.final_layernorm.forward(h))
    }

    /// Logits for every position, `[batch, seq, vocab]`, in f32: `hidden_states` and the LM head.
    pub fn logits(
        &self,
        input: impl Into<Input<B>>,
        options: Options<'_, B>,
    ) -> Result<Tensor<B, 3>> {
        let hidden = self.hidden_states(input, options)?;
        Ok(self
            .lm_head
            .forward_in(hidden, self.matmul_dtype)
            .cast(FloatDType::F32))
    }

    /// Only the last position's logits, `[batch, vocab]`: what a generation step needs, without
    /// the LM head over the whole prompt.
    pub fn last_logits(
        &self,
        input: impl Into<Input<B>>,
        options: Options<'_, B>,
    ) -> Result<Tensor<B, 2>> {
        let hidden = self.hidden_states(input, options)?;
        let [batch, seq, width] = hidden.dims();
        let last = hidden.narrow(1, seq - 1, 1).reshape([batch, width]);
        Ok(self
            .lm_head
            .forward_2d_in(last, self.matmul_dtype)
            .cast(FloatDType::F32))
    }

    /// Logits for every position, `[batch, seq] → [batch, seq, vocab]`, always in f32.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        self.logits(input_ids, Options::default())
    }

    /// Final hidden states (after the final LayerNorm), `[batch, seq] → [batch, seq, hidden]`:
    /// what embedding-based tools such as the quality filter consume.
    pub fn forward_hidden(&self, input_ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        self.hidden_states(input_ids, Options::default())
    }

    /// `forward` with `adapters` added to the projections they target.
    pub fn forward_adapted(
        &self,
        input_ids: Tensor<B, 2, Int>,
        adapters: &dyn Adapters<B>,
    ) -> Result<Tensor<B, 3>> {
        self.logits(input_ids, Options::default().with_adapters(Some(adapters)))
    }

    /// Logits for new positions `cache.len()..` given everything the cache holds, then records
    /// them in the cache. Feeding a prompt in several pieces gives the logits of one full forward.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        self.logits(input_ids, Options::cached(cache))
    }

    /// Like `forward_cached`, but only the last position's logits, `[batch, vocab]`.
    pub fn forward_cached_last(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>> {
        self.last_logits(input_ids, Options::cached(cache))
    }

    /// This model with `adapters` applied unmerged, for generation and evaluation.
    pub fn with_adapters<'a>(&'a self, adapters: &'a dyn Adapters<B>) -> AdaptedPhi<'a, B> {
        AdaptedPhi {
            phi: self,
            adapters,
        }
    }

    /// A cache for `batch` sequences of up to `capacity` positions (at most the context length).
    pub fn new_cache(&self, batch: usize, capacity: usize, device: &B::Device) -> KvCache<B> {
        self.new_padded_cache(&vec![0; batch], capacity, device)
    }

    /// A cache for left-padded rows: row `r` starts with `pads[r]` padding slots, which no real
    /// token attends to and which do not count as positions (each row runs as if alone).
    pub fn new_padded_cache(
        &self,
        pads: &[usize],
        capacity: usize,
        device: &B::Device,
    ) -> KvCache<B> {
        let capacity = capacity.min(self.config.max_position_embeddings);
        KvCache::new(&self.config, pads.to_vec(), capacity, device)
    }

    /// Logits for host-side token rows, checking what a tensor cannot: every row has the same
    /// length and every id is inside the vocabulary.
    pub fn forward_ids(&self, rows: &[Vec<u32>], device: &B::Device) -> Result<Tensor<B, 3>> {
        self.forward(self.ids_tensor(rows, device)?)
    }

    /// Turns token rows into the `[batch, seq]` Int tensor the forward passes take.
    pub fn ids_tensor(&self, rows: &[Vec<u32>], device: &B::Device) -> Result<Tensor<B, 2, Int>> {
        let seq = rows.first().map(Vec::len).unwrap_or(0);
        if seq == 0 {
            return Err(PhiError::Input(
                "no tokens: give at least one row of at least one id".into(),
            ));
        }
        let mut flat = Vec::with_capacity(rows.len() * seq);
        for (r, row) in rows.iter().enumerate() {
            if row.len() != seq {
                return Err(PhiError::Input(format!(
                    "row {r} has {} ids but row 0 has {seq}: rows must have equal lengths",
                    row.len()
                )));
            }
            for (c, &id) in row.iter().enumerate() {
                if id as usize >= self.config.vocab_size {
                    return Err(PhiError::Input(format!(
                        "row {r}, position {c}: id {id} is outside the vocabulary (size {})",
                        self.config.vocab_size
                    )));
                }
                flat.push(id as i64);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [rows.len(), seq]),
            device,
        ))
    }

    fn check_positions(&self, start: usize, seq: usize) -> Result<()> {
        let max = self.model.rotary.max_positions();
        if start + seq > max {
            return Err(PhiError::Input(format!(
                "{} positions requested but the model's context is {max} (max_position_embeddings)",
                start + seq
            )));
        }
        Ok(())
    }
}

/// A model that generation and evaluation can run: a `Phi`, with or without adapters.
pub trait LanguageModel<B: Backend> {
    /// The model.
    fn phi(&self) -> &Phi<B>;
    /// Adapters applied unmerged in every forward pass, if any.
    fn adapters(&self) -> Option<&dyn Adapters<B>> {
        None
    }
}

impl<B: Backend> LanguageModel<B> for Phi<B> {
    fn phi(&self) -> &Phi<B> {
        self
    }
}

/// A `Phi` with adapters applied unmerged (`Phi::with_adapters`).
pub struct AdaptedPhi<'a, B: Backend> {
    phi: &'a Phi<B>,
    adapters: &'a dyn Adapters<B>,
}

impl<B: Backend> LanguageModel<B> for AdaptedPhi<'_, B> {
    fn phi(&self) -> &Phi<B> {
        self.phi
    }

    fn adapters(&self) -> Option<&dyn Adapters<B>> {
        Some(self.adapters)
    }
}

#[cfg(all(test, feature = "flex"))]
mod cache_tests {
    use super::*;

    /// Decode steps write the cache in its own memory: its buffer never moves (burn-flex's
    /// `slice_assign` copied it whole every step, `ops::cpu::cache_write`).
    #[test]
    fn decode_steps_write_the_cache_in_place() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let config = PhiConfig {
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            max_position_embeddings: 64,
            ..PhiConfig::default()
        };
        let phi = Phi::<B>::new(&config, &device);
        let mut cache = phi.new_cache(1, 32, &device);
        let buffer = |cache: &KvCache<B>| {
            let keys = cache.layers[1].keys();
            let keys = ops::cpu::flex(keys).expect("the CPU backend");
            keys.storage::<f32>().as_ptr() as usize
        };
        let ids = phi.ids_tensor(&[vec![1, 2, 3]], &device).unwrap();
        let _ = phi.forward_cached(ids, &mut cache).unwrap();
        let first = buffer(&cache);
        for _ in 0..3 {
            let ids = phi.ids_tensor(&[vec![4]], &device).unwrap();
            let _ = phi.forward_cached(ids, &mut cache).unwrap();
            assert_eq!(buffer(&cache), first, "the cache was copied");
        }
    }
}
