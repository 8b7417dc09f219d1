//! The key layouts Phi checkpoints exist in, told apart by their keys (ARCHITECTURE.md §3): the
//! three Hugging Face ones and llama.cpp's GGUF names for its `phi2` architecture.

use std::ops::Range;

use crate::config::PhiConfig;
use crate::model::{Leaf, Part};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// How a checkpoint names its tensors: the published key layouts of the Phi family.
pub enum KeyLayout {
    /// Current transformers names (`model.layers.{i}.self_attn.q_proj`).
    V3,
    /// microsoft's `phi-msft` remote code (`transformer.h.{i}.mixer.Wqkv`).
    V2Msft,
    /// microsoft's `MixFormerSequential` (`layers.{i+1}.mixer.Wqkv`, embedding at `layers.0`).
    V1MixFormer,
    /// llama.cpp's `phi2` tensors in a GGUF file (`blk.{i}.attn_qkv` or `blk.{i}.attn_q`/`k`/`v`,
    /// `ffn_up`, `ffn_down`, `token_embd`, `output`): `fused_qkv` when q, k and v are one tensor.
    Gguf {
        /// Whether the blocks store `attn_qkv` (older conversions) rather than three tensors.
        fused_qkv: bool,
    },
}

/// Where one model parameter is stored in a given layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    /// The tensor key in the checkpoint.
    pub key: String,
    /// Rows of a fused `Wqkv` tensor that belong to this parameter.
    pub rows: Option<Range<usize>>,
    /// The stored tensor's whole shape (the fused shape for `Wqkv`).
    pub stored_shape: Vec<usize>,
}

