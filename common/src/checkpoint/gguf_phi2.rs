//! llama.cpp's `phi2` architecture in GGUF metadata: the model's sizes as `PhiConfig` and the
//! tokenizer as a tokenizer.json, both ways (read from a file, written by the exporter).
//!
//! The tokenizer is GPT-2's byte-level BPE (`tokenizer.ggml.model = "gpt2"`): the vocabulary with
//! a type per token (normal, control, user-defined, unused padding) and the merges in rank order.
//! Read, it becomes a tokenizer.json with the bundled one's pre-tokenizer and decoder; written,
//! the ids the model has beyond the tokenizer's become `[PAD{id}]` tokens of the unused type, as
//! llama.cpp's converter writes them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::gguf_file::{GgufFile, MetaValue};
use crate::config::PhiConfig;
use crate::error::{PhiError, Result};
use crate::tokenizer::PhiTokenizer;

/// The architecture name phi-zoo reads and writes.
pub const ARCHITECTURE: &str = "phi2";

/// llama.cpp's token types.
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

/// The GGUF key for each `PhiConfig` field read from the metadata (errors name the key).
const FIELD_KEYS: [(&str, &str); 10] = [
    ("vocab_size", "token_embd.weight"),
    ("hidden_size", "phi2.embedding_length"),
    ("intermediate_size", "phi2.feed_forward_length"),
    ("num_hidden_layers", "phi2.block_count"),
    ("num_attention_heads", "phi2.attention.head_count"),
    ("num_key_value_heads", "phi2.attention.head_count_kv"),
    ("max_position_embeddings", "phi2.context_length"),
    ("layer_norm_eps", "phi2.attention.layer_norm_epsilon"),
    ("rope_theta", "phi2.rope.freq_base"),
    ("partial_rotary_factor", "phi2.rope.dimension_count"),
];

/// The config a `phi2` GGUF file describes. `vocab_size` is the embedding's row count. The
/// result is not yet validated: the caller compares it with the tensors, then validates it,
/// naming GGUF keys in what it refuses ([`name_keys`]).
pub fn config(file: &GgufFile) -> Result<PhiConfig> {
    let meta = file.metadata();
    let origin = format!("{} (GGUF metadata)", file.path().display());
    let fail = |key: &str, message: String| PhiError::Config {
        origin: origin.clone(),
        field: key.to_owned(),
        message,
    };
    let architecture = meta
        .get("general.architecture")
        .ok_or_else(|| fail("general.architecture", "is missing".into()))?;
    if architecture.as_str() != Some(ARCHITECTURE) {
        return Err(fail(
            "general.architecture",
            format!("is {architecture:?}: phi-zoo reads `{ARCHITECTURE}` models (Phi-1, 1.5, 2)"),
        ));
    }
    // Sizes above u32 are no model's: refused here, so nothing is sized from them.
    let size = |key: &str| -> Result<Option<usize>> {
        match meta.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|&v| v <= u32::MAX as u64)
                .map(|v| Some(v as usize))
                .ok_or_else(|| fail(key, format!("is {value:?}, not a size"))),
        }
    };
    let required = |key: &str| size(key)?.ok_or_else(|| fail(key, "is missing".into()));
    let float = |key: &str| -> Result<Option<f64>> {
        match meta.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| fail(key, format!("is {value:?}, not a number"))),
        }
    };
    let mut config = PhiConfig {
        hidden_size: required("phi2.embedding_length")?,
        intermediate_size: required("phi2.feed_forward_length")?,
        num_hidden_layers: required("phi2.block_count")?,
        num_attention_heads: required("phi2.attention.head_count")?,
        max_position_embeddings: required("phi2.context_length")?,
        qk_layernorm: false,
        ..PhiConfig::default()
    };
    config.num_key_value_heads =
        size("phi2.attention.head_count_kv")?.unwrap_or(config.num_attention_heads);
    if let Some(eps) = float("phi2.attention.layer_norm_epsilon")? {
        config.layer_norm_eps = eps;
    }
    if let Some(theta) = float("phi2.rope.freq_base")? {
        config.rope_theta = theta;
    }
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(fail(
            "phi2.attention.head_count",
            format!(
                "{} heads do not divide the embedding length {}",
                config.num_attention_heads, config.hidden_size
            ),
        ));
    }
    let head_dim = config.hidden_size / config.num_attention_heads;
    let rotary = required("phi2.rope.dimension_count")?;
    if rotary == 0 || rotary > head_dim || !rotary.is_multiple_of(2) {
        return Err(fail(
            "phi2.rope.dimension_count",
            format!(
                "{rotary} rotary channels for heads of {head_dim} (need an even 2..={head_dim})"
            ),
        ));
    }
    config.partial_rotary_factor = rotary as f64 / head_dim as f64;
    let vocab = file
        .shapes()
        .find(|(name, _)| *name == "token_embd.weight")
        .map(|(_, shape)| shape[0]);
    config.vocab_size = match vocab {
        Some(rows) => rows,
        None => meta
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map_or(0, <[MetaValue]>::len),
    };
    let token = |key: &str| -> Result<Option<u32>> { Ok(size(key)?.map(|id| id as u32)) };
    config.bos_token_id = token("tokenizer.ggml.bos_token_id")?;
    config.eos_token_id = token("tokenizer.ggml.eos_token_id")?;
    Ok(config)
}

