//! Few-row products with `Q8_0` and `Q4_0` weights in integers: each input row is quantized to
//! blocks of 32 sixteen-bit integers with an f32 scale, each weight block's dot product with it
//! is an exact sum of integer products, and only the per-block scale product `d_w·d_x` is
//! floating point.
//!
//! Converting every weight to f32 took three instructions per eight weights before the
//! multiply-add, and made the packed formats compute-bound: on 2 cores phi-1.5's Q8_0 decode was
//! barely faster than f32's. In integers a block of 32 is two `madd`s (AVX2) per input row.
//! llama.cpp quantizes the inputs to 8 bits; at 16 (a step of `max|x|/32767` per block) a
//! fixture's Q8_0 logits moved 3.9e-4 from those of its dequantized f32 model (the weights'
//! own quantization: 6.8e-2), where 8 bits moved them by a third more than the weights'
//! quantization alone and changed the fixture's greedy ids.
//!
//! Each (output, row) sum has one fixed order: sixteen lanes, lane `m` of block `b` being the
//! exact integer `q_w[2m]·q_x[2m] + q_w[2m+1]·q_x[2m+1]` (the pair one `madd` forms), each added
//! as `acc[m] = fma(d_w·d_x, lane, acc[m])` over the blocks in order; then lanes `m` and `m + 8`
//! are added and the eight sums added in `sum_lanes`' order. The AVX-512 path (one register per
//! block), the AVX2 path (two) and the portable one compute exactly that, so they agree bit for
//! bit, and a row's result does not depend on its batch.
//!
//! Per block the AVX-512 path takes one widening load of the weights, one `madd` reading the
//! inputs from memory, a conversion, and a fused multiply-add, besides the scale: a third of
//! AVX2's instructions, which is what bounded Q8_0 decoding on two cores.

use rayon::prelude::*;

use super::isa::Isa;
use super::{LANES, sum_lanes};
use crate::model::packed::{PackedWeight, QK, WeightFormat, scale};

/// Bytes ahead of a block that a product asks the memory for: decoding reads each weight once,
/// from memory, and the hardware prefetcher alone kept too few lines in flight (phi-1.5 Q8_0
/// decode on 2 Zen 5 cores: 23.5-24.3 tokens/s without, 27.5-28.3 with 6 KiB, 25.8 with 4).
/// Past a row's end it fetches the next row, which the task reads next.
const PREFETCH: usize = 6144;

/// Output rows per parallel task.
const OUTPUTS_PER_TASK: usize = 64;

/// The largest input value after quantization.
const X_MAX: f32 = 32767.0;

/// Input rows quantized to blocks of 32 sixteen-bit integers, each block with its scale.
pub(crate) struct QuantizedRows {
    blocks: usize,
    scales: Vec<f32>,
    q: Vec<i16>,
}

impl QuantizedRows {
    /// `x`: `rows × d_in` values, `d_in` a whole number of blocks. Each block's scale is
    /// `max|x| / 32767`, each value `round(x / d)`, ties to even.
    pub(crate) fn new(x: &[f32], rows: usize, d_in: usize) -> Self {
        let blocks = d_in / QK;
        let n = rows * blocks;
        let (mut scales, mut q) = (Vec::with_capacity(n), vec![0i16; n * QK]);
        for (block, out) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / X_MAX;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (v, o) in block.iter().zip(out.iter_mut()) {
                *o = round_ties_even(v * id).clamp(-X_MAX, X_MAX) as i16;
            }
            scales.push(d);
        }
        Self { blocks, scales, q }
    }

    fn block(&self, row: usize, b: usize) -> usize {
        row * self.blocks + b
    }

    /// Row `row`'s block `b`: its 32 integers and its scale.
    pub(crate) fn block_values(&self, row: usize, b: usize) -> (&[i16], f32) {
        let at = self.block(row, b);
        (&self.q[at * QK..(at + 1) * QK], self.scales[at])
    }

    /// Row `row`'s integers, every block.
    pub(crate) fn row_values(&self, row: usize) -> &[i16] {
        let n = self.blocks * QK;
        &self.q[row * n..(row + 1) * n]
    }
}

