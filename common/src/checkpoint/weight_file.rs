//! Finding a checkpoint's weight files and reading them whatever their format.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::pytorch_file::PytorchFile;
use super::safetensors_file::SafetensorsFile;
use crate::error::{PhiError, Result};

/// One weights file of a checkpoint.
pub enum WeightFile {
    Safetensors(SafetensorsFile),
    Pytorch(PytorchFile),
}

impl WeightFile {
    /// Opens a file, telling safetensors from PyTorch by its first bytes (a zip or pickle
    /// signature means PyTorch), so a misnamed file still loads.
    pub fn open(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(|e| PhiError::io(path, e))?;
        let n = file.read(&mut head).map_err(|e| PhiError::io(path, e))?;
        let pytorch = n >= 2 && (head[..2] == *b"PK" || head[0] == 0x80);
        if pytorch {
            Ok(Self::Pytorch(PytorchFile::open(path)?))
        } else {
            Ok(Self::Safetensors(SafetensorsFile::open(path)?))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Safetensors(f) => f.path(),
            Self::Pytorch(f) => f.path(),
        }
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let own = |(k, s): (&str, &[usize])| (k.to_owned(), s.to_vec());
        match self {
            Self::Safetensors(f) => f.shapes().map(own).collect(),
            Self::Pytorch(f) => f.shapes().map(own).collect(),
        }
    }

    /// A tensor as f32 values, or only rows `rows` of its first dimension.
    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        match self {
            Self::Safetensors(f) => f.read_f32(key, rows),
            Self::Pytorch(f) => f.read_f32(key, rows),
        }
    }
}

/// A model folder's weight files.
pub struct WeightFiles {
    pub paths: Vec<PathBuf>,
    /// For sharded checkpoints, the index's key → file map, to check the shards against.
    pub index: Option<Vec<(String, PathBuf)>>,
}

/// The weight files of a model folder, in the order transformers prefers them: a sharded
/// safetensors index, a single safetensors file, a sharded `.bin` index, a single `.bin`.
/// Failing those, every `*.safetensors` file, else every `*.bin` file.
pub fn discover(dir: &Path) -> Result<WeightFiles> {
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let path = dir.join(index);
        if path.is_file() {
            let map = read_index(&path)?;
            let mut files: Vec<PathBuf> = Vec::new();
            for (_, file) in &map {
                if !files.contains(file) {
                    files.push(file.clone());
                }
            }
            files.sort();
            return Ok(WeightFiles {
                paths: files,
                index: Some(map),
            });
        }
        let single = dir.join(index.trim_end_matches(".index.json"));
        if single.is_file() {
            return Ok(WeightFiles {
                paths: vec![single],
                index: None,
            });
        }
    }
    for ext in ["safetensors", "bin"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| PhiError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .collect();
        if !found.is_empty() {
            found.sort();
            return Ok(WeightFiles {
                paths: found,
                index: None,
            });
        }
    }
    Err(PhiError::weights(
        dir,
        None,
        "no weights found: expected model.safetensors, model.safetensors.index.json, \
         pytorch_model.bin or pytorch_model.bin.index.json",
    ))
}

/// Reads a sharded checkpoint's index: `{"weight_map": {key: file}}`.
fn read_index(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(path).map_err(|e| PhiError::io(path, e))?;
    let fail = |m: &str| PhiError::weights(path, None, m.to_owned());
    let value: Value =
        serde_json::from_str(&text).map_err(|e| fail(&format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| fail("has no `weight_map` object"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    map.iter()
        .map(|(key, file)| {
            let name = file
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\') && *f != "..")
                .ok_or_else(|| {
                    PhiError::weights(
                        path,
                        Some(key),
                        format!("shard name {file} is not a file name"),
                    )
                })?;
            Ok((key.clone(), dir.join(name)))
        })
        .collect()
}
