//! A GGUF file (llama.cpp's format): typed metadata, then tensor descriptions, then the aligned
//! tensor data, read tensor by tensor.
//!
//! Every count and length in the header is checked against the bytes left in the file before
//! anything is allocated from it, so a truncated download or a header that lies fails with the
//! file and the field named rather than a huge allocation. Shapes are given in transformers'
//! order (`[out, in]`): GGUF lists a tensor's dimensions innermost first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::ggml_type::GgmlType;
use super::safetensors_file::read_exact_at;
use crate::error::{PhiError, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on a tensor's dimensions.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type, widened.
    Uint(u64),
    /// Any signed integer type, widened.
    Int(i64),
    /// f32 or f64, widened.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values of one type.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::Uint(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// What kind of value this is, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Uint(_) => "an unsigned integer",
            Self::Int(_) => "a signed integer",
            Self::Float(_) => "a float",
            Self::Bool(_) => "a bool",
            Self::Str(_) => "a string",
            Self::Array(_) => "an array",
        }
    }
}

/// One tensor's description.
struct Entry {
    ty: GgmlType,
    /// transformers' order: the outermost dimension first.
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    bytes: Range<u64>,
}

/// An opened GGUF file: its metadata and tensor table (data is read on request).
pub struct GgufFile {
    path: PathBuf,
    file: File,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    entries: BTreeMap<String, Entry>,
}

