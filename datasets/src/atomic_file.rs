//! Output files that appear whole or not at all: written under a temporary name beside the
//! target, flushed, synced, then renamed over it. A killed stage leaves at most a `.partial`
//! file, which the next run overwrites.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// A file being written; it takes its name at `commit`.
pub struct AtomicFile {
    path: PathBuf,
    partial: PathBuf,
    writer: BufWriter<File>,
}

impl AtomicFile {
    /// Starts writing what will become `path` (its folder is created if missing).
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = File::create(&partial).map_err(|e| DataError::io(&partial, e))?;
        Ok(Self {
            path,
            partial,
            writer: BufWriter::new(file),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| DataError::io(&self.partial, e))
    }

    /// Writes one JSON value and a newline.
    pub fn write_json_line(&mut self, value: &impl serde::Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(value)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", self.path.display())))?;
        line.push(b'\n');
        self.write_all(&line)
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn commit(self) -> Result<PathBuf> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| DataError::io(&self.partial, e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io(&self.partial, e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| DataError::io(&self.path, e))?;
        Ok(self.path)
    }
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: impl Into<PathBuf>, value: &impl serde::Serialize) -> Result<PathBuf> {
    let mut file = AtomicFile::create(path)?;
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| DataError::Invalid(format!("{}: {e}", file.path().display())))?;
    file.write_all(&text)?;
    file.write_all(b"\n")?;
    file.commit()
}
