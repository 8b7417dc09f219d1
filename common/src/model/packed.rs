//! Linear weights packed for inference on the CPU: f16, bf16, and llama.cpp's `Q8_0` and `Q4_0`
//! block formats, laid out as GGUF stores them, so a GGUF tensor is used as it is read.
//!
//! Decoding on a CPU reads every weight once per token, so its speed is the memory those weights
//! take: 4 bytes a weight in f32, 2 in f16 or bf16, 34 bytes per 32 weights in `Q8_0` (an f16
//! scale `d` and 32 signed bytes `q`, `w = d·q`), 18 in `Q4_0` (an f16 scale and 32 four-bit
//! values, `w = d·(q − 8)`). A weight is `[out, in]`, each row its own run of blocks along `in`.
//! Every dequantized value is exact in f32 (an f16 times a small integer), so a product over
//! packed weights can be the f32 product over the dequantized ones, bit for bit.

use std::fmt;
use std::str::FromStr;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{PhiError, Result};

/// How a linear layer's weight is stored for inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// 32-bit floats (a plain tensor).
    F32,
    /// IEEE half precision, converted to f32 as it is read.
    F16,
    /// bfloat16, converted to f32 as it is read.
    Bf16,
    /// Blocks of 32 signed bytes with an f16 scale (llama.cpp's `Q8_0`).
    Q8_0,
    /// Blocks of 32 four-bit values with an f16 scale (llama.cpp's `Q4_0`).
    Q4_0,
}

/// Values per block of the quantized formats.
pub const QK: usize = 32;

impl WeightFormat {
    /// Every format, in the order command lines list them.
    pub const ALL: [WeightFormat; 5] = [Self::F32, Self::F16, Self::Bf16, Self::Q8_0, Self::Q4_0];

    /// The name command lines and llama.cpp use.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    /// Values that share a block (and a scale); 1 for the float formats.
    pub fn block_values(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Bf16 => 1,
            Self::Q8_0 | Self::Q4_0 => QK,
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::Q8_0 => 2 + QK,
            Self::Q4_0 => 2 + QK / 2,
        }
    }

    /// Bytes a row of `cols` values takes (`cols` a whole number of blocks).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_values() * self.block_bytes()
    }

    /// The token embedding's format beside linear layers in this one: the quantized formats
    /// pack it too, as llama.cpp's files do (in f32 it is a fifth of a `Q8_0` phi-1.5's memory);
    /// beside f16 and bf16 it stays f32, exact (a bf16 table changed a fixture's greedy ids).
    pub fn embedding_format(self) -> Self {
        match self {
            Self::Q8_0 | Self::Q4_0 => self,
            _ => Self::F32,
        }
    }

    /// Whether this is a packed format (not a plain f32 tensor).
    pub fn is_packed(self) -> bool {
        self != Self::F32
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown weight format {s:?}: f32, f16, bf16, q8_0, q4_0"))
    }
}

/// A `[rows, cols]` weight (transformers' `[out, in]`) in a packed format: each row is its
/// `cols / block_values` blocks, rows one after another.
#[derive(Clone, PartialEq)]
pub struct PackedWeight {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PackedWeight({} [{}, {}], {} bytes)",
            self.format,
            self.rows,
            self.cols,
            self.data.len()
        )
    }
}

impl PackedWeight {
    /// `values` (`rows × cols`, row-major) in `format`. Quantized formats need whole blocks per
    /// row: `cols` a multiple of 32.
    pub fn pack(values: &[f32], [rows, cols]: [usize; 2], format: WeightFormat) -> Result<Self> {
        check_shape(format, rows, cols, values.len())?;
        let row_bytes = format.row_bytes(cols);
        let mut data = vec![0u8; rows * row_bytes];
        // Rows in parallel: loading phi-1.5 packs 1.3 billion values.
        data.par_chunks_exact_mut(row_bytes.max(1))
            .zip(values.par_chunks_exact(cols.max(1)))
            .for_each(|(out, row)| pack_row(format, row, out));
        Ok(Self {
            format,
            rows,
            cols,
            data,
        })
    }

    /// A weight from its bytes as GGUF stores them, checked against its shape.
    pub fn from_bytes(
        format: WeightFormat,
        [rows, cols]: [usize; 2],
        data: Vec<u8>,
    ) -> Result<Self> {
        check_shape(format, rows, cols, rows * cols)?;
        let expected = rows * format.row_bytes(cols);
        if data.len() != expected {
            return Err(PhiError::Input(format!(
                "a {format} weight of [{rows}, {cols}] takes {expected} bytes, not {}",
                data.len()
            )));
        }
        Ok(Self {
            format,
            rows,
            cols,
            data,
        })
    }

