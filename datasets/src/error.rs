//! Errors of the data side. Each names the file, and the line or row where there is one, because
//! corpora come from elsewhere and the user must find the bad record.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
/// Errors of the data pipeline, each naming the file, line or value at fault.
pub enum DataError {
    #[error("{}: {source}", path.display())]
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// What the operating system said.
        source: std::io::Error,
    },

    /// One record of a corpus cannot be read as a document.
    #[error("{}:{line}: {message}", file.display())]
    Malformed {
        /// The corpus file.
        file: PathBuf,
        /// 1-based line (JSONL), row (Parquet, 0-based row index + 1), or 0 for a whole file.
        line: usize,
        /// What is wrong with the record.
        message: String,
    },

    /// A corpus as a whole cannot be read (wrong format, missing column, nothing found).
    #[error("{}: {message}", path.display())]
    Corpus {
        /// The corpus file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A token store is incomplete, corrupt, or not what the caller expects.
    #[error("token store {}: {message}", path.display())]
    Store {
        /// The store's folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A mixture, window or batch request that cannot be met.
    #[error("{0}")]
    Invalid(String),

    #[error("tokenizer: {0}")]
    /// The tokenizer failed.
    Tokenizer(String),
}

/// The data pipeline's result type.
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
