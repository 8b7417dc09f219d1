//! `PhiConfig`: the shape of a Phi model, read from any of the config.json dialects on the hub.
//!
//! Three dialects exist (ARCHITECTURE.md §2): the hub's flat transformers-4 file (`partial_rotary_factor`
//! and `rope_theta` at top level), transformers 5's nested `rope_parameters`, and the old
//! microsoft `phi-msft` / `mixformer-sequential` names (`n_embd`, `n_layer`, `rotary_dim`, ...).
//! All three become one `PhiConfig`, which is written back in the flat hub dialect on export
//! because both transformers 4 and 5 read it.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{PhiError, Result};

// The largest size of each kind phi-zoo accepts. Published Phis are far below (phi-2: 32 layers,
// hidden 2560, intermediate 10240, vocab 51200, 2048 positions); the limits exist so that a typo
// or a hostile config.json is refused by name before anything is sized from it.
/// Most vocabulary entries a config may declare.
pub const MAX_VOCAB: usize = 1 << 22;
/// Widest hidden size (and most attention heads).
pub const MAX_HIDDEN: usize = 1 << 16;
/// Widest MLP.
pub const MAX_INTERMEDIATE: usize = 1 << 18;
/// Most decoder layers.
pub const MAX_LAYERS: usize = 1 << 10;
/// Longest context.
pub const MAX_POSITIONS: usize = 1 << 20;
/// Most entries in each rotary table (positions × rotary channels, 128 MiB of f32).
pub const MAX_ROTARY_TABLE: usize = 1 << 25;
/// Largest config.json read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Everything that decides a Phi model's parameters and forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct PhiConfig {
    /// Embedding rows and logits width (51200 for the published models: the tokenizer has 50295).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads (`hidden_size / num_attention_heads` is the head size).
    pub num_attention_heads: usize,
    /// Key/value heads; fewer than `num_attention_heads` means grouped-query attention.
    pub num_key_value_heads: usize,
    /// Share of each head's channels that rotate (ARCHITECTURE.md §1).
    pub partial_rotary_factor: f64,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Longest sequence the model is built for (the rotary table's length).
    pub max_position_embeddings: usize,
    /// LayerNorm's ε.
    pub layer_norm_eps: f64,
    /// LayerNorm over q and k per head before rotary (off in every published checkpoint).
    pub qk_layernorm: bool,
    /// Dropout on each block's attention and MLP outputs (training only).
    pub resid_pdrop: f64,
    /// Dropout on the token embeddings (training only).
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities (training only).
    pub attention_dropout: f64,
    /// `None` when the config says null: take special ids from the tokenizer then (ARCHITECTURE.md §2).
    pub bos_token_id: Option<u32>,
    /// The end-of-sequence token, where the config names one.
    pub eos_token_id: Option<u32>,
}

/// Which config.json dialect a file was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigDialect {
    /// transformers 4's `PhiConfig` as on the hub today.
    HubFlat,
    /// transformers 5's `PhiConfig` with `rope_parameters`.
    Nested,
    /// The old microsoft `phi-msft` or `mixformer-sequential` remote-code configs.
    Microsoft,
}

/// transformers' `PhiConfig` defaults, which are the 1.3B Phi-1 / Phi-1.5 shape; config.json
/// fields that are absent take these values. The one departure: special token ids default to
/// unset rather than transformers' 1 and 2, which are not Phi's (ARCHITECTURE.md §2).
impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            vocab_size: 51200,
            hidden_size: 2048,
            intermediate_size: 8192,
            num_hidden_layers: 24,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            partial_rotary_factor: 0.5,
            rope_theta: 10000.0,
            max_position_embeddings: 2048,
            layer_norm_eps: 1e-5,
            qk_layernorm: false,
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attention_dropout: 0.0,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

