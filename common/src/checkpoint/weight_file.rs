//! Finding a checkpoint's weight files and reading them whatever their format.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ggml_type::GgmlType;
use super::gguf_file::{self, GgufFile};
use super::pytorch_file::PytorchFile;
use super::safetensors_file::SafetensorsFile;
use crate::error::{PhiError, Result};

/// One weights file of a checkpoint.
pub enum WeightFile {
    /// A safetensors file.
    Safetensors(SafetensorsFile),
    /// A PyTorch `.bin` file (zip or legacy form).
    Pytorch(PytorchFile),
    /// A GGUF file (llama.cpp's), which also carries the config and tokenizer.
    Gguf(GgufFile),
}

impl WeightFile {
    /// Opens a weights file in whichever format it holds. The formats are told apart by what
    /// each must begin with, never by one byte: a safetensors file starts with its header's
    /// length, whose low byte is 0x80 or whose first two bytes are `PK` for some files. The
    /// file's name decides the order only when its content could be either; every format the
    /// content allows is tried, and the error names each attempt.
    pub fn open(path: &Path) -> Result<Self> {
        let candidates = candidate_formats(path)?;
        let mut attempts = Vec::new();
        for format in &candidates {
            let opened = match format {
                Format::Safetensors => SafetensorsFile::open(path).map(Self::Safetensors),
                Format::Pytorch => PytorchFile::open(path).map(Self::Pytorch),
                Format::Gguf => GgufFile::open(path).map(Self::Gguf),
            };
            match opened {
                Ok(file) => return Ok(file),
                // One candidate: its own error, as it is.
                Err(e) if candidates.len() == 1 => return Err(e),
                Err(e) => attempts.push(format!("as {}: {}", format.name(), reason(&e))),
            }
        }
        Err(PhiError::weights(
            path,
            None,
            format!(
                "cannot read this file in any format it could be in (tried {})",
                attempts.join("; ")
            ),
        ))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            Self::Safetensors(f) => f.path(),
            Self::Pytorch(f) => f.path(),
            Self::Gguf(f) => f.path(),
        }
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let own = |(k, s): (&str, &[usize])| (k.to_owned(), s.to_vec());
        match self {
            Self::Safetensors(f) => f.shapes().map(own).collect(),
            Self::Pytorch(f) => f.shapes().map(own).collect(),
            Self::Gguf(f) => f.shapes().map(own).collect(),
        }
    }

    /// A tensor as f32 values, or only rows `rows` of its first dimension.
    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        match self {
            Self::Safetensors(f) => f.read_f32(key, rows),
            Self::Pytorch(f) => f.read_f32(key, rows),
            Self::Gguf(f) => f.read_f32(key, rows),
        }
    }

    /// A tensor's (or its rows') bytes as stored, when the file stores it in a type phi-zoo
    /// computes with as it is (GGUF's F16, BF16, `Q8_0`, `Q4_0`): `None` for other files.
    pub fn read_stored(
        &self,
        key: &str,
        rows: Option<Range<usize>>,
    ) -> Result<Option<(GgmlType, Vec<u8>)>> {
        match self {
            Self::Gguf(f) => f.read_stored(key, rows).map(Some),
            _ => Ok(None),
        }
    }

    /// A tensor's stored type, for GGUF files.
    pub fn stored_type(&self, key: &str) -> Option<GgmlType> {
        match self {
            Self::Gguf(f) => f.tensor_type(key),
            _ => None,
        }
    }
}

/// The weights formats a file can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    /// PyTorch's `torch.save`: a zip archive, or (before PyTorch 1.6) a sequence of pickles.
    Pytorch,
    /// llama.cpp's GGUF.
    Gguf,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Pytorch => "a PyTorch file",
            Self::Gguf => "GGUF",
        }
    }

    /// The format a file's extension names, if it names one.
    fn by_name(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "safetensors" => Some(Self::Safetensors),
            "bin" | "pt" | "pth" | "ckpt" => Some(Self::Pytorch),
            "gguf" => Some(Self::Gguf),
            _ => None,
        }
    }
}

/// The formats `path` may hold, likeliest first. Its first bytes rule formats in or out:
/// - safetensors: a little-endian u64 header length that fits in the file, then `{`;
/// - PyTorch zip: a zip local file header, `PK\x03\x04`;
/// - PyTorch legacy pickle: the PROTO opcode 0x80 and a protocol number 2..=5;
/// - GGUF: `GGUF`.
///
/// When the content allows both, the file's name goes first. When it allows neither, the
/// name's format (or safetensors) is tried alone so that its own error explains the file.
fn candidate_formats(path: &Path) -> Result<Vec<Format>> {
    let mut file = std::fs::File::open(path).map_err(|e| PhiError::io(path, e))?;
    let length = file.metadata().map_err(|e| PhiError::io(path, e))?.len();
    let mut head = [0u8; 9];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PhiError::io(path, e)),
        }
    }
    let head = &head[..filled];
    let safetensors = head.len() == 9 && {
        let header_length = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        header_length >= 2 && header_length <= length - 8 && head[8] == b'{'
    };
    let pytorch = head.starts_with(b"PK\x03\x04")
        || (head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]));
    let gguf = head.starts_with(gguf_file::MAGIC);
    let mut formats: Vec<Format> = [
        (Format::Safetensors, safetensors),
        (Format::Pytorch, pytorch),
        (Format::Gguf, gguf),
    ]
    .into_iter()
    .filter_map(|(format, possible)| possible.then_some(format))
    .collect();
    let named = Format::by_name(path);
    match named {
        Some(named) if formats.contains(&named) => formats.sort_by_key(|f| *f != named),
        _ if formats.is_empty() => formats.push(named.unwrap_or(Format::Safetensors)),
        _ => {}
    }
    Ok(formats)
}

/// An error's message without the file name, which the combined error gives once.
fn reason(error: &PhiError) -> String {
    match error {
        PhiError::Weights { key, message, .. } => match key {
            Some(key) => format!("tensor `{key}`: {message}"),
            None => message.clone(),
        },
        other => other.to_string(),
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
