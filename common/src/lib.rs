//! phi-zoo-common: what every Phi variant shares — the config, the transformer over burn's
//! `Backend`, and checkpoint loading and export.

pub mod attention;
pub mod block;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod init;
pub mod mlp;
pub mod model;
pub mod params;
pub mod rotary;

pub use checkpoint::{Checkpoint, KeyLayout};
pub use config::{ConfigDialect, PhiConfig};
pub use error::{PhiError, Result, ShapeMismatch};
pub use model::{ParamSource, Phi, PhiModel};