impl GgufFile {
    /// Opens and checks `path`: header, metadata, and every tensor's type, shape and extent.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| PhiError::io(path, e))?;
        let len = file.metadata().map_err(|e| PhiError::io(path, e))?.len();
        let mut header = Header {
            path,
            reader: BufReader::new(file.try_clone().map_err(|e| PhiError::io(path, e))?),
            pos: 0,
            len,
        };
        let mut magic = [0u8; 4];
        header.bytes(&mut magic, "the magic number")?;
        if &magic != MAGIC {
            return Err(header.fail(None, format!("not a GGUF file (it starts {magic:02x?})")));
        }
        let version = header.u32("the version")?;
        if !(2..=3).contains(&version) {
            let hint = if version.swap_bytes() <= 3 {
                " (a big-endian file: only little-endian GGUF is read)"
            } else {
                ""
            };
            return Err(header.fail(
                None,
                format!("GGUF version {version} is not supported (2 and 3 are){hint}"),
            ));
        }
        // Each tensor description takes at least 24 bytes and each metadata entry 12: counts
        // beyond what the file could hold are lies, refused before anything is sized by them.
        let tensor_count = header.u64("the tensor count")?;
        let kv_count = header.u64("the metadata count")?;
        let left = header.left();
        if tensor_count > left / 24 {
            return Err(header.fail(
                None,
                format!(
                    "the header claims {tensor_count} tensors, more than its {len} bytes hold \
                     (truncated, or a count that lies)"
                ),
            ));
        }
        if kv_count > left / 12 {
            return Err(header.fail(
                None,
                format!(
                    "the header claims {kv_count} metadata entries, more than its {len} bytes \
                     hold (truncated, or a count that lies)"
                ),
            ));
        }
        let mut metadata = BTreeMap::new();
        for n in 0..kv_count {
            let key = header.string(&format!("metadata entry {n}'s key"))?;
            let ty = header.u32(&format!("the type of metadata `{key}`"))?;
            let value = header.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(header.fail(None, format!("metadata `{key}` is given twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(value) => value
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| {
                    header.fail(
                        None,
                        format!("metadata `general.alignment` is {value:?}, not a power of two"),
                    )
                })?,
        };
        let mut infos = Vec::new();
        for n in 0..tensor_count {
            let name = header.string(&format!("tensor {n}'s name"))?;
            let dims = header.u32(&format!("tensor `{name}`'s dimension count"))?;
            if dims == 0 || dims > MAX_DIMS {
                return Err(header.fail(
                    Some(&name),
                    format!("{dims} dimensions (ggml has 1 to {MAX_DIMS})"),
                ));
            }
            let mut ne = Vec::new();
            for d in 0..dims {
                ne.push(header.u64(&format!("tensor `{name}`'s dimension {d}"))?);
            }
            let ty = header.u32(&format!("tensor `{name}`'s type"))?;
            let offset = header.u64(&format!("tensor `{name}`'s offset"))?;
            infos.push((name, ne, ty, offset));
        }
        let data_start = header.pos.next_multiple_of(alignment);
        let mut entries = BTreeMap::new();
        for (name, ne, ty, offset) in infos {
            let fail = |message: String| PhiError::weights(path, Some(&name), message);
            let ty = GgmlType::from_id(ty).map_err(|what| {
                fail(format!(
                    "{what} cannot be read; phi-zoo reads F32, F16, BF16, Q8_0, Q4_0 and Q6_K"
                ))
            })?;
            if ne.contains(&0) {
                return Err(fail(format!("dimensions {ne:?} include an empty one")));
            }
            let values = ne
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .ok_or_else(|| fail(format!("dimensions {ne:?} overflow")))?;
            let row_bytes = ty.row_bytes(ne[0]).ok_or_else(|| {
                fail(format!(
                    "{} stores rows in blocks of {} values: a row of {} is not whole blocks",
                    ty.name(),
                    ty.block_values(),
                    ne[0]
                ))
            })?;
            let size = (values / ne[0])
                .checked_mul(row_bytes)
                .ok_or_else(|| fail(format!("dimensions {ne:?} overflow")))?;
            if !offset.is_multiple_of(alignment) {
                return Err(fail(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(fail(format!("data offset {offset} overflows")));
            };
            if end > len {
                return Err(fail(format!(
                    "truncated: its {size} bytes at {start} end past the file's {len} bytes"
                )));
            }
            let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
            let entry = Entry {
                ty,
                shape,
                bytes: start..end,
            };
            if entries.insert(name.clone(), entry).is_some() {
                return Err(fail("is stored twice".into()));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            version,
            metadata,
            entries,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// Every tensor's name and shape (transformers' order).
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.shape.as_slice()))
    }

    /// A tensor's element type.
    pub fn tensor_type(&self, key: &str) -> Option<GgmlType> {
        self.entries.get(key).map(|e| e.ty)
    }

    /// A tensor's stored bytes, or those of rows `rows` of its first (transformers') dimension.
    pub fn read_stored(
        &self,
        key: &str,
        rows: Option<Range<usize>>,
    ) -> Result<(GgmlType, Vec<u8>)> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| PhiError::weights(&self.path, Some(key), "not in the file"))?;
        let outer = entry.shape[0] as u64;
        let row_bytes = (entry.bytes.end - entry.bytes.start) / outer.max(1);
        let range = match rows {
            None => entry.bytes.clone(),
            Some(rows) if rows.end as u64 <= outer && rows.start <= rows.end => {
                entry.bytes.start + rows.start as u64 * row_bytes
                    ..entry.bytes.start + rows.end as u64 * row_bytes
            }
            Some(rows) => {
                return Err(PhiError::weights(
                    &self.path,
                    Some(key),
                    format!("rows {rows:?} are outside its {outer}"),
                ));
            }
        };
        let mut bytes = vec![0u8; (range.end - range.start) as usize];
        read_exact_at(&self.file, &mut bytes, range.start)
            .map_err(|e| PhiError::weights(&self.path, Some(key), format!("cannot read: {e}")))?;
        Ok((entry.ty, bytes))
    }

    /// A tensor (or rows of it) as f32 values, dequantized.
    pub fn read_f32(&self, key: &str, rows: Option<Range<usize>>) -> Result<Vec<f32>> {
        let (ty, bytes) = self.read_stored(key, rows)?;
        let shape = &self.entries[key].shape;
        // A vector's rows are its values: dequantize what was read as one row.
        let cols = match shape[..] {
            [_] => bytes.len() / ty.block_bytes() * ty.block_values(),
            _ => *shape.last().expect("at least one dimension"),
        };
        Ok(ty.to_f32(&bytes, cols))
    }
}

/// The header being parsed: a buffered reader that knows how many bytes the file has left.
struct Header<'a> {
    path: &'a Path,
    reader: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Header<'_> {
    fn fail(&self, key: Option<&str>, message: String) -> PhiError {
        PhiError::weights(self.path, key, message)
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bytes(&mut self, out: &mut [u8], what: &str) -> Result<()> {
        if out.len() as u64 > self.left() {
            return Err(self.fail(
                None,
                format!(
                    "truncated: the file ends at byte {} inside {what}",
                    self.len
                ),
            ));
        }
        self.reader
            .read_exact(out)
            .map_err(|e| self.fail(None, format!("cannot read {what}: {e}")))?;
        self.pos += out.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.bytes(&mut out, what)?;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.left() {
            return Err(self.fail(
                None,
                format!("{what} claims {len} bytes, more than the file has left (truncated?)"),
            ));
        }
        let mut bytes = vec![0u8; len as usize];
        self.bytes(&mut bytes, what)?;
        String::from_utf8(bytes).map_err(|_| self.fail(None, format!("{what} is not UTF-8")))
    }

    /// A value of GGUF type `ty` for metadata `key` (`depth` levels of arrays down).
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        let what = format!("metadata `{key}`");
        Ok(match ty {
            0 => MetaValue::Uint(self.array::<1>(&what)?[0] as u64),
            1 => MetaValue::Int(self.array::<1>(&what)?[0] as i8 as i64),
            2 => MetaValue::Uint(u16::from_le_bytes(self.array(&what)?) as u64),
            3 => MetaValue::Int(i16::from_le_bytes(self.array(&what)?) as i64),
            4 => MetaValue::Uint(self.u32(&what)? as u64),
            5 => MetaValue::Int(i32::from_le_bytes(self.array(&what)?) as i64),
            // The shortest decimal that rounds to the stored f32 (1e-5, not 9.99999974e-6):
            // the value the writer meant, before it was narrowed.
            6 => {
                let value = f32::from_le_bytes(self.array(&what)?);
                MetaValue::Float(value.to_string().parse().unwrap_or(value as f64))
            }
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                other => {
                    return Err(self.fail(None, format!("{what} is a bool stored as {other}")));
                }
            },
            8 => MetaValue::Str(self.string(&what)?),
            9 if depth == 0 => {
                let item_ty = self.u32(&what)?;
                let count = self.u64(&what)?;
                // The smallest item (a u8 or bool) takes a byte, a string 8.
                let least = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                if count > self.left() / least {
                    return Err(self.fail(
                        None,
                        format!(
                            "{what} claims {count} items, more than the file has left (truncated?)"
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            9 => return Err(self.fail(None, format!("{what} nests arrays in arrays"))),
            10 => MetaValue::Uint(self.u64(&what)?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(self.fail(None, format!("{what} has unknown value type {other}"))),
        })
    }
}
