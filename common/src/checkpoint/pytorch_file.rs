//! A PyTorch `.bin` weights file in either form `torch.save` has written, with any pickle
//! protocol (2 is torch's default; 4 and 5 when asked for):
//!
//! - zip (torch >= 1.6): `<name>/data.pkl` pickles the state dict, whose tensors name storages
//!   by key; storage `k` is the archive entry `<name>/data/k`, stored uncompressed.
//! - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): one stream of pickles
//!   (magic number, protocol version, system info, the state dict, the storage keys in order),
//!   then each storage as an 8-byte element count and its raw bytes.
//!
//! Only the pickles are read at open; a tensor's bytes are read from the file when asked for,
//! with positioned reads, as for safetensors. The pickles are read by `pickle`, which runs no
//! code and bounds what it allocates by the file's size.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::dtype::StoredDType;
use super::pickle::{self, TensorCall, Value};
use super::safetensors_file::read_exact_at;
use crate::error::{PhiError, Result};

/// The legacy format's first pickle: this integer.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The largest pickle read into memory (a state dict's pickle is kilobytes to a few MB).
const MAX_PICKLE_BYTES: u64 = 1 << 30;

/// One tensor: a view of a storage.
struct Entry {
    /// The element type, or the storage type's name when it is not a float type.
    dtype: std::result::Result<StoredDType, String>,
    shape: Vec<usize>,
    /// The storage's bytes in the file.
    storage: Range<u64>,
    /// Element offset and strides within the storage.
    offset: usize,
    stride: Vec<usize>,
}

pub struct PytorchFile {
    path: PathBuf,
    file: File,
    tensors: BTreeMap<String, Entry>,
}

/// A storage a tensor refers to: its element type and where its bytes lie.
struct Storage {
    dtype: std::result::Result<StoredDType, String>,
    bytes: Range<u64>,
}

impl PytorchFile {
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |m: String| PhiError::weights(path, None, format!("as a PyTorch file: {m}"));
        let mut file = File::open(path).map_err(|e| PhiError::io(path, e))?;
        let mut head = [0u8; 4];
        let n = file.read(&mut head).map_err(|e| PhiError::io(path, e))?;
        let (calls, storages) = if n == 4 && head == *b"PK\x03\x04" {
            read_zip(&file).map_err(fail)?
        } else {
            read_legacy(&file).map_err(fail)?
        };
        let mut tensors = BTreeMap::new();
        for (key, call) in calls {
            let entry = entry(&call, &storages).map_err(|m| {
                PhiError::weights(path, Some(&key), format!("as a PyTorch file: {m}"))
            })?;
            tensors.insert(key, entry);
        }
        if tensors.is_empty() {
            return Err(fail("holds no tensors (not a state dict?)".into()));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.shape.as_slice()))
    }

    /// The tensor as f32, or only rows `rows` of its first dimension.
    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        let fail = |m: String| PhiError::weights(&self.path, Some(key), m);
        let entry = self
            .tensors
            .get(key)
            .ok_or_else(|| fail("not in this file".into()))?;
        let dtype = entry.dtype.clone().map_err(|name| {
            fail(format!(
                "storage type {name} is not supported (a float type expected)"
            ))
        })?;
        let size = dtype.size();
        let rows = rows.unwrap_or(0..entry.shape.first().copied().unwrap_or(1));
        let row: usize = entry.shape.iter().skip(1).product();
        // Contiguous (the usual case): one read of the rows wanted.
        let contiguous = contiguous_strides(&entry.shape) == entry.stride;
        let (first, count) = if contiguous {
            (entry.offset + rows.start * row, rows.len() * row)
        } else {
            // Any other view: read the span it covers and gather.
            let span = 1 + entry
                .shape
                .iter()
                .zip(&entry.stride)
                .map(|(&d, &s)| d.saturating_sub(1) * s)
                .sum::<usize>();
            (
                entry.offset,
                if entry.shape.contains(&0) { 0 } else { span },
            )
        };
        let start = entry.storage.start + (first * size) as u64;
        let end = start + (count * size) as u64;
        if end > entry.storage.end {
            return Err(fail(format!(
                "its view ends past its storage ({} > {} bytes)",
                end - entry.storage.start,
                entry.storage.end - entry.storage.start
            )));
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        read_exact_at(&self.file, &mut bytes, start)
            .map_err(|e| fail(format!("cannot read the data: {e}")))?;
        let values = dtype.decode(&bytes);
        if contiguous {
            return Ok(values);
        }
        let mut out = Vec::with_capacity(rows.len() * row);
        let inner = &entry.shape[1.min(entry.shape.len())..];
        let inner_stride = &entry.stride[1.min(entry.stride.len())..];
        for r in rows {
            let base = r * entry.stride.first().copied().unwrap_or(0);
            gather(&values, base, inner, inner_stride, &mut out);
        }
        Ok(out)
    }
}

