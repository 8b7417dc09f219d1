//! phi-zoo: the Phi family (Phi-1, Phi-1.5, Phi-2) on burn.
//!
//! ```no_run
//! use phi_zoo::{Checkpoint, backend::Cpu};
//!
//! let checkpoint = Checkpoint::open("path/to/phi-2")?; // or a hub id with the `hub` feature
//! let model = checkpoint.load::<Cpu>(&Default::default())?;
//! let logits = model.forward_ids(&[vec![1212, 318, 281]], &Default::default())?;
//! # Ok::<(), phi_zoo::PhiError>(())
//! ```
//!
//! Backends are chosen by feature: `flex` (CPU, default), `wgpu`, `cuda`. `hub` adds hub ids;
//! `train` (default) adds training: burn-train's learner, recipes, checkpoints.

#![warn(missing_docs)]

pub use phi_zoo_common as common;
pub use phi_zoo_common::checkpoint::{StoredDType, save_gguf, save_hf};
pub use phi_zoo_common::{
    AdaptedPhi, Adapters, Checkpoint, ConfigDialect, Generated, GeneratedText, GenerationConfig,
    Input, KeyLayout, KvCache, LanguageModel, LoraConfig, LoraTarget, Options, PackedWeight,
    ParamSource, Phi, PhiAdapters, PhiConfig, PhiError, PhiLinear, PhiTokenizer, Projection,
    Result, Sampling, ShapeMismatch, StopReason, TextStream, TokenPicker, WeightFormat, generate,
    generate_batch, generate_batch_until, generate_text, warm_up_decode,
};
pub use phi_zoo_datasets as datasets;
pub use phi_zoo_phi1 as phi1;
pub use phi_zoo_phi1_5 as phi1_5;
pub use phi_zoo_phi2 as phi2;

#[cfg(feature = "hub")]
pub use phi_zoo_common::checkpoint::{HubOptions, resolve_hub};

pub mod backend;
pub mod eval;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod gpu_trace;
pub mod memory;
#[cfg(feature = "train")]
pub mod recipes;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod training;
mod variant;

#[cfg(feature = "train")]
pub use phi_zoo_common::train::{Frozen, Recipe};
#[cfg(feature = "train")]
pub use recipes::{NamedRecipe, recipe};
pub use variant::Variant;

/// Opens a model by what a user types: a folder or weights file if one exists at that path, else a
/// variant's name with a published checkpoint (`phi-1`, `phi-1.5`, `phi-2`: its hub id), else a hub
/// id (`microsoft/phi-2`, at `revision`). Hub ids need the `hub` feature.
pub fn open_model(source: &str, revision: Option<&str>) -> Result<Checkpoint> {
    let hub_id = match source.parse::<Variant>() {
        Ok(variant) if !std::path::Path::new(source).exists() => variant.hub_id(),
        _ => None,
    };
    Checkpoint::open_source(hub_id.unwrap_or(source), revision)
}

/// The config of a named shape ([`Variant`]'s names: `phi-1`, `phi-1.5`, `tiny`, …).
pub fn named_config(name: &str) -> Option<PhiConfig> {
    name.parse::<Variant>().ok().map(Variant::config)
}