impl KeyLayout {
    /// Tells the layout from the key names; `None` if no layout's embedding key is present.
    pub fn detect<'a>(keys: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut found = None;
        let mut fused_qkv = false;
        for k in keys {
            fused_qkv |= k.starts_with("blk.") && k.contains(".attn_qkv.");
            found = found.or(
                if k.starts_with("model.embed_tokens.") || k.starts_with("model.layers.") {
                    Some(Self::V3)
                } else if k.starts_with("transformer.embd.") || k.starts_with("transformer.h.") {
                    Some(Self::V2Msft)
                } else if k.starts_with("layers.0.wte.") {
                    Some(Self::V1MixFormer)
                } else if k.starts_with("token_embd.") || k.starts_with("blk.") {
                    Some(Self::Gguf { fused_qkv: false })
                } else {
                    None
                },
            );
        }
        match found {
            Some(Self::Gguf { .. }) => Some(Self::Gguf { fused_qkv }),
            other => other,
        }
    }

    /// The layout's name, as errors and logs give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::V3 => "V3 (transformers)",
            Self::V2Msft => "V2 (phi-msft)",
            Self::V1MixFormer => "V1 (MixFormerSequential)",
            Self::Gguf { .. } => "GGUF (llama.cpp's phi2)",
        }
    }

    /// The decoder block a stored key belongs to (0-based), if it belongs to one.
    pub fn block_of(self, key: &str) -> Option<usize> {
        let (prefix, offset) = match self {
            Self::V3 => ("model.layers.", 0),
            Self::V2Msft => ("transformer.h.", 0),
            // Blocks are `layers.1..=L`; `layers.0` is the embedding, `layers.L+1` the head.
            Self::V1MixFormer => ("layers.", 1),
            Self::Gguf { .. } => ("blk.", 0),
        };
        let (index, rest) = key.strip_prefix(prefix)?.split_once('.')?;
        let index: usize = index.parse().ok()?;
        // In V1 the head's norm is `layers.L+1.ln`, named like a block's: count blocks by the
        // modules only blocks have.
        let in_block =
            self != Self::V1MixFormer || rest.starts_with("mixer.") || rest.starts_with("mlp.");
        (in_block && index >= offset).then(|| index - offset)
    }

    /// Keys that carry no parameters and are dropped wherever they appear.
    pub fn is_ignored(key: &str) -> bool {
        key.ends_with("rotary_emb.inv_freq")
    }

    /// Where the parameter `part.leaf` with transformers shape `shape` lives in this layout, or
    /// `None` if the layout cannot hold it (q/k LayerNorms in the fused layouts).
    pub fn locate(
        self,
        part: Part,
        leaf: Leaf,
        shape: &[usize],
        config: &PhiConfig,
    ) -> Option<Location> {
        let suffix = leaf.suffix();
        let plain = |module: String| Location {
            key: format!("{module}.{suffix}"),
            rows: None,
            stored_shape: shape.to_vec(),
        };
        if self == Self::V3 {
            return Some(plain(part.v3_module()));
        }
        if let Self::Gguf { fused_qkv } = self {
            return gguf_location(part, fused_qkv, config).map(|(module, rows)| {
                let mut location = plain(module);
                if let Some(rows) = rows {
                    location.stored_shape[0] = config.hidden_size + 2 * config.kv_dim();
                    location.rows = Some(rows);
                }
                location
            });
        }
        let layers = config.num_hidden_layers;
        let block = |i: usize| match self {
            Self::V2Msft => format!("transformer.h.{i}"),
            _ => format!("layers.{}", i + 1),
        };
        // kv_dim divides by the head count: only the fused parts need it, and a loader asks for
        // the others before the config is validated.
        let (d, kv) = (config.hidden_size, || config.kv_dim());
        // Wqkv rows are plain [q; k; v]: q = 0..d, k = d..d+kv, v = d+kv..d+2kv.
        let fused = |i: usize, rows: Range<usize>| {
            let mut stored_shape = shape.to_vec();
            stored_shape[0] = d + 2 * kv();
            Location {
                key: format!("{}.mixer.Wqkv.{suffix}", block(i)),
                rows: Some(rows),
                stored_shape,
            }
        };
        Some(match (self, part) {
            (Self::V2Msft, Part::Embed) => plain("transformer.embd.wte".into()),
            (Self::Gguf { .. }, _) => unreachable!("located above"),
            (_, Part::Embed) => plain("layers.0.wte".into()),
            (_, Part::InputNorm(i)) => plain(format!("{}.ln", block(i))),
            (_, Part::Q(i)) => fused(i, 0..d),
            (_, Part::K(i)) => fused(i, d..d + kv()),
            (_, Part::V(i)) => fused(i, d + kv()..d + 2 * kv()),
            (_, Part::Dense(i)) => plain(format!("{}.mixer.out_proj", block(i))),
            (_, Part::Fc1(i)) => plain(format!("{}.mlp.fc1", block(i))),
            (_, Part::Fc2(i)) => plain(format!("{}.mlp.fc2", block(i))),
            (_, Part::QNorm(_) | Part::KNorm(_)) => return None,
            (Self::V2Msft, Part::FinalNorm) => plain("lm_head.ln".into()),
            (Self::V2Msft, Part::Head) => plain("lm_head.linear".into()),
            (_, Part::FinalNorm) => plain(format!("layers.{}.ln", layers + 1)),
            (_, Part::Head) => plain(format!("layers.{}.linear", layers + 1)),
        })
    }
}

/// Where `part` lives among llama.cpp's `phi2` tensors: the module name, and the rows of
/// `attn_qkv` for q, k or v when they are fused. Norms inside attention have no place.
fn gguf_location(
    part: Part,
    fused_qkv: bool,
    config: &PhiConfig,
) -> Option<(String, Option<Range<usize>>)> {
    let (d, kv) = (config.hidden_size, || config.kv_dim());
    let qkv = |i: usize, name: &str, rows: Range<usize>| {
        if fused_qkv {
            (format!("blk.{i}.attn_qkv"), Some(rows))
        } else {
            (format!("blk.{i}.{name}"), None)
        }
    };
    Some(match part {
        Part::Embed => ("token_embd".into(), None),
        Part::InputNorm(i) => (format!("blk.{i}.attn_norm"), None),
        Part::Q(i) => qkv(i, "attn_q", 0..d),
        Part::K(i) => qkv(i, "attn_k", d..d + kv()),
        Part::V(i) => qkv(i, "attn_v", d + kv()..d + 2 * kv()),
        Part::Dense(i) => (format!("blk.{i}.attn_output"), None),
        Part::Fc1(i) => (format!("blk.{i}.ffn_up"), None),
        Part::Fc2(i) => (format!("blk.{i}.ffn_down"), None),
        Part::QNorm(_) | Part::KNorm(_) => return None,
        Part::FinalNorm => ("output_norm".into(), None),
        Part::Head => ("output".into(), None),
    })
}
