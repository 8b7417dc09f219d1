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
//! Backends are chosen by feature: `flex` (CPU, default), `wgpu`, `cuda`. `hub` adds hub ids.

pub use phi_zoo_common as common;
pub use phi_zoo_common::checkpoint::{StoredDType, save_hf};
pub use phi_zoo_common::{
    AdaptedPhi, Adapters, Checkpoint, ConfigDialect, Frozen, Generated, GeneratedText,
    GenerationConfig, Input, KeyLayout, KvCache, LanguageModel, LoraConfig, LoraTarget, Options,
    ParamSource, Phi, PhiAdapters, PhiConfig, PhiError, PhiLinear, PhiTokenizer, Projection,
    Result, Sampling, ShapeMismatch, StopReason, TextStream, TokenPicker, generate, generate_batch,
    generate_text,
};
pub use phi_zoo_datasets as datasets;
pub use phi_zoo_phi1 as phi1;
pub use phi_zoo_phi1_5 as phi1_5;
pub use phi_zoo_phi2 as phi2;

#[cfg(feature = "hub")]
pub use phi_zoo_common::checkpoint::{HubOptions, resolve_hub};

pub mod backend;
pub mod memory;
pub mod training;

/// Named configs by the names people use for them.
pub fn named_config(name: &str) -> Option<PhiConfig> {
    match name {
        "phi-1" | "phi1" => Some(phi1::phi_1()),
        "phi-1-small" | "phi1-small" => Some(phi1::phi_1_small()),
        "phi-1.5" | "phi-1_5" | "phi1_5" => Some(phi1_5::phi_1_5()),
        "phi-2" | "phi2" => Some(phi2::phi_2()),
        "tiny" => Some(phi1_5::tiny()),
        _ => None,
    }
}