/// `t` rounded to the nearest integer, ties to even, for `|t| <= 2²²`: adding and taking away
/// 1.5·2²³ leaves no fraction under f32's rounding to nearest even. `f32::round_ties_even` is
/// a call to libm's `rintf` on CPUs built for without SSE4.1, a twentieth of decode time.
fn round_ties_even(t: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (t + MAGIC) - MAGIC
}

/// The weight's value `j` of a block (the bytes after its scale), as an integer.
pub(super) fn weight_value(format: WeightFormat, bytes: &[u8], j: usize) -> i32 {
    match format {
        WeightFormat::Q8_0 => bytes[j] as i8 as i32,
        WeightFormat::Q4_0 => {
            let byte = bytes[j % (QK / 2)];
            (if j < QK / 2 { byte & 0x0F } else { byte >> 4 }) as i32 - 8
        }
        _ => unreachable!("integer products are for Q8_0 and Q4_0"),
    }
}

/// Lanes of a block's sum: one per pair of values.
const SUM_LANES: usize = QK / 2;

/// One weight row's dot product with input row `r`, on `isa`'s widest path.
fn row_dot(isa: Isa, format: WeightFormat, w: &[u8], x: &QuantizedRows, r: usize) -> f32 {
    match isa {
        Isa::Portable => portable::row_dot(format, w, x, r),
        // SAFETY: `Isa` names only levels the CPU has.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::row_dot(format, w, x, r) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx512::row_dot(format, w, x, r) },
    }
}

/// `[rows, out]` products of `weight`'s rows with the quantized inputs, plus the bias.
pub(crate) fn products(
    weight: &PackedWeight,
    x: &QuantizedRows,
    rows: usize,
    b: &[f32],
) -> Vec<f32> {
    products_with(Isa::best(), weight, x, rows, b)
}

/// `products` on a given instruction set.
pub(crate) fn products_with(
    isa: Isa,
    weight: &PackedWeight,
    x: &QuantizedRows,
    rows: usize,
    b: &[f32],
) -> Vec<f32> {
    let [d_out, d_in] = weight.dims();
    let format = weight.format();
    let row_bytes = format.row_bytes(d_in);
    let mut y_t = vec![0.0f32; d_out * rows];
    y_t.par_chunks_mut(OUTPUTS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * OUTPUTS_PER_TASK;
            for (o, sums) in out.chunks_mut(rows).enumerate() {
                let w = weight.row(first + o);
                debug_assert_eq!(w.len(), row_bytes);
                for (r, s) in sums.iter_mut().enumerate() {
                    *s = row_dot(isa, format, w, x, r) + b[first + o];
                }
            }
        });
    let mut y = vec![0.0f32; rows * d_out];
    for (o, values) in y_t.chunks(rows).enumerate() {
        for (r, &v) in values.iter().enumerate() {
            y[r * d_out + o] = v;
        }
    }
    y
}

/// Lanes `m` and `m + 8` added, then the eight sums in `sum_lanes`' order.
fn finish(acc: &[f32; SUM_LANES]) -> f32 {
    let halves: [f32; LANES] = std::array::from_fn(|m| acc[m] + acc[m + LANES]);
    sum_lanes(&halves)
}

pub(super) mod portable {
    use super::*;