/// `error` with a refused `PhiConfig` field renamed to the GGUF key it was read from.
pub fn name_keys(error: PhiError) -> PhiError {
    match error {
        PhiError::Config {
            origin,
            field,
            message,
        } => {
            let key = FIELD_KEYS
                .iter()
                .find(|(name, _)| *name == field)
                .map_or(field, |(_, key)| (*key).to_owned());
            PhiError::Config {
                origin,
                field: key,
                message,
            }
        }
        other => other,
    }
}

/// The file's tokenizer as tokenizer.json text, or `None` if it stores none.
pub fn tokenizer_json(file: &GgufFile) -> Result<Option<String>> {
    let meta = file.metadata();
    let origin = format!("{} (GGUF metadata)", file.path().display());
    let fail = |key: &str, message: String| PhiError::Config {
        origin: origin.clone(),
        field: key.to_owned(),
        message,
    };
    let Some(tokens) = meta.get("tokenizer.ggml.tokens") else {
        return Ok(None);
    };
    let model = meta.get("tokenizer.ggml.model").and_then(MetaValue::as_str);
    if model != Some("gpt2") {
        return Err(fail(
            "tokenizer.ggml.model",
            format!("is {model:?}: Phi's tokenizer is GPT-2's byte-level BPE (`gpt2`)"),
        ));
    }
    let strings = |key: &str, value: &MetaValue| -> Result<Vec<String>> {
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| fail(key, "is not an array of strings".into()))
    };
    let tokens = strings("tokenizer.ggml.tokens", tokens)?;
    let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        None => vec![NORMAL; tokens.len()],
        Some(value) => value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|item| match item {
                        MetaValue::Int(v) => Some(*v),
                        MetaValue::Uint(v) => i64::try_from(*v).ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .filter(|types| types.len() == tokens.len())
            .ok_or_else(|| {
                fail(
                    "tokenizer.ggml.token_type",
                    format!("is not {} integers, one per token", tokens.len()),
                )
            })?,
    };
    let merges = match meta.get("tokenizer.ggml.merges") {
        None => Vec::new(),
        Some(value) => strings("tokenizer.ggml.merges", value)?,
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, ty)) in tokens.iter().zip(&types).enumerate() {
        match *ty {
            UNUSED => {}
            USER_DEFINED | CONTROL => {
                let special = *ty == CONTROL;
                if special {
                    vocab.insert(token.clone(), json!(id));
                }
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": !special, "special": special,
                }));
            }
            _ => {
                vocab.insert(token.clone(), json!(id));
            }
        }
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (rank, merge) in merges.iter().enumerate() {
        let (left, right) = merge.split_once(' ').ok_or_else(|| {
            fail(
                "tokenizer.ggml.merges",
                format!("merge {rank} ({merge:?}) is not two tokens separated by a space"),
            )
        })?;
        pairs.push(json!([left, right]));
    }
    let mut json: Value =
        serde_json::from_str(&PhiTokenizer::bundled().to_json()?).expect("the bundled tokenizer");
    json["added_tokens"] = Value::Array(added);
    json["model"]["vocab"] = Value::Object(vocab);
    json["model"]["merges"] = Value::Array(pairs);
    Ok(Some(json.to_string()))
}

