//! `Phi<B>`: the one implementation behind Phi-1, Phi-1.5 and Phi-2 (PHI_SPEC §1).
//!
//! embedding → N parallel blocks → final LayerNorm → LM head with bias. Field names mirror the
//! Hugging Face keys (`model.layers.3.self_attn.q_proj`), so a burn record path reads like the
//! checkpoint key it came from.

use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::attention::PhiAttention;
use crate::block::PhiDecoderLayer;
use crate::cache::KvCache;
use crate::config::PhiConfig;
use crate::error::{PhiError, Result};
use crate::linear::{forward_2d, forward_rows};
use crate::lora::PhiAdapters;
use crate::mlp::PhiMlp;
use crate::params::Part;
use crate::positions::Positions;
use crate::rotary::PartialRotary;

/// The transformer body: everything but the LM head.
#[derive(Module, Debug)]
pub struct PhiModel<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub embed_dropout: Dropout,
    pub layers: Vec<PhiDecoderLayer<B>>,
    pub final_layernorm: LayerNorm<B>,
    pub rotary: PartialRotary<B>,
}

/// A Phi causal language model.
#[derive(Module, Debug)]
pub struct Phi<B: Backend> {
    pub model: PhiModel<B>,
    /// Untied from the embedding, with bias.
    pub lm_head: Linear<B>,
    #[module(skip)]
    config: PhiConfig,
}

/// Where a model's parameters come from while it is built: fresh initialisation or a checkpoint.
pub trait ParamSource<B: Backend> {
    fn device(&self) -> B::Device;
    /// A linear layer `d_in → d_out` with bias.
    fn linear(&mut self, part: Part, d_in: usize, d_out: usize) -> Result<Linear<B>>;
    fn layer_norm(&mut self, part: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>>;
    fn embedding(&mut self, part: Part, vocab: usize, dim: usize) -> Result<Embedding<B>>;
}

impl<B: Backend> Phi<B> {
    /// A freshly initialised model, as transformers initialises one: normal(0, 0.02) weights,
    /// zero biases, unit LayerNorms.
    pub fn new(config: &PhiConfig, device: &B::Device) -> Self {
        let mut source = crate::init::FreshInit::new(device.clone(), 0.02);
        Self::build(config, &mut source).expect("fresh initialisation cannot fail")
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
                    config.max_position_embeddings,
                    config.rope_theta,
                    &device,
                ),
            },
            lm_head: source.linear(Part::Head, d, config.vocab_size)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &PhiConfig {
        &self.config
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

    /// Logits for every position, `[batch, seq] → [batch, seq, vocab]`, always in f32.
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        let hidden = self.forward_hidden(input_ids)?;
        Ok(forward_rows(&self.lm_head, hidden).cast(FloatDType::F32))
    }

    /// Final hidden states (after the final LayerNorm), `[batch, seq] → [batch, seq, hidden]`:
    /// what embedding-based tools such as the quality filter consume.
    pub fn forward_hidden(&self, input_ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        let [_, seq] = input_ids.dims();
        self.check_positions(0, seq)?;
        Ok(self.body(input_ids, 0, None, None))
    }

    /// `forward` with LoRA `adapters` added to the projections they target.
    pub fn forward_adapted(
        &self,
        input_ids: Tensor<B, 2, Int>,
        adapters: &PhiAdapters<B>,
    ) -> Result<Tensor<B, 3>> {
        let [_, seq] = input_ids.dims();
        self.check_positions(0, seq)?;
        if adapters.layers.len() != self.model.layers.len() {
            return Err(PhiError::Input(format!(
                "adapters for {} layers given to a model of {}",
                adapters.layers.len(),
                self.model.layers.len()
            )));
        }
        let hidden = self.body(input_ids, 0, None, Some(adapters));
        Ok(forward_rows(&self.lm_head, hidden).cast(FloatDType::F32))
    }

    /// Logits for new positions `cache.len()..` given everything the cache holds, then records
    /// them in the cache. Feeding a prompt in several pieces gives the logits of one full forward.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let hidden = self.hidden_cached(input_ids, cache)?;
        Ok(forward_rows(&self.lm_head, hidden).cast(FloatDType::F32))
    }

    /// Like `forward_cached`, but only the last position's logits, `[batch, vocab]`: what a
    /// generation step needs, without the LM head over the whole prompt.
    pub fn forward_cached_last(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>> {
        let hidden = self.hidden_cached(input_ids, cache)?;
        let [batch, seq, width] = hidden.dims();
        let last = hidden.narrow(1, seq - 1, 1).reshape([batch, width]);
        Ok(forward_2d(&self.lm_head, last).cast(FloatDType::F32))
    }

    fn hidden_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>> {
        let [batch, seq] = input_ids.dims();
        if batch != cache.batch() {
            return Err(PhiError::Input(format!(
                "{batch} sequences given to a cache made for {}",
                cache.batch()
            )));
        }
        let start = cache.len();
        if seq == 0 {
            return Err(PhiError::Input("no tokens to feed".into()));
        }
        if start + seq > cache.capacity() {
            return Err(PhiError::Input(format!(
                "{} positions requested but the cache holds {}",
                start + seq,
                cache.capacity()
            )));
        }
        self.check_positions(start, seq)?;
        let hidden = self.body(input_ids, start, Some(cache), None);
        cache.advance(seq);
        Ok(hidden)
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

    /// embedding → blocks → final LayerNorm, for columns starting at cache slot `start`.
    fn body(
        &self,
        input_ids: Tensor<B, 2, Int>,
        start: usize,
        mut cache: Option<&mut KvCache<B>>,
        adapters: Option<&PhiAdapters<B>>,
    ) -> Tensor<B, 3> {
        let body = &self.model;
        let [_, seq] = input_ids.dims();
        let device = input_ids.device();
        let pads = cache.as_deref().map(KvCache::padding).unwrap_or(&[]);
        let positions = Positions::new(&body.rotary, start, seq, pads, &device);
        let mut h = body
            .embed_dropout
            .forward(body.embed_tokens.forward(input_ids));
        for (i, layer) in body.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let layer_adapters = adapters.map(|a| &a.layers[i]);
            h = layer.forward(h, &body.rotary, &positions, layer_cache, layer_adapters);
        }
        body.final_layernorm.forward(h)
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
