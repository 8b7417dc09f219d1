//! A safetensors file, read tensor by tensor, with its header checked key by key.
//!
//! Tensors are read with positioned reads rather than a memory map: pages of a mapped file count
//! towards the process's resident memory once touched, so mapping a 5.7 GB checkpoint while
//! building a 5.7 GB model doubled peak RSS. Reading one tensor at a time keeps the peak at the
//! model plus its largest tensor.
//!
//! The header is parsed here rather than by the `safetensors` crate so that every problem names
//! the tensor it concerns: a truncated file or a header that lies about sizes is a user's broken
//! download, and the message must say which file and which key.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;
use std::io::Read;

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
    file: File,
    data_start: usize,
    entries: BTreeMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| PhiError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| PhiError::io(path, e))?.len() as usize;
        let fail = |key: Option<&str>, message: String| PhiError::weights(path, key, message);

        if file_len < 8 {
            return Err(fail(
                None,
                format!("truncated: {file_len} bytes, shorter than the 8-byte header length"),
            ));
        }
        let mut prefix = [0u8; 8];
        file.read_exact(&mut prefix)
            .map_err(|e| PhiError::io(path, e))?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > MAX_HEADER_BYTES {
            return Err(fail(
                None,
                format!("header length {header_len} is implausible: not a safetensors file?"),
            ));
        }
        let data_start = 8 + header_len as usize;
        if data_start > file_len {
            return Err(fail(
                None,
                format!(
                    "truncated: the header claims {header_len} bytes but the file has {} after the length",
                    file_len - 8
                ),
            ));
        }
        let mut header_bytes = vec![0u8; header_len as usize];
        file.read_exact(&mut header_bytes)
            .map_err(|e| PhiError::io(path, e))?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .map_err(|e| fail(None, format!("header is not valid JSON: {e}")))?;
        let Value::Object(header) = header else {
            return Err(fail(None, "header is not a JSON object".into()));
        };
        let data_len = file_len - data_start;
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
        // Tensors never share bytes (the format's rule): overlapping ranges mean a header that
        // lies, and reading one tensor's bytes as another's would be silently wrong.
        let mut ranges: Vec<(&String, &Range<usize>)> =
            entries.iter().map(|(k, e)| (k, &e.bytes)).collect();
        ranges.sort_by_key(|(_, r)| (r.start, r.end));
        for pair in ranges.windows(2) {
            let ((first, a), (second, b)) = (pair[0], pair[1]);
            if b.start < a.end && !a.is_empty() && !b.is_empty() {
                return Err(fail(
                    Some(second),
                    format!(
                        "data_offsets [{}, {}] overlap tensor `{first}`'s [{}, {}]",
                        b.start, b.end, a.start, a.end
                    ),
                ));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
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
        let offset = (self.data_start + range.start) as u64;
        let read_error = |e: std::io::Error| {
            PhiError::weights(&self.path, Some(key), format!("cannot read the data: {e}"))
        };
        // f32 on a little-endian host is already the layout we want: read straight into the
        // values, sparing a second buffer as large as the tensor and a pass over it (for a
        // phi-1.5 in f32, 5.7 GB of each).
        if entry.dtype == StoredDType::F32 && cfg!(target_endian = "little") {
            let mut values = vec![0f32; range.len() / 4];
            read_exact_at(&self.file, bytemuck::cast_slice_mut(&mut values), offset)
                .map_err(read_error)?;
            return Ok(values);
        }
        let mut bytes = vec![0u8; range.len()];
        read_exact_at(&self.file, &mut bytes, offset).map_err(read_error)?;
        Ok(entry.dtype.decode(&bytes))
    }
}

/// Fills `buf` from `offset` without moving a shared cursor (so `&self` suffices).
#[cfg(unix)]
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_exact_at(
    file: &File,
    mut buf: &mut [u8],
    mut offset: u64,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
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
