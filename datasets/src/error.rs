//! Errors of the data side. Each names the file, and the line or row where there is one, because
//! corpora come from elsewhere and the user must find the bad record.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// One record of a corpus cannot be read as a document.
    #[error("{}:{line}: {message}", file.display())]
    Malformed {
        file: PathBuf,
        /// 1-based line (JSONL), row (Parquet, 0-based row index + 1), or 0 for a whole file.
        line: usize,
        message: String,
    },

    /// A corpus as a whole cannot be read (wrong format, missing column, nothing found).
    #[error("{}: {message}", path.display())]
    Corpus { path: PathBuf, message: String },

    /// A token store is incomplete, corrupt, or not what the caller expects.
    #[error("token store {}: {message}", path.display())]
    Store { path: PathBuf, message: String },

    /// A mixture, window or batch request that cannot be met.
    #[error("{0}")]
    Invalid(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        file: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
    ) -> Self {
        Self::Malformed {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn store(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Store {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn corpus(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Corpus {
            path: path.into(),
            message: message.into(),
        }
    }
}