    /// The reference: each lane an exact integer, added with a fused multiply-add.
    pub(crate) fn row_dot(format: WeightFormat, w: &[u8], x: &QuantizedRows, r: usize) -> f32 {
        let block_bytes = format.block_bytes();
        let mut acc = [0.0f32; SUM_LANES];
        for (b, wb) in w.chunks_exact(block_bytes).enumerate() {
            let at = x.block(r, b);
            let d = scale(wb) * x.scales[at];
            let qx = &x.q[at * QK..(at + 1) * QK];
            for (m, a) in acc.iter_mut().enumerate() {
                let lane: i32 = [2 * m, 2 * m + 1]
                    .into_iter()
                    .map(|j| weight_value(format, &wb[2..], j) * qx[j] as i32)
                    .sum();
                *a = d.mul_add(lane as f32, *a);
            }
        }
        finish(&acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// `portable::row_dot` in AVX2 registers: lanes 0..8 in one, 8..16 in another.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn row_dot(format: WeightFormat, w: &[u8], x: &QuantizedRows, r: usize) -> f32 {
        let block_bytes = format.block_bytes();
        let blocks = w.len() / block_bytes;
        assert!(x.block(r, blocks) <= x.scales.len());
        let low = _mm_set1_epi8(0x0F);
        let eight = _mm256_set1_epi16(8);
        let (mut acc_low, mut acc_high) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for b in 0..blocks {
            let wb = &w[b * block_bytes..(b + 1) * block_bytes];
            let at = x.block(r, b);
            // A hint: an address past the weight's end is not read.
            _mm_prefetch::<_MM_HINT_T0>(wb.as_ptr().wrapping_add(PREFETCH).cast());
            // The f16 scale by F16C, in registers: a call here would spill the accumulator.
            let d_w = _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([wb[0], wb[1]])));
            let d = _mm256_mul_ps(d_w, _mm256_set1_ps(x.scales[at]));
            // SAFETY: 32 values of row `r`'s block `b` (asserted in bounds above).
            let (x_low, x_high) = unsafe {
                let q = x.q.as_ptr().add(at * QK);
                (
                    _mm256_loadu_si256(q.cast()),
                    _mm256_loadu_si256(q.add(QK / 2).cast()),
                )
            };
            // Values 0..16 and 16..32 of the weight block as sixteen-bit integers.
            let (w_low, w_high) = match format {
                WeightFormat::Q8_0 => {
                    // SAFETY: the block's 32 weight bytes follow its scale (the slice above).
                    let (a, b) = unsafe {
                        (
                            _mm_loadu_si128(wb.as_ptr().add(2).cast()),
                            _mm_loadu_si128(wb.as_ptr().add(2 + QK / 2).cast()),
                        )
                    };
                    (_mm256_cvtepi8_epi16(a), _mm256_cvtepi8_epi16(b))
                }
                WeightFormat::Q4_0 => {
                    // SAFETY: the block's 16 bytes follow its scale (the slice above).
                    let bytes = unsafe { _mm_loadu_si128(wb.as_ptr().add(2).cast()) };
                    let nibbles = |v: __m128i| {
                        _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(v, low)), eight)
                    };
                    (nibbles(bytes), nibbles(_mm_srli_epi16(bytes, 4)))
                }
                _ => unreachable!("integer products are for Q8_0 and Q4_0"),
            };
            let lanes_low = _mm256_cvtepi32_ps(_mm256_madd_epi16(w_low, x_low));
            let lanes_high = _mm256_cvtepi32_ps(_mm256_madd_epi16(w_high, x_high));
            acc_low = _mm256_fmadd_ps(d, lanes_low, acc_low);
            acc_high = _mm256_fmadd_ps(d, lanes_high, acc_high);
        }
        let mut lanes = [0.0f32; SUM_LANES];
        // SAFETY: two registers' values into sixteen.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc_low);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(LANES), acc_high);
        }
        finish(&lanes)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// `portable::row_dot` with a block's sixteen lanes in one AVX-512 register.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) fn row_dot(format: WeightFormat, w: &[u8], x: &QuantizedRows, r: usize) -> f32 {
        let block_bytes = format.block_bytes();
        let blocks = w.len() / block_bytes;
        assert!(x.block(r, blocks) <= x.scales.len());
        let low = _mm_set1_epi8(0x0F);
        let eight = _mm512_set1_epi16(8);
        let mut acc = _mm512_setzero_ps();
        for b in 0..blocks {
            let wb = &w[b * block_bytes..(b + 1) * block_bytes];
            let at = x.block(r, b);
            // A hint: an address past the weight's end is not read.
            _mm_prefetch::<_MM_HINT_T0>(wb.as_ptr().wrapping_add(PREFETCH).cast());
            let d_w = _mm512_cvtph_ps(_mm256_set1_epi16(i16::from_le_bytes([wb[0], wb[1]])));
            let d = _mm512_mul_ps(d_w, _mm512_set1_ps(x.scales[at]));
            // SAFETY: 32 values of row `r`'s block `b` (asserted in bounds above).
            let qx = unsafe { _mm512_loadu_si512(x.q.as_ptr().add(at * QK).cast()) };
            let qw = match format {
                // SAFETY: the block's 32 weight bytes follow its scale (the slice above).
                WeightFormat::Q8_0 => unsafe {
                    _mm512_cvtepi8_epi16(_mm256_loadu_si256(wb.as_ptr().add(2).cast()))
                },
                WeightFormat::Q4_0 => {
                    // SAFETY: the block's 16 bytes follow its scale (the slice above).
                    let bytes = unsafe { _mm_loadu_si128(wb.as_ptr().add(2).cast()) };
                    let values = _mm256_set_m128i(
                        _mm_and_si128(_mm_srli_epi16(bytes, 4), low),
                        _mm_and_si128(bytes, low),
                    );
                    _mm512_sub_epi16(_mm512_cvtepu8_epi16(values), eight)
                }
                _ => unreachable!("integer products are for Q8_0 and Q4_0"),
            };
            let lanes = _mm512_cvtepi32_ps(_mm512_madd_epi16(qw, qx));
            acc = _mm512_fmadd_ps(d, lanes, acc);
        }
        let mut lanes = [0.0f32; SUM_LANES];
        // SAFETY: one register's sixteen values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        finish(&lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::cpu::test_values as values;

    /// Against the f32 product over the dequantized weight: within the input's quantization
    /// error; the AVX2 path equals the portable reference bit for bit; a row alone gives what
    /// it gives in the batch.
    #[test]
    fn integer_products_follow_the_dequantized_product() {
        let (d_out, d_in, rows) = (70, 128, 5);
        let w = values(d_out * d_in, 0.5);
        let x = values(rows * d_in, 2.5);
        let b = values(d_out, 1.5);
        let qx = QuantizedRows::new(&x, rows, d_in);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0] {
            let packed = PackedWeight::pack(&w, [d_out, d_in], format).unwrap();
            let dequantized = packed.dequantize();
            let y = products(&packed, &qx, rows, &b);
            for r in 0..rows {
                let xr = &x[r * d_in..(r + 1) * d_in];
                let x_amax = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for o in 0..d_out {
                    let wr = &dequantized[o * d_in..(o + 1) * d_in];
                    let exact: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>() + b[o];
                    // Each input off by at most half a step of max|x|/32767, plus f32's rounding.
                    let bound =
                        wr.iter().map(|v| v.abs()).sum::<f32>() * x_amax * (1.0 / 65534.0 + 1e-6);
                    let got = y[r * d_out + o];
                    assert!(
                        (got - exact).abs() <= bound,
                        "{format} {r} {o}: {got} vs {exact}"
                    );
                    let reference = portable::row_dot(format, packed.row(o), &qx, r) + b[o];
                    assert_eq!(got.to_bits(), reference.to_bits(), "{format} {r} {o}");
                }
            }
            for isa in Isa::available() {
                let by_kernel = products_with(isa, &packed, &qx, rows, &b);
                let same = by_kernel
                    .iter()
                    .zip(&y)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{format}: {isa:?} differs from the best kernel");
            }
            let alone = QuantizedRows::new(&x[2 * d_in..3 * d_in], 1, d_in);
            let y_alone = products(&packed, &alone, 1, &b);
            assert_eq!(y_alone, y[2 * d_out..3 * d_out], "{format}: row 2 alone");
        }
    }

    /// A weight of −128 (which phi-zoo never writes, but a GGUF file may hold) is summed right.
    #[test]
    fn the_extreme_byte_is_handled() {
        let mut bytes = vec![0u8; 2 + QK];
        bytes[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        bytes[2..].fill(128); // −128 as i8
        let packed = PackedWeight::from_bytes(WeightFormat::Q8_0, [1, QK], bytes).unwrap();
        let x = vec![-1.0f32; QK];
        let qx = QuantizedRows::new(&x, 1, QK);
        let y = products(&packed, &qx, 1, &[0.0]);
        assert!((y[0] - 128.0 * 32.0).abs() < 1e-2, "{}", y[0]);
        let reference = portable::row_dot(WeightFormat::Q8_0, packed.row(0), &qx, 0);
        assert_eq!(y[0].to_bits(), reference.to_bits());
    }
}