/// The metadata a `phi2` GGUF of `config` (and `tokenizer`, where there is one) carries, with
/// llama.cpp's `file_type` for `file_type`.
pub fn metadata(
    config: &PhiConfig,
    tokenizer: Option<&PhiTokenizer>,
    file_type: u32,
) -> Result<Vec<(String, MetaValue)>> {
    let size = |v: usize| MetaValue::Uint(v as u64);
    let mut meta = vec![
        (
            "general.architecture".into(),
            MetaValue::Str(ARCHITECTURE.into()),
        ),
        (
            "general.name".into(),
            MetaValue::Str("phi-zoo export".into()),
        ),
        (
            "general.file_type".into(),
            MetaValue::Uint(file_type as u64),
        ),
        ("general.quantization_version".into(), MetaValue::Uint(2)),
        (
            "phi2.context_length".into(),
            size(config.max_position_embeddings),
        ),
        ("phi2.embedding_length".into(), size(config.hidden_size)),
        (
            "phi2.feed_forward_length".into(),
            size(config.intermediate_size),
        ),
        ("phi2.block_count".into(), size(config.num_hidden_layers)),
        (
            "phi2.attention.head_count".into(),
            size(config.num_attention_heads),
        ),
        (
            "phi2.attention.head_count_kv".into(),
            size(config.num_key_value_heads),
        ),
        (
            "phi2.attention.layer_norm_epsilon".into(),
            MetaValue::Float(config.layer_norm_eps),
        ),
        (
            "phi2.rope.dimension_count".into(),
            size(config.rotary_dim()),
        ),
        (
            "phi2.rope.freq_base".into(),
            MetaValue::Float(config.rope_theta),
        ),
    ];
    let Some(tokenizer) = tokenizer else {
        return Ok(meta);
    };
    let json: Value = serde_json::from_str(&tokenizer.to_json()?)
        .map_err(|e| PhiError::Input(format!("the tokenizer's JSON: {e}")))?;
    // id → (token, type): the model's vocabulary, then the added tokens over it.
    let mut by_id: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    if let Some(vocab) = json["model"]["vocab"].as_object() {
        for (token, id) in vocab {
            if let Some(id) = id.as_u64() {
                by_id.insert(id, (token.clone(), NORMAL));
            }
        }
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) {
            let ty = if added["special"].as_bool() == Some(true) {
                CONTROL
            } else {
                USER_DEFINED
            };
            by_id.insert(id, (content.to_owned(), ty));
        }
    }
    let count = config
        .vocab_size
        .max(by_id.keys().last().map_or(0, |&id| id as usize + 1));
    let (mut tokens, mut types) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for id in 0..count as u64 {
        let (token, ty) = by_id
            .remove(&id)
            .unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
        tokens.push(MetaValue::Str(token));
        types.push(MetaValue::Int(ty));
    }
    let merges: Vec<MetaValue> = json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|merge| match merge {
            Value::String(s) => Some(MetaValue::Str(s.clone())),
            Value::Array(pair) => Some(MetaValue::Str(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            ))),
            _ => None,
        })
        .collect();
    meta.push(("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into())));
    meta.push(("tokenizer.ggml.pre".into(), MetaValue::Str("phi-2".into())));
    meta.push(("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens)));
    meta.push(("tokenizer.ggml.token_type".into(), MetaValue::Array(types)));
    meta.push(("tokenizer.ggml.merges".into(), MetaValue::Array(merges)));
    let special = config.eos_token_id.or(tokenizer.eos_id());
    if let Some(id) = config.bos_token_id.or(special) {
        meta.push((
            "tokenizer.ggml.bos_token_id".into(),
            MetaValue::Uint(id as u64),
        ));
    }
    if let Some(id) = special {
        meta.push((
            "tokenizer.ggml.eos_token_id".into(),
            MetaValue::Uint(id as u64),
        ));
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(false),
    ));
    Ok(meta)
}
