//! The model's parameter inventory in Hugging Face terms: which tensors a config implies, their
//! V3 names and `[out, in]` shapes. Loading, checking and export all walk this one list, so they
//! cannot disagree about what a Phi checkpoint holds; `ParamSource` is how a model being built
//! asks for them.

use burn::nn::LayerNorm;
use burn::prelude::*;

use super::adapters::Projection;
use super::embedding::TokenEmbedding;
use super::linear::PhiLinear;
use crate::config::PhiConfig;
use crate::error::Result;

/// Where a model's parameters come from while it is built: fresh initialisation or a checkpoint.
pub trait ParamSource<B: Backend> {
    /// The device the parameters are made on.
    fn device(&self) -> B::Device;
    /// A linear layer `d_in → d_out` with bias.
    fn linear(&mut self, part: Part, d_in: usize, d_out: usize) -> Result<PhiLinear<B>>;
    /// A LayerNorm over `dim` channels.
    fn layer_norm(&mut self, part: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>>;
    /// The token embedding, `[vocab, dim]`.
    fn embedding(&mut self, part: Part, vocab: usize, dim: usize) -> Result<TokenEmbedding<B>>;
}

/// One module of the model that owns parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The token embeddings.
    Embed,
    /// Block n's LayerNorm.
    InputNorm(usize),
    /// Block n's query projection.
    Q(usize),
    /// Block n's key projection.
    K(usize),
    /// Block n's value projection.
    V(usize),
    /// Block n's attention output projection.
    Dense(usize),
    /// Block n's query LayerNorm (configs with `qk_layernorm`).
    QNorm(usize),
    /// Block n's key LayerNorm (configs with `qk_layernorm`).
    KNorm(usize),
    /// Block n's first MLP projection.
    Fc1(usize),
    /// Block n's second MLP projection.
    Fc2(usize),
    /// The final LayerNorm.
    FinalNorm,
    /// The language-model head.
    Head,
}

impl Part {
    /// The block and projection of a linear layer; `None` for every other part.
    pub fn projection(self) -> Option<(usize, Projection)> {
        match self {
            Part::Q(i) => Some((i, Projection::Q)),
            Part::K(i) => Some((i, Projection::K)),
            Part::V(i) => Some((i, Projection::V)),
            Part::Dense(i) => Some((i, Projection::Dense)),
            Part::Fc1(i) => Some((i, Projection::Fc1)),
            Part::Fc2(i) => Some((i, Projection::Fc2)),
            _ => None,
        }
    }
}

/// Which tensor of a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// The weight (of a projection, a LayerNorm or the embeddings).
    Weight,
    /// The bias.
    Bias,
}

impl Leaf {
    /// The key suffix transformers uses (`weight`, `bias`).
    pub fn suffix(self) -> &'static str {
        match self {
            Leaf::Weight => "weight",
            Leaf::Bias => "bias",
        }
    }
}

/// One parameter tensor as transformers stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct HfParam {
    /// Which module.
    pub part: Part,
    /// Which of its tensors.
    pub leaf: Leaf,
    /// PyTorch layout: `[out, in]` for linear weights.
    pub shape: Vec<usize>,
}

impl HfParam {
    /// The key in transformers' current (V3) layout.
    pub fn name(&self) -> String {
        format!("{}.{}", self.part.v3_module(), self.leaf.suffix())
    }
}

impl Part {
    /// The module path in the V3 (current transformers) layout.
    pub fn v3_module(self) -> String {
        match self {
            Part::Embed => "model.embed_tokens".into(),
            Part::InputNorm(i) => format!("model.layers.{i}.input_layernorm"),
            Part::Q(i) => format!("model.layers.{i}.self_attn.q_proj"),
            Part::K(i) => format!("model.layers.{i}.self_attn.k_proj"),
            Part::V(i) => format!("model.layers.{i}.self_attn.v_proj"),
            Part::Dense(i) => format!("model.layers.{i}.self_attn.dense"),
            Part::QNorm(i) => format!("model.layers.{i}.self_attn.q_layernorm"),
            Part::KNorm(i) => format!("model.layers.{i}.self_attn.k_layernorm"),
            Part::Fc1(i) => format!("model.layers.{i}.mlp.fc1"),
            Part::Fc2(i) => format!("model.layers.{i}.mlp.fc2"),
            Part::FinalNorm => "model.final_layernorm".into(),
            Part::Head => "lm_head".into(),
        }
    }
}

/// Every parameter the config implies, in the order transformers' `state_dict` lists them.
pub fn hf_params(config: &PhiConfig) -> Vec<HfParam> {
    let (d, f, v, kv, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
        config.kv_dim(),
        config.head_dim(),
    );
    let mut params = Vec::new();
    let mut push = |part: Part, weight: Vec<usize>, bias: Option<usize>| {
        params.push(HfParam {
            part,
            leaf: Leaf::Weight,
            shape: weight,
        });
        if let Some(b) = bias {
            params.push(HfParam {
                part,
                leaf: Leaf::Bias,
                shape: vec![b],
            });
        }
    };
    push(Part::Embed, vec![v, d], None);
    for i in 0..config.num_hidden_layers {
        push(Part::Q(i), vec![d, d], Some(d));
        push(Part::K(i), vec![kv, d], Some(kv));
        push(Part::V(i), vec![kv, d], Some(kv));
        push(Part::Dense(i), vec![d, d], Some(d));
        if config.qk_layernorm {
            push(Part::QNorm(i), vec![hd], Some(hd));
            push(Part::KNorm(i), vec![hd], Some(hd));
        }
        push(Part::Fc1(i), vec![f, d], Some(f));
        push(Part::Fc2(i), vec![d, f], Some(d));
        push(Part::InputNorm(i), vec![d], Some(d));
    }
    push(Part::FinalNorm, vec![d], Some(d));
    push(Part::Head, vec![v, d], Some(v));
    params
}
