//! A resumable output: JSONL records, each with a unique `key`, appended one whole line at a
//! time and flushed, so a killed stage leaves every finished record on disk. Reopening reads the
//! keys already there (the stage skips them) and cuts off a last line the kill left half
//! written, so rerunning after a kill writes each record exactly once.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{DataError, Result};

/// Records synced to disk every this many (each is flushed to the OS at once).
const SYNC_EVERY: u64 = 64;

/// An append-only JSONL file of keyed records.
pub struct Journal {
    path: PathBuf,
    file: File,
    keys: HashSet<String>,
    appended: u64,
}

impl Journal {
    /// Opens (or creates) `path`; the keys of its complete records are remembered.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| DataError::io(&path, e))?;
        let (keys, good_len) = read_keys(&path, &file)?;
        // A line cut short by a kill is dropped; its record is redone.
        file.set_len(good_len)
            .map_err(|e| DataError::io(&path, e))?;
        file.seek(SeekFrom::End(0))
            .map_err(|e| DataError::io(&path, e))?;
        Ok(Self {
            path,
            file,
            keys,
            appended: 0,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record with `key` is already written.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// The keys written so far.
    pub fn keys(&self) -> HashSet<String> {
        self.keys.clone()
    }

    /// Records in the file.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends `record` (a JSON object with a string `key` not yet written) as one line.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let key = record["key"]
            .as_str()
            .ok_or_else(|| {
                DataError::Invalid(format!("{}: a record without a key", self.path.display()))
            })?
            .to_string();
        if self.keys.contains(&key) {
            return Err(DataError::Invalid(format!(
                "{}: record {key} is already written",
                self.path.display()
            )));
        }
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| DataError::io(&self.path, e))?;
        self.appended += 1;
        if self.appended.is_multiple_of(SYNC_EVERY) {
            self.file
                .sync_data()
                .map_err(|e| DataError::io(&self.path, e))?;
        }
        self.keys.insert(key);
        Ok(())
    }

    /// Syncs what was appended.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| DataError::io(&self.path, e))
    }
}

/// The keys of the complete records, and the byte length they fill. A last line without its
/// newline is incomplete; a complete line that is not a keyed JSON object is an error naming it.
fn read_keys(path: &Path, file: &File) -> Result<(HashSet<String>, u64)> {
    let mut keys = HashSet::new();
    let mut good_len = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DataError::io(path, e))?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        number += 1;
        let record: Value = serde_json::from_slice(&line)
            .map_err(|e| DataError::malformed(path, number, format!("not JSON: {e}")))?;
        let key = record["key"]
            .as_str()
            .ok_or_else(|| DataError::malformed(path, number, "a record without a string key"))?;
        keys.insert(key.to_string());
        good_len += read as u64;
    }
    Ok((keys, good_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_written_last_line_is_cut_and_keys_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.append(&serde_json::json!({"key": "a", "v": 1})).unwrap();
        j.append(&serde_json::json!({"key": "b", "v": 2})).unwrap();
        assert!(j.append(&serde_json::json!({"key": "a"})).is_err());
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\": \"c\", \"v\"").unwrap();
        drop(f);
        let mut j = Journal::open(&path).unwrap();
        assert!(j.contains("a") && j.contains("b") && !j.contains("c"));
        j.append(&serde_json::json!({"key": "c", "v": 3})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        std::fs::write(&path, "{\"key\": \"a\"}\nnot json\n").unwrap();
        let error = Journal::open(&path).err().unwrap().to_string();
        assert!(error.contains("out.jsonl:2"), "{error}");
    }
}