    /// The format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// `[rows, cols]`: transformers' `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The packed bytes, rows one after another.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.format.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as f32 values into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        unpack_row(self.format, self.row(r), out);
    }

    /// Every value as f32, row-major. Rows in parallel: a prompt's product dequantizes every
    /// layer's weight (a second of phi-1.5's prefill on one core).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        out.par_chunks_exact_mut(self.cols.max(1))
            .enumerate()
            .for_each(|(r, row)| self.dequantize_row(r, row));
        out
    }
}

fn check_shape(format: WeightFormat, rows: usize, cols: usize, values: usize) -> Result<()> {
    if rows * cols != values {
        return Err(PhiError::Input(format!(
            "{values} values for a [{rows}, {cols}] weight"
        )));
    }
    if !cols.is_multiple_of(format.block_values()) {
        return Err(PhiError::Input(format!(
            "{format} packs rows in blocks of {} values: a row of {cols} is not whole blocks",
            format.block_values()
        )));
    }
    Ok(())
}

/// The reference packing of one row (`values.len()` a whole number of blocks).
fn pack_row(format: WeightFormat, values: &[f32], out: &mut [u8]) {
    match format {
        WeightFormat::F32 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        WeightFormat::F16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        WeightFormat::Bf16 => {
            for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        WeightFormat::Q8_0 => {
            for (block, o) in values.chunks_exact(QK).zip(out.chunks_exact_mut(2 + QK)) {
                quantize_q8_0(block, o);
            }
        }
        WeightFormat::Q4_0 => {
            for (block, o) in values
                .chunks_exact(QK)
                .zip(out.chunks_exact_mut(2 + QK / 2))
            {
                quantize_q4_0(block, o);
            }
        }
    }
}

/// Values converted at once by the f16 reader.
const CHUNK: usize = 64;

/// The reference unpacking of one row: what every kernel's dequantized values are.
fn unpack_row(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    match format {
        WeightFormat::F32 => {
            for (b, o) in bytes.chunks_exact(4).zip(out.iter_mut()) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        // Through `half`'s slice conversion, which uses F16C where the CPU has it (exact either
        // way: every f16 and bf16 is an f32).
        WeightFormat::F16 => {
            let mut halves = [f16::ZERO; CHUNK];
            for (b, o) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
                let halves = &mut halves[..o.len()];
                for (h, b) in halves.iter_mut().zip(b.chunks_exact(2)) {
                    *h = f16::from_le_bytes([b[0], b[1]]);
                }
                halves.convert_to_f32_slice(o);
            }
        }
        WeightFormat::Bf16 => {
            for (b, o) in bytes.chunks_exact(2).zip(out.iter_mut()) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        WeightFormat::Q8_0 => {
            for (b, o) in bytes.chunks_exact(2 + QK).zip(out.chunks_exact_mut(QK)) {
                let d = scale(b);
                for (q, v) in b[2..].iter().zip(o.iter_mut()) {
                    *v = d * (*q as i8) as f32;
                }
            }
        }
        WeightFormat::Q4_0 => {
            for (b, o) in bytes.chunks_exact(2 + QK / 2).zip(out.chunks_exact_mut(QK)) {
                let d = scale(b);
                let (low, high) = o.split_at_mut(QK / 2);
                for (j, &byte) in b[2..].iter().enumerate() {
                    low[j] = d * ((byte & 0x0F) as i32 - 8) as f32;
                    high[j] = d * ((byte >> 4) as i32 - 8) as f32;
                }
            }
        }
    }
}

/// A block's f16 scale, its first two bytes.
pub(crate) fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// `Q8_0`: `d = max|x| / 127` (as f16), `q = round(x / d)`, rounding half away from zero.
fn quantize_q8_0(block: &[f32], out: &mut [u8]) {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (v, q) in block.iter().zip(out[2..].iter_mut()) {
        *q = (round_half_away(v * id) as i8) as u8;
    }
}

/// `t.round() as i32` (halves away from zero) for `|t| < 2³¹`, without libm's call: the
/// truncating conversion is one instruction, and the fraction it leaves is exact.
fn round_half_away(t: f32) -> i32 {
    let whole = t as i32;
    if (t - whole as f32).abs() >= 0.5 {
        whole + t.signum() as i32
    } else {
        whole
    }
}

/// `Q4_0`: the value of largest magnitude `m` (with its sign) sets `d = m / −8` (as f16); each
/// value becomes `min(15, ⌊x / d + 8.5⌋)`, the first 16 in the low nibbles, the rest high.
fn quantize_q4_0(block: &[f32], out: &mut [u8]) {
    let max = block
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let nibble = |x: f32| ((x * id + 8.5) as i8).min(15) as u8;
    for j in 0..QK / 2 {
        out[2 + j] = nibble(block[j]) | (nibble(block[j + QK / 2]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.618 + seed as f32).sin() * 3.0) * ((i % 7) as f32 - 3.0))
            .collect()
    }

    /// Each format keeps the values to its precision: f16 to 2⁻¹¹ relative, bf16 2⁻⁸, Q8_0 to
    /// half a step of `max/127` per block, Q4_0 to one step of `max/8`: its range is −8..7
    /// steps, so values of the sign opposite to the largest one clip at 7 steps (plus f16's
    /// rounding of the scale).
    #[test]
    fn every_format_round_trips_within_its_precision() {
        let (rows, cols) = (3, 96);
        let v = values(rows * cols, 1);
        for format in WeightFormat::ALL {
            let packed = PackedWeight::pack(&v, [rows, cols], format).unwrap();
            assert_eq!(
                packed.bytes().len(),
                rows * format.row_bytes(cols),
                "{format}"
            );
            let back = packed.dequantize();
            for (block, got) in v.chunks(QK).zip(back.chunks(QK)) {
                let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let bound = match format {
                    WeightFormat::F32 => 0.0,
                    WeightFormat::F16 => amax * 2f32.powi(-11),
                    WeightFormat::Bf16 => amax * 2f32.powi(-8),
                    WeightFormat::Q8_0 => amax / 127.0 * 0.5 + amax * 2f32.powi(-10),
                    WeightFormat::Q4_0 => amax / 8.0 + amax * 2f32.powi(-9),
                };
                for (a, b) in block.iter().zip(got) {
                    assert!(
                        (a - b).abs() <= bound,
                        "{format}: {a} -> {b} (bound {bound})"
                    );
                }
            }
        }
    }

    /// The block layouts, byte for byte as llama.cpp writes them.
    #[test]
    fn blocks_are_llama_cpp_s() {
        let mut block = [0.0f32; QK];
        block[0] = 127.0;
        block[1] = -63.4;
        block[31] = 0.6;
        let q8 = PackedWeight::pack(&block, [1, QK], WeightFormat::Q8_0).unwrap();
        assert_eq!(&q8.bytes()[..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(q8.bytes()[2], 127);
        assert_eq!(q8.bytes()[3] as i8, -63);
        assert_eq!(q8.bytes()[2 + 31], 1);
        let mut block = [0.0f32; QK];
        block[0] = -8.0; // the largest magnitude: d = 1
        block[1] = 7.0;
        block[16] = 3.0;
        let q4 = PackedWeight::pack(&block, [1, QK], WeightFormat::Q4_0).unwrap();
        assert_eq!(&q4.bytes()[..2], &f16::from_f32(1.0).to_le_bytes());
        // x/d + 8.5 = x + 8.5 → 0 for −8; element 16 in the high nibble of byte 0.
        assert_eq!(q4.bytes()[2], (3 + 8) << 4);
        // 7 + 8.5 → 15, and element 17 (0) → 8 in the high nibble.
        assert_eq!(q4.bytes()[3], 15 | (8 << 4));
        assert_eq!(q4.dequantize()[16], 3.0);
    }

    #[test]
    fn rounding_is_halves_away_from_zero() {
        for t in [
            0.5f32,
            -0.5,
            1.5,
            -2.5,
            0.49999997,
            -0.49999997,
            126.5,
            3.0,
            -0.0,
            1e-9,
        ] {
            assert_eq!(round_half_away(t), t.round() as i32, "{t}");
        }
    }

    #[test]
    fn shapes_that_are_not_whole_blocks_are_refused() {
        let v = values(2 * 40, 2);
        let err = PackedWeight::pack(&v, [2, 40], WeightFormat::Q8_0).unwrap_err();
        assert!(err.to_string().contains("not whole blocks"), "{err}");
        assert!(PackedWeight::pack(&v, [2, 40], WeightFormat::F16).is_ok());
        let err = PackedWeight::from_bytes(WeightFormat::Q4_0, [2, 32], vec![0; 35]).unwrap_err();
        assert!(err.to_string().contains("36 bytes"), "{err}");
        assert_eq!("Q8_0".parse::<WeightFormat>(), Ok(WeightFormat::Q8_0));
        assert!("q5_k".parse::<WeightFormat>().is_err());
    }
}
