//! phi-zoo-common: what every Phi variant shares — the config, the transformer over burn's
//! `Backend`, and checkpoint loading and export.

#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod frozen;
pub mod generation;
pub mod lora;
pub mod model;
pub mod sampling;
pub mod streaming;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;

pub use batch::LmBatch;
pub use checkpoint::{Checkpoint, KeyLayout};
pub use config::{ConfigDialect, PhiConfig};
pub use error::{PhiError, Result, ShapeMismatch};
pub use frozen::Frozen;
pub use generation::{
    Generated, GeneratedText, GenerationConfig, StopReason, generate, generate_batch, generate_text,
};
pub use lora::{LoraConfig, LoraTarget, PhiAdapters};
pub use model::{
    AdaptedPhi, Adapters, Input, KvCache, LanguageModel, Options, ParamSource, Phi, PhiLinear,
    PhiModel, Projection,
};
pub use sampling::{Sampling, TokenPicker};
pub use streaming::{StreamStep, TextStream};
pub use tokenizer::PhiTokenizer;
