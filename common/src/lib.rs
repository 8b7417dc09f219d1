//! phi-zoo-common: what every Phi variant shares, grouped by concern: the config ([`config`]),
//! the transformer over burn's `Backend` ([`model`]), checkpoint loading and export
//! ([`checkpoint`]), the tokenizer ([`tokenizer`]), generation with sampling and streaming
//! ([`generation`]), LoRA adapters ([`lora`]), and with the `train` feature the training steps,
//! recipes and metrics (`train`).

#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generation;
pub mod lora;
pub mod model;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;

pub use batch::LmBatch;
pub use checkpoint::{Checkpoint, KeyLayout};
pub use config::{ConfigDialect, PhiConfig};
pub use error::{PhiError, Result, ShapeMismatch};
pub use generation::sampling::{Sampling, TokenPicker};
pub use generation::streaming::{StreamStep, TextStream};
pub use generation::warm_up::warm_up_decode;
pub use generation::{
    Generated, GeneratedText, GenerationConfig, StopReason, generate, generate_batch,
    generate_batch_until, generate_text,
};
pub use lora::{LoraConfig, LoraTarget, PhiAdapters};
pub use model::{
    AdaptedPhi, Adapters, Input, KvCache, LanguageModel, Options, PackedWeight, ParamSource, Phi,
    PhiLinear, PhiModel, Projection, TokenEmbedding, WeightFormat,
};
pub use tokenizer::PhiTokenizer;
#[cfg(feature = "train")]
pub use train::Frozen;
