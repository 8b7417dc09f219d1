//! phi-zoo-common: what every Phi variant shares — the config, the transformer over burn's
//! `Backend`, and checkpoint loading and export.

pub mod attention;
pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod error;
pub mod frozen;
pub mod generation;
pub mod init;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod model;
pub mod params;
pub mod positions;
pub mod rotary;
pub mod sampling;
pub mod streaming;
pub mod tokenizer;
pub mod train;

pub use cache::KvCache;
pub use checkpoint::{Checkpoint, KeyLayout};
pub use config::{ConfigDialect, PhiConfig};
pub use error::{PhiError, Result, ShapeMismatch};
pub use frozen::Frozen;
pub use generation::{
    Generated, GeneratedText, GenerationConfig, StopReason, generate, generate_batch, generate_text,
};
pub use lora::{LoraConfig, LoraTarget, PhiAdapters};
pub use model::{ParamSource, Phi, PhiModel};
pub use sampling::{Sampling, TokenPicker};
pub use streaming::{StreamStep, TextStream};
pub use tokenizer::PhiTokenizer;