/// Appends the elements of a strided view (row-major order).
fn gather(values: &[f32], base: usize, shape: &[usize], stride: &[usize], out: &mut Vec<f32>) {
    match shape {
        [] => out.push(values[base]),
        [n, rest @ ..] => {
            for i in 0..*n {
                gather(values, base + i * stride[0], rest, &stride[1..], out);
            }
        }
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// A tensor's entry from its rebuild call, checked against its storage.
fn entry(
    call: &TensorCall,
    storages: &HashMap<String, Storage>,
) -> std::result::Result<Entry, String> {
    let key = storage_key(&call.storage).ok_or("its storage is not a torch storage reference")?;
    let storage = storages
        .get(&key)
        .ok_or_else(|| format!("its storage {key} is not in the file"))?;
    if call.shape.len() != call.stride.len() {
        return Err(format!(
            "shape {:?} and stride {:?} disagree",
            call.shape, call.stride
        ));
    }
    // The last element the view reaches must lie inside the storage.
    let size = storage.dtype.as_ref().map(|d| d.size()).unwrap_or(1) as u128;
    let last = if call.shape.contains(&0) {
        0
    } else {
        call.offset as u128
            + call
                .shape
                .iter()
                .zip(&call.stride)
                .map(|(&d, &s)| (d as u128 - 1) * s as u128)
                .sum::<u128>()
            + 1
    };
    let available = (storage.bytes.end - storage.bytes.start) as u128;
    if last * size > available {
        return Err(format!(
            "shape {:?} at offset {} needs {} bytes of a storage of {available}",
            call.shape,
            call.offset,
            last * size
        ));
    }
    Ok(Entry {
        dtype: storage.dtype.clone(),
        shape: call.shape.clone(),
        storage: storage.bytes.clone(),
        offset: call.offset,
        stride: call.stride.clone(),
    })
}

/// A persistent id `("storage", storage_type, key, location, numel, ...)`'s key.
fn storage_key(storage: &Value) -> Option<String> {
    let Value::Persistent(id) = storage else {
        return None;
    };
    let items = id.items()?;
    (items.first()?.as_str()? == "storage").then_some(())?;
    Some(items.get(2)?.as_str()?.to_owned())
}

/// A persistent id's storage type, as an element type.
fn storage_dtype(id: &[Value]) -> std::result::Result<StoredDType, String> {
    let name = match id.get(1) {
        Some(Value::Global(global)) => global.1.clone(),
        _ => return Err("(unnamed)".into()),
    };
    match name.as_str() {
        "FloatStorage" => Ok(StoredDType::F32),
        "HalfStorage" => Ok(StoredDType::F16),
        "BFloat16Storage" => Ok(StoredDType::BF16),
        "DoubleStorage" => Ok(StoredDType::F64),
        _ => Err(name),
    }
}

/// A state's tensors, by name; nested dicts (a `{"state_dict": {...}}` wrapper) give dotted names.
type TensorCalls = Vec<(String, Rc<TensorCall>)>;

/// Every tensor in `value`'s dicts, walked once.
fn tensor_calls(value: &Value) -> TensorCalls {
    fn walk(value: &Value, prefix: &str, depth: usize, out: &mut TensorCalls) {
        let Value::Dict(dict) = value else { return };
        if depth > 8 {
            return;
        }
        for (key, item) in dict.borrow().iter() {
            let Some(key) = key.as_str() else { continue };
            let name = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            match item {
                Value::Tensor(call) => out.push((name, call.clone())),
                Value::Dict(_) => walk(item, &name, depth + 1, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(value, "", 0, &mut out);
    out
}

/// Every storage the tensors refer to: key → its persistent id's items.
fn storage_ids(calls: &TensorCalls) -> HashMap<String, Vec<Value>> {
    calls
        .iter()
        .filter_map(|(_, call)| {
            let Value::Persistent(id) = &call.storage else {
                return None;
            };
            Some((storage_key(&call.storage)?, id.items()?))
        })
        .collect()
}

/// The zip form: the state dict and each storage's bytes (archive entries stored uncompressed).
fn read_zip(file: &File) -> std::result::Result<(TensorCalls, HashMap<String, Storage>), String> {
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut pickle_entry = None;
    let mut entries: HashMap<String, (Range<u64>, bool)> = HashMap::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .map_err(|e| format!("zip entry {index}: {e}"))?;
        let name = entry.name().to_owned();
        let start = entry
            .data_start()
            .ok_or_else(|| format!("zip entry {name}: no data offset"))?;
        let stored = entry.compression() == zip::CompressionMethod::Stored;
        let range = start..start + entry.compressed_size();
        if name.ends_with("/data.pkl") && pickle_entry.is_none() {
            pickle_entry = Some((index, entry.size()));
        }
        entries.insert(name, (range, stored));
    }
    let (index, size) = pickle_entry.ok_or("the zip archive has no data.pkl")?;
    if size > MAX_PICKLE_BYTES {
        return Err(format!("data.pkl is {size} bytes: not a state dict"));
    }
    let mut data = Vec::with_capacity(size as usize);
    let mut entry = archive
        .by_index(index)
        .map_err(|e| format!("data.pkl: {e}"))?;
    let prefix = entry.name().trim_end_matches("data.pkl").to_owned();
    entry
        .by_ref()
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| format!("data.pkl: {e}"))?;
    drop(entry);
    let (state, _) = pickle::read(&data, 0).map_err(|e| format!("data.pkl: {e}"))?;
    let calls = tensor_calls(&state);
    let mut storages = HashMap::new();
    for (key, id) in storage_ids(&calls) {
        let name = format!("{prefix}data/{key}");
        let (bytes, stored) = entries
            .get(&name)
            .cloned()
            .ok_or_else(|| format!("storage {key} has no entry {name}"))?;
        if !stored {
            return Err(format!(
                "{name} is compressed; torch.save stores storages as they are"
            ));
        }
        storages.insert(
            key,
            Storage {
                dtype: storage_dtype(&id),
                bytes,
            },
        );
    }
    Ok((calls, storages))
}

/// The legacy form: a stream of pickles, then the storages in the order of the keys pickle.
fn read_legacy(
    file: &File,
) -> std::result::Result<(TensorCalls, HashMap<String, Storage>), String> {
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    // The pickles come first and are small: read a window of the file's start, widening it
    // while they run past it.
    let mut window = length.min(1 << 20);
    let (state, keys, at) = loop {
        let mut head = vec![0u8; window as usize];
        read_exact_at(file, &mut head, 0).map_err(|e| e.to_string())?;
        match legacy_pickles(&head) {
            Err(e)
                if e.starts_with("pickle truncated") && window < length.min(MAX_PICKLE_BYTES) =>
            {
                window = (window * 4).min(length).min(MAX_PICKLE_BYTES);
            }
            other => break other?,
        }
    };
    let keys: Vec<String> = keys
        .items()
        .ok_or("the storage key list is not a list")?
        .iter()
        .map(|k| k.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or("a storage key is not a string")?;
    let calls = tensor_calls(&state);
    let ids = storage_ids(&calls);
    let mut storages = HashMap::new();
    let mut position = at as u64;
    for key in keys {
        let mut count = [0u8; 8];
        read_exact_at(file, &mut count, position)
            .map_err(|_| format!("storage {key}: truncated before its length"))?;
        let count = u64::from_le_bytes(count);
        let id = ids.get(&key);
        let dtype = id
            .map(|id| storage_dtype(id))
            .unwrap_or_else(|| Err("(unreferenced)".into()));
        // An unreferenced storage of unknown type cannot be skipped: its element size is unknown.
        let size = match (&dtype, id) {
            (Ok(d), _) => d.size() as u64,
            (Err(name), Some(_)) => element_size(name)
                .ok_or_else(|| format!("storage {key}: unknown storage type {name}"))?,
            (Err(_), None) => return Err(format!("storage {key} is listed but never used")),
        };
        let start = position + 8;
        let end = count
            .checked_mul(size)
            .and_then(|b| start.checked_add(b))
            .filter(|&end| end <= length)
            .ok_or_else(|| {
                format!("storage {key}: {count} elements run past the end of the file")
            })?;
        storages.insert(
            key,
            Storage {
                dtype,
                bytes: start..end,
            },
        );
        position = end;
    }
    Ok((calls, storages))
}

/// The legacy stream's five pickles: the state dict, the storage keys, and where they end.
fn legacy_pickles(head: &[u8]) -> std::result::Result<(Value, Value, usize), String> {
    let (magic, at) = pickle::read(head, 0)?;
    if !matches!(&magic, Value::Bytes(b) if b[..] == LEGACY_MAGIC) {
        return Err(
            "neither a zip archive nor a legacy torch.save stream (wrong magic number)".into(),
        );
    }
    let (_protocol, at) = pickle::read(head, at)?;
    let (_system, at) = pickle::read(head, at)?;
    let (state, at) = pickle::read(head, at)?;
    let (keys, at) = pickle::read(head, at)?;
    Ok((state, keys, at))
}

/// Element sizes of the storage types that are not float types, to skip past them.
fn element_size(storage_type: &str) -> Option<u64> {
    Some(match storage_type {
        "LongStorage" => 8,
        "IntStorage" => 4,
        "ShortStorage" => 2,
        "CharStorage" | "ByteStorage" | "BoolStorage" => 1,
        _ => return None,
    })
}