impl PhiConfig {
    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Rotating channels per head: `int(head_dim * partial_rotary_factor)`, as transformers computes it.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }

    /// Width of the k and v projections.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// Parameters the model holds, counted from the shapes.
    pub fn num_parameters(&self) -> usize {
        let (d, f, v, kv) = (
            self.hidden_size,
            self.intermediate_size,
            self.vocab_size,
            self.kv_dim(),
        );
        let attention = (d * d + d) * 2 + (d * kv + kv) * 2;
        let qk_norm = if self.qk_layernorm {
            4 * self.head_dim()
        } else {
            0
        };
        let block = 2 * d + attention + qk_norm + (d * f + f) + (f * d + d);
        v * d + self.num_hidden_layers * block + 2 * d + (d * v + v)
    }

    /// Model FLOPs of one training token (forward and backward) at context `seq_len`: six per
    /// weight that multiplies (every parameter but the embedding table) plus the attention
    /// products, `6·N + 12·layers·hidden·seq_len` (the PaLM paper's MFU convention).
    pub fn training_flops_per_token(&self, seq_len: usize) -> f64 {
        let matmul_weights = self.num_parameters() - self.vocab_size * self.hidden_size;
        6.0 * matmul_weights as f64
            + 12.0 * (self.num_hidden_layers * self.hidden_size * seq_len) as f64
    }

    /// Reads a config.json file in any dialect, then validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config = Self::parse_file(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Reads a config.json file in any dialect without validating the numbers: for a loader that
    /// first compares them with the weights beside it, so that a wrong size is reported against
    /// what the weights hold. Call [`PhiConfig::validate`] before building anything from it.
    pub fn parse_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::metadata(path)
            .map_err(|e| PhiError::io(path, e))?
            .len();
        if bytes > MAX_CONFIG_BYTES {
            return Err(PhiError::Config {
                origin: path.display().to_string(),
                field: "(file)".into(),
                message: format!(
                    "{bytes} bytes: a config.json is a few hundred (limit {MAX_CONFIG_BYTES})"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| PhiError::io(path, e))?;
        let origin = path.display().to_string();
        Self::parse_json(&parse_json_text(&text, &origin)?, &origin)
    }

    /// Parses config.json text in any dialect, then validates it. `origin` names the source in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        Self::from_json(&parse_json_text(text, origin)?, origin)
    }

    /// Reads a parsed config.json object in any dialect, then validates it.
    pub fn from_json(value: &Value, origin: &str) -> Result<Self> {
        let config = Self::parse_json(value, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads a parsed config.json object in any dialect, unvalidated.
    fn parse_json(value: &Value, origin: &str) -> Result<Self> {
        let fields = Fields::new(value, origin)?;
        match Self::dialect_of(value) {
            ConfigDialect::Microsoft => Self::from_microsoft(&fields),
            _ => Self::from_transformers(&fields),
        }
    }

    /// Tells the dialect from the field names (and `model_type` where present).
    pub fn dialect_of(value: &Value) -> ConfigDialect {
        let model_type = value.get("model_type").and_then(Value::as_str);
        if value.get("n_embd").is_some()
            || matches!(model_type, Some("phi-msft" | "mixformer-sequential"))
        {
            ConfigDialect::Microsoft
        } else if value.get("rope_parameters").is_some() {
            ConfigDialect::Nested
        } else {
            ConfigDialect::HubFlat
        }
    }

    fn from_transformers(f: &Fields) -> Result<Self> {
        let defaults = PhiConfig::default();
        let hidden_size = f.required_usize("hidden_size")?;
        let num_attention_heads = f.required_usize("num_attention_heads")?;
        let mut partial_rotary_factor =
            f.f64_or("partial_rotary_factor", defaults.partial_rotary_factor)?;
        let mut rope_theta = f.f64_or("rope_theta", defaults.rope_theta)?;
        if let Some(scaling) = f.object("rope_scaling")? {
            f.check_rope_type(&scaling, "rope_scaling")?;
        }
        if let Some(rope) = f.object("rope_parameters")? {
            f.check_rope_type(&rope, "rope_parameters")?;
            let nested = Fields {
                map: &rope,
                origin: f.origin,
                prefix: "rope_parameters.",
            };
            partial_rotary_factor =
                nested.f64_or("partial_rotary_factor", partial_rotary_factor)?;
            rope_theta = nested.f64_or("rope_theta", rope_theta)?;
        }
        if let Some(head_dim) = f.usize("head_dim")?
            && num_attention_heads > 0
            && head_dim.checked_mul(num_attention_heads) != Some(hidden_size)
        {
            return Err(f.error(
                "head_dim",
                format!("{head_dim} × {num_attention_heads} heads ≠ hidden_size {hidden_size}: Phi derives head_dim from hidden_size"),
            ));
        }
        f.check_activation("hidden_act")?;
        f.check_untied("tie_word_embeddings")?;
        Ok(PhiConfig {
            vocab_size: f.required_usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.required_usize("intermediate_size")?,
            num_hidden_layers: f.required_usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: f
                .usize("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            partial_rotary_factor,
            rope_theta,
            max_position_embeddings: f
                .usize("max_position_embeddings")?
                .unwrap_or(defaults.max_position_embeddings),
            layer_norm_eps: f.f64_or("layer_norm_eps", defaults.layer_norm_eps)?,
            qk_layernorm: f.bool_or("qk_layernorm", defaults.qk_layernorm)?,
            resid_pdrop: f.f64_or("resid_pdrop", defaults.resid_pdrop)?,
            embd_pdrop: f.f64_or("embd_pdrop", defaults.embd_pdrop)?,
            attention_dropout: f.f64_or("attention_dropout", defaults.attention_dropout)?,
            bos_token_id: f.token_id("bos_token_id")?,
            eos_token_id: f.token_id("eos_token_id")?,
        })
    }

    fn from_microsoft(f: &Fields) -> Result<Self> {
        let hidden_size = f.required_usize("n_embd")?;
        let num_attention_heads = f.required_usize("n_head")?;
        // The remote code pads the vocabulary up to a multiple (ARCHITECTURE.md §2).
        let vocab = f.usize("vocab_size")?.unwrap_or(50304);
        let multiple = f.usize("pad_vocab_size_multiple")?.unwrap_or(64).max(1);
        let vocab_size = vocab.div_ceil(multiple).saturating_mul(multiple);
        let rotary_dim = f.usize("rotary_dim")?.unwrap_or(32);
        if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(f.error(
                "n_head",
                format!("{num_attention_heads} does not divide n_embd {hidden_size}"),
            ));
        }
        let head_dim = hidden_size / num_attention_heads;
        if rotary_dim > head_dim {
            return Err(f.error(
                "rotary_dim",
                format!("{rotary_dim} exceeds the head dimension {head_dim}"),
            ));
        }
        f.check_activation("activation_function")?;
        f.check_untied("tie_word_embeddings")?;
        Ok(PhiConfig {
            vocab_size,
            hidden_size,
            intermediate_size: f.usize("n_inner")?.unwrap_or(hidden_size.saturating_mul(4)),
            num_hidden_layers: f.required_usize("n_layer")?,
            num_attention_heads,
            num_key_value_heads: f.usize("n_head_kv")?.unwrap_or(num_attention_heads),
            partial_rotary_factor: rotary_dim as f64 / head_dim as f64,
            rope_theta: f.f64_or("rotary_emb_base", 10000.0)?,
            max_position_embeddings: f.usize("n_positions")?.unwrap_or(2048),
            layer_norm_eps: f.f64_or("layer_norm_epsilon", 1e-5)?,
            qk_layernorm: false,
            resid_pdrop: f.f64_or("resid_pdrop", 0.0)?,
            embd_pdrop: f.f64_or("embd_pdrop", 0.0)?,
            attention_dropout: f.f64_or("attn_pdrop", 0.0)?,
            bos_token_id: f.token_id("bos_token_id")?,
            eos_token_id: f.token_id("eos_token_id")?,
        })
    }

    /// Checks that the numbers describe a model this implementation can build; names the field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |field: &str, message: String| {
            Err(PhiError::Config {
                origin: origin.to_owned(),
                field: field.to_owned(),
                message,
            })
        };
        for (field, value, limit) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE,
            ),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HIDDEN),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HIDDEN),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            if value == 0 {
                return err(field, "must be at least 1".into());
            }
            if value > limit {
                return err(
                    field,
                    format!("{value} is beyond any Phi (phi-zoo accepts up to {limit})"),
                );
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return err(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return err(
                "num_key_value_heads",
                format!(
                    "{} key/value heads do not divide {} attention heads",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if !(self.partial_rotary_factor > 0.0 && self.partial_rotary_factor <= 1.0) {
            return err(
                "partial_rotary_factor",
                format!("{} is not in (0, 1]", self.partial_rotary_factor),
            );
        }
        if !self.rotary_dim().is_multiple_of(2) || self.rotary_dim() == 0 {
            return err(
                "partial_rotary_factor",
                format!(
                    "gives {} rotary channels of a {}-wide head; rotary needs a positive even count",
                    self.rotary_dim(),
                    self.head_dim()
                ),
            );
        }
        // The rotary tables are built for every position at load: bound their size too.
        let table = self.max_position_embeddings * self.rotary_dim();
        if table > MAX_ROTARY_TABLE {
            return err(
                "max_position_embeddings",
                format!(
                    "{} positions × {} rotary channels = {table} table entries, beyond the {} \
                     phi-zoo accepts",
                    self.max_position_embeddings,
                    self.rotary_dim(),
                    MAX_ROTARY_TABLE
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return err("rope_theta", format!("{} is not positive", self.rope_theta));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return err(
                "layer_norm_eps",
                format!("{} is not positive", self.layer_norm_eps),
            );
        }
        for (field, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return err(field, format!("{p} is not a probability in [0, 1)"));
            }
        }
        Ok(())
    }

    /// The config as transformers' `PhiConfig` writes it, in the flat hub dialect that both
    /// transformers 4 and 5 read.
    pub fn to_hf_json(&self) -> Value {
        json!({
            "architectures": ["PhiForCausalLM"],
            "model_type": "phi",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_act": "gelu_new",
            "max_position_embeddings": self.max_position_embeddings,
            "partial_rotary_factor": self.partial_rotary_factor,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "layer_norm_eps": self.layer_norm_eps,
            "qk_layernorm": self.qk_layernorm,
            "resid_pdrop": self.resid_pdrop,
            "embd_pdrop": self.embd_pdrop,
            "attention_dropout": self.attention_dropout,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": false,
            "use_cache": true,
            "torch_dtype": "float32",
        })
    }
}

/// config.json text as JSON, or an error naming the file.
fn parse_json_text(text: &str, origin: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| PhiError::Config {
        origin: origin.to_owned(),
        field: "(file)".into(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Typed access to a config object's fields, with errors that name the field.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
    /// Prefix for nested objects, so errors say `rope_parameters.rope_theta`.
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, origin: &'a str) -> Result<Self> {
        match value.as_object() {
            Some(map) => Ok(Fields {
                map,
                origin,
                prefix: "",
            }),
            None => Err(PhiError::Config {
                origin: origin.to_owned(),
                field: "(file)".into(),
                message: "the top level is not a JSON object".into(),
            }),
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> PhiError {
        PhiError::Config {
            origin: self.origin.to_owned(),
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    /// The field's value, with JSON null read as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn usize(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.error(field, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn required_usize(&self, field: &str) -> Result<usize> {
        self.usize(field)?
            .ok_or_else(|| self.error(field, "is required but missing"))
    }

    fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.error(field, format!("expected a number, found {v}"))),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("expected true or false, found {v}"))),
        }
    }

    fn object(&self, field: &str) -> Result<Option<Map<String, Value>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(v) => Err(self.error(field, format!("expected an object or null, found {v}"))),
        }
    }

    /// A special token id: a number, null, or (in some configs) a list whose first entry is used.
    fn token_id(&self, field: &str) -> Result<Option<u32>> {
        let value = match self.get(field) {
            Some(Value::Array(ids)) => ids.first(),
            other => other,
        };
        match value {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(field, format!("expected a token id, found {v}"))),
        }
    }

    fn check_rope_type(&self, rope: &Map<String, Value>, field: &str) -> Result<()> {
        let rope_type = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(self.error(
                field,
                format!(
                    "rope type `{rope_type}` is not supported; Phi uses plain (`default`) rotary"
                ),
            ));
        }
        Ok(())
    }

    fn check_activation(&self, field: &str) -> Result<()> {
        match self.get(field).map(|v| v.as_str()) {
            None | Some(Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast")) => Ok(()),
            Some(other) => Err(self.error(
                field,
                format!("{other:?} is not supported; Phi uses the tanh GELU (`gelu_new`)"),
            )),
        }
    }

    fn check_untied(&self, field: &str) -> Result<()> {
        if self.bool_or(field, false)? {
            return Err(self.error(
                field,
                "tied embeddings are not supported: Phi's lm_head has its own weight and bias",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_flat() -> Value {
        json!({
            "model_type": "phi", "vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "partial_rotary_factor": 0.4, "rope_theta": 10000.0, "max_position_embeddings": 2048,
            "layer_norm_eps": 1e-5, "qk_layernorm": false, "resid_pdrop": 0.1, "embd_pdrop": 0.0,
            "attention_dropout": 0.0, "hidden_act": "gelu_new", "bos_token_id": 50256,
            "eos_token_id": 50256, "rope_scaling": null, "tie_word_embeddings": false
        })
    }

    #[test]
    fn reads_the_three_dialects_alike() {
        let flat = PhiConfig::from_json(&hub_flat(), "flat").unwrap();
        assert_eq!(flat.rotary_dim(), 32);
        assert_eq!(flat.head_dim(), 80);

        let mut nested = hub_flat();
        let map = nested.as_object_mut().unwrap();
        map.remove("partial_rotary_factor");
        map.remove("rope_theta");
        map.insert(
            "rope_parameters".into(),
            json!({"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4}),
        );
        assert_eq!(PhiConfig::dialect_of(&nested), ConfigDialect::Nested);
        assert_eq!(PhiConfig::from_json(&nested, "nested").unwrap(), flat);

        let msft = json!({
            "model_type": "phi-msft", "n_embd": 2560, "n_layer": 32, "n_head": 32, "n_head_kv": null,
            "n_inner": null, "rotary_dim": 32, "n_positions": 2048, "layer_norm_epsilon": 1e-5,
            "vocab_size": 51200, "resid_pdrop": 0.1, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "activation_function": "gelu_new", "bos_token_id": 50256, "eos_token_id": 50256
        });
        assert_eq!(PhiConfig::dialect_of(&msft), ConfigDialect::Microsoft);
        assert_eq!(PhiConfig::from_json(&msft, "msft").unwrap(), flat);
    }

    #[test]
    fn microsoft_vocab_is_padded_to_the_multiple() {
        let v1 = json!({"model_type": "mixformer-sequential", "n_embd": 64, "n_layer": 2, "n_head": 4,
                        "rotary_dim": 8, "vocab_size": 50257, "pad_vocab_size_multiple": 64});
        let config = PhiConfig::from_json(&v1, "v1").unwrap();
        assert_eq!(config.vocab_size, 50304);
        assert_eq!(config.intermediate_size, 256);
        assert_eq!(config.rotary_dim(), 8);
    }

    #[test]
    fn null_special_ids_stay_unset() {
        let mut value = hub_flat();
        value["bos_token_id"] = Value::Null;
        value.as_object_mut().unwrap().remove("eos_token_id");
        let config = PhiConfig::from_json(&value, "c").unwrap();
        assert_eq!((config.bos_token_id, config.eos_token_id), (None, None));
    }

    fn field_of(value: Value) -> String {
        match PhiConfig::from_json(&value, "cfg.json") {
            Err(PhiError::Config { field, origin, .. }) => {
                assert_eq!(origin, "cfg.json");
                field
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_offending_field() {
        let with = |key: &str, v: Value| {
            let mut c = hub_flat();
            c[key] = v;
            c
        };
        assert_eq!(
            field_of(with("num_attention_heads", json!(7))),
            "num_attention_heads"
        );
        assert_eq!(
            field_of(with("num_key_value_heads", json!(5))),
            "num_key_value_heads"
        );
        assert_eq!(field_of(with("hidden_size", json!("big"))), "hidden_size");
        assert_eq!(
            field_of(with("partial_rotary_factor", json!(1.5))),
            "partial_rotary_factor"
        );
        assert_eq!(
            field_of(with("partial_rotary_factor", json!(0.3125))),
            "partial_rotary_factor"
        );
        assert_eq!(field_of(with("hidden_act", json!("relu"))), "hidden_act");
        assert_eq!(
            field_of(with("tie_word_embeddings", json!(true))),
            "tie_word_embeddings"
        );
        assert_eq!(
            field_of(with(
                "rope_scaling",
                json!({"type": "linear", "factor": 2.0})
            )),
            "rope_scaling"
        );
        assert_eq!(field_of(with("resid_pdrop", json!(1.0))), "resid_pdrop");
        let mut missing = hub_flat();
        missing.as_object_mut().unwrap().remove("vocab_size");
        assert_eq!(field_of(missing), "vocab_size");
        let nested = json!({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "rope_parameters": {"rope_theta": "x"}});
        assert_eq!(field_of(nested), "rope_parameters.rope_theta");
        assert_eq!(field_of(json!([1, 2])), "(file)");
        assert!(matches!(
            PhiConfig::from_json_str("{not json", "bad.json"),
            Err(PhiError::Config { .. })
        ));
    }

    #[test]
    fn parameter_count_matches_the_published_sizes() {
        let phi2 = PhiConfig::from_json(&hub_flat(), "phi-2").unwrap();
        assert_eq!(phi2.num_parameters(), 2_779_683_840);
    }
}
