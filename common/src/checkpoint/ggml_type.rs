//! ggml's tensor element types as GGUF files name them, and their conversion to f32.
//!
//! phi-zoo reads F32, F16, BF16, `Q8_0` and `Q4_0` tensors (the last four are also its own packed
//! weight formats, so such a tensor is used as stored) and `Q6_K`, which llama.cpp's quantizer
//! chooses for the LM head of a `Q4_0` model: a `Q6_K` tensor is dequantized when loaded. Every
//! other type is named in the error that refuses it.

use half::{bf16, f16};

use crate::model::{PackedWeight, WeightFormat};

/// A GGUF tensor's element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of 32 signed bytes with an f16 scale.
    Q8_0,
    /// Blocks of 32 four-bit values with an f16 scale.
    Q4_0,
    /// 256-value super-blocks: 16 groups of 16 six-bit values, each group an 8-bit scale, one
    /// f16 scale for the super-block.
    Q6K,
}

/// Values per `Q6_K` super-block.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml's number `id`, or the type's name (for the error) if phi-zoo cannot
    /// read it.
    pub fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            8 => Self::Q8_0,
            14 => Self::Q6K,
            30 => Self::Bf16,
            other => {
                let name = match other {
                    3 => "Q4_1",
                    6 => "Q5_0",
                    7 => "Q5_1",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    12 => "Q4_K",
                    13 => "Q5_K",
                    15 => "Q8_K",
                    16..=23 | 29 => "an IQ quantization",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    34 | 35 => "a ternary quantization",
                    39 => "MXFP4",
                    _ => return Err(format!("unknown tensor type {other}")),
                };
                return Err(format!("tensor type {name} (ggml type {other})"));
            }
        })
    }

    /// ggml's number for the type.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 8,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }

    /// The name llama.cpp gives the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q6K => "Q6_K",
        }
    }

    /// The packed weight format with this layout, if phi-zoo has one.
    pub fn weight_format(self) -> Option<WeightFormat> {
        match self {
            Self::F32 => Some(WeightFormat::F32),
            Self::F16 => Some(WeightFormat::F16),
            Self::Bf16 => Some(WeightFormat::Bf16),
            Self::Q8_0 => Some(WeightFormat::Q8_0),
            Self::Q4_0 => Some(WeightFormat::Q4_0),
            Self::Q6K => None,
        }
    }

    /// The type storing `format`'s layout.
    pub fn of_format(format: WeightFormat) -> Self {
        match format {
            WeightFormat::F32 => Self::F32,
            WeightFormat::F16 => Self::F16,
            WeightFormat::Bf16 => Self::Bf16,
            WeightFormat::Q8_0 => Self::Q8_0,
            WeightFormat::Q4_0 => Self::Q4_0,
        }
    }

    /// Values per block (a row is whole blocks).
    pub fn block_values(self) -> usize {
        match self.weight_format() {
            Some(format) => format.block_values(),
            None => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self.weight_format() {
            Some(format) => format.block_bytes(),
            // ql (4 low bits each), qh (2 high bits each), 16 group scales, the f16 scale.
            None => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes of a row of `cols` values, or `None` if the row is not whole blocks or its size
    /// overflows.
    pub fn row_bytes(self, cols: u64) -> Option<u64> {
        let block = self.block_values() as u64;
        cols.is_multiple_of(block)
            .then(|| (cols / block).checked_mul(self.block_bytes() as u64))
            .flatten()
    }

    /// Dequantizes `bytes` (whole rows of `cols` values) into f32 values.
    pub fn to_f32(self, bytes: &[u8], cols: usize) -> Vec<f32> {
        match self {
            // One conversion for the plain floats too: the packed formats' reference readers.
            Self::F32 | Self::F16 | Self::Bf16 | Self::Q8_0 | Self::Q4_0 => {
                let format = self.weight_format().expect("a packed format");
                let rows = bytes.len() / format.row_bytes(cols).max(1);
                PackedWeight::from_bytes(format, [rows, cols], bytes.to_vec())
                    .expect("whole rows, checked when the file was opened")
                    .dequantize()
            }
            Self::Q6K => {
                let mut out = vec![0.0f32; bytes.len() / self.block_bytes() * QK_K];
                for (block, values) in bytes
                    .chunks_exact(self.block_bytes())
                    .zip(out.chunks_exact_mut(QK_K))
                {
                    dequantize_q6_k(block, values);
                }
                out
            }
        }
    }
}

/// One `Q6_K` super-block: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d` (f16). Value `i` of each
/// 128-value half `h` takes its low four bits from a nibble of `ql` and its high two from `qh`,
/// is offset by −32, and is scaled by `d · scales[group]` for its group of 16.
fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let (ql, rest) = block.split_at(QK_K / 2);
    let (qh, rest) = rest.split_at(QK_K / 4);
    let (scales, d) = rest.split_at(QK_K / 16);
    let d = f16::from_le_bytes([d[0], d[1]]).to_f32();
    for half in 0..2 {
        let ql = &ql[half * 64..half * 64 + 64];
        let qh = &qh[half * 32..half * 32 + 32];
        let scales = &scales[half * 8..half * 8 + 8];
        let out = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            // The four values sharing qh[l]: at l, l + 32, l + 64 and l + 96 of the half.
            let six_bits = [
                (ql[l] & 0x0F) | ((qh[l] & 0x03) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 0x03) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 0x03) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 0x03) << 4),
            ];
            for (quarter, q) in six_bits.into_iter().enumerate() {
                let scale = scales[l / 16 + 2 * quarter] as i8 as f32;
                out[l + 32 * quarter] = d * scale * (q as i32 - 32) as f32;
            }
        }
    }
}

/// Encodes f32 values as a float type's bytes (the writer's plain tensors).
pub fn encode_float(ty: GgmlType, values: &[f32], out: &mut Vec<u8>) {
    for &v in values {
        match ty {
            GgmlType::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
            GgmlType::Bf16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
            _ => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}
