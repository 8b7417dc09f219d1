//! The one error type of phi-zoo's library crates.
//!
//! Every variant names what was wrong and where (file, key, field), because the typical failure is
//! a checkpoint or config that came from somewhere else and the user must find the culprit.

use std::path::PathBuf;

/// A tensor whose stored shape is not the one the config implies.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMismatch {
    /// The key as stored in the checkpoint.
    pub key: String,
    /// The shape the config implies.
    pub expected: Vec<usize>,
    /// The shape in the checkpoint.
    pub found: Vec<usize>,
}

/// Errors from configs, checkpoints, the hub and model inputs.
#[derive(Debug, thiserror::Error)]
pub enum PhiError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A config is malformed or describes a model phi-zoo cannot build.
    #[error("{origin}: config field `{field}`: {message}")]
    Config {
        /// Where the config came from (a path, or a description).
        origin: String,
        /// The field (a JSON key, or a dotted path into the config).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A weights file is malformed or unreadable as a whole or at one key.
    #[error("{}: {}{message}", file.display(), key.as_deref().map(|k| format!("tensor `{k}`: ")).unwrap_or_default())]
    Weights {
        /// The weights file.
        file: PathBuf,
        /// The tensor, when one key is at fault.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// The checkpoint's tensors do not match the model the config describes.
    #[error("{}", describe_mismatch(origin, missing, unexpected, wrong_shape))]
    Mismatch {
        /// The checkpoint location.
        origin: String,
        /// Tensors the model needs that the checkpoint lacks (named as the checkpoint would name them).
        missing: Vec<String>,
        /// Tensors in the checkpoint the model has no place for.
        unexpected: Vec<String>,
        /// Tensors whose stored shape differs from the config's.
        wrong_shape: Vec<ShapeMismatch>,
    },

    /// Resolving a model on the Hugging Face hub failed.
    #[error("hub: {0}")]
    Hub(String),

    /// An input the caller passed (ids, lengths, options) is out of range.
    #[error("invalid input: {0}")]
    Input(String),
}

impl PhiError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PhiError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn weights(
        file: impl Into<PathBuf>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        PhiError::Weights {
            file: file.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

fn describe_mismatch(
    origin: &str,
    missing: &[String],
    unexpected: &[String],
    wrong_shape: &[ShapeMismatch],
) -> String {
    let mut text = format!("checkpoint {origin} does not match the config:");
    if !missing.is_empty() {
        text += &format!("\n  missing ({}): {}", missing.len(), missing.join(", "));
    }
    if !unexpected.is_empty() {
        text += &format!(
            "\n  unexpected ({}): {}",
            unexpected.len(),
            unexpected.join(", ")
        );
    }
    for m in wrong_shape {
        text += &format!(
            "\n  wrong shape: {} is {:?}, the config implies {:?}",
            m.key, m.found, m.expected
        );
    }
    text
}

/// phi-zoo's result type.
pub type Result<T, E = PhiError> = std::result::Result<T, E>;
