//! A safetensors file, memory-mapped, with its header checked key by key.
//!
//! The header is parsed here rather than by the `safetensors` crate so that every problem names
//! the tensor it concerns: a truncated file or a header that lies about sizes is a user's broken
//! download, and the message must say which file and which key.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use super::dtype::StoredDType;
use crate::error::{PhiError, Result};

/// The header length prefix is a u64; anything above this is not a Phi checkpoint header.
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

struct Entry {
    dtype: StoredDType,
    shape: Vec<usize>,
    /// Byte range inside the data section.
    bytes: Range<usize>,
}

pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    entries: BTreeMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| PhiError::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as `self`; a weights file rewritten while
        // a model loads from it is outside what any loader can defend against (candle and
        // safetensors' own Python loader map files the same way).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| PhiError::io(path, e))?;
        let fail = |key: Option<&str>, message: String| PhiError::weights(path, key, message);

        if map.len() < 8 {
            return Err(fail(
                None,
                format!(
                    "truncated: {} bytes, shorter than the 8-byte header length",
                    map.len()
                ),
            ));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(fail(
                None,
                format!("header length {header_len} is implausible: not a safetensors file?"),
            ));
        }
        let data_start = 8 + header_len as usize;
        if data_start > map.len() {
            return Err(fail(
                None,
                format!(
                    "truncated: the header claims {header_len} bytes but the file has {} after the length",
                    map.len() - 8
                ),
            ));
        }
        let header: Value = serde_json::from_slice(&map[8..data_start])
            .map_err(|e| fail(None, format!("header is not valid JSON: {e}")))?;
        let Value::Object(header) = header else {
            return Err(fail(None, "header is not a JSON object".into()));
        };
        let data_len = map.len() - data_start;
        let mut entries = BTreeMap::new();
        for (key, info) in &header {
            if key == "__metadata__" {
                continue;
            }
            let entry = parse_entry(info).map_err(|m| fail(Some(key), m))?;
            if entry.bytes.end > data_len {
                return Err(fail(
                    Some(key),
                    format!(
                        "data ends at byte {} but the file holds {data_len} bytes of data: truncated?",
                        entry.bytes.end
                    ),
                ));
            }
            entries.insert(key.clone(), entry);
        }
        Ok(Self {
            path: path.to_owned(),
            map,
            data_start,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.shape.as_slice()))
    }

    /// The tensor as f32, or only rows `rows` of its first dimension.
    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| PhiError::weights(&self.path, Some(key), "not in this file"))?;
        let row_bytes = entry.shape.iter().skip(1).product::<usize>() * entry.dtype.size();
        let range = match rows {
            Some(r) => {
                entry.bytes.start + r.start * row_bytes..entry.bytes.start + r.end * row_bytes
            }
            None => entry.bytes.clone(),
        };
        let bytes = &self.map[self.data_start + range.start..self.data_start + range.end];
        Ok(entry.dtype.decode(bytes))
    }
}

fn parse_entry(info: &Value) -> std::result::Result<Entry, String> {
    let dtype_name = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("header entry has no `dtype`")?;
    let dtype = StoredDType::from_safetensors(dtype_name).ok_or_else(|| {
        format!("dtype {dtype_name} is not supported (F32, F16, BF16 or F64 expected)")
    })?;
    let shape = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("header entry has no `shape` list")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or("`shape` holds something other than non-negative integers")?;
    let offsets = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o[0].as_u64()? as usize, o[1].as_u64()? as usize)))
        .ok_or("`data_offsets` is not a pair of non-negative integers")?;
    let (start, end) = offsets;
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    let expected = elements
        .checked_mul(dtype.size())
        .ok_or("shape overflows")?;
    if end < start || end - start != expected {
        return Err(format!(
            "data_offsets [{start}, {end}] span {} bytes but shape {shape:?} of {dtype_name} needs {expected}",
            end.wrapping_sub(start) as i64
        ));
    }
    Ok(Entry {
        dtype,
        shape,
        bytes: start..end,
    })
}
