//! Many-row products (prefill) with `Q8_0` and `Q4_0` weights in integers.
//!
//! A prompt's product dequantized the whole weight to f32 for each call and ran the f32 matmul:
//! slower than f32 weights (phi-1.5 at 512 tokens, 2 cores: Q8_0 64 tokens/s against f32's 78),
//! where llama.cpp's integer products are faster than its f32 ones. Here the inputs are
//! quantized as for decoding (`quant_dot::QuantizedRows`: sixteen-bit integers per block of 32,
//! an f32 scale each), and each task unpacks one panel of 32 weight rows into pairs of
//! sixteen-bit integers laid out so that one AVX-512 VNNI `vpdpwssd` multiplies a pair of inputs
//! of one row, broadcast, with that pair of each of 16 outputs, adding to 16 integer sums: 32
//! multiply-adds per instruction, where an f32 FMA does 16. A tile of 8 rows × 32 outputs reads
//! the panel's two registers once per pair for its 8 rows, and turns its integer sums into
//! floats once per block.
//!
//! Each (row, output) result has one definition, whatever the kernel, tile or row count: for
//! each block `b` in order, `acc = fma(d_w·d_x, s_b, acc)` from `acc = 0`, with `s_b` the
//! block's exact integer dot product (at most 32 · 128 · 32767 < 2³¹) converted to f32; then
//! the bias is added. The VNNI, AVX2 and portable kernels compute exactly that.
//!
//! Decoding (up to 32 rows) keeps `quant_dot`, whose lanes suit one row read straight from the
//! packed bytes; a prompt's row may therefore round differently from the same row decoded.

use rayon::prelude::*;

use super::isa::Isa;
use super::many_rows::Columns;
use super::quant_dot::QuantizedRows;
#[cfg(test)]
use super::quant_dot::weight_value;
use crate::model::packed::{PackedWeight, QK, WeightFormat, scale};

/// Weight rows (outputs) per panel, unpacked once per task.
const PANEL: usize = 32;

/// Input rows per tile.
const TILE_ROWS: usize = 8;

/// Pairs of values in a block.
const PAIRS: usize = QK / 2;

/// One panel of a weight: outputs `first..first + PANEL` (zeros past the weight's last row),
/// each value pair `(2p, 2p + 1)` of block `b` of output `o` as two sixteen-bit integers at
/// `pairs[((b·PAIRS + p)·PANEL + o)·2..]`, and each block's scale at `scales[b·PANEL + o]`.
struct Panel {
    pairs: Vec<i16>,
    scales: Vec<f32>,
}

impl Panel {
    fn unpack(weight: &PackedWeight, first: usize) -> Self {
        let [d_out, d_in] = weight.dims();
        let format = weight.format();
        let (blocks, block_bytes) = (d_in / QK, format.block_bytes());
        let mut pairs = vec![0i16; blocks * QK * PANEL];
        let mut scales = vec![0.0f32; blocks * PANEL];
        for o in 0..PANEL.min(d_out - first) {
            let row = weight.row(first + o);
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                scales[b * PANEL + o] = scale(block);
                let mut values = [0i16; QK];
                unpack_block(format, &block[2..], &mut values);
                for (p, pair) in values.chunks_exact(2).enumerate() {
                    let at = ((b * PAIRS + p) * PANEL + o) * 2;
                    pairs[at..at + 2].copy_from_slice(pair);
                }
            }
        }
        Self { pairs, scales }
    }
}

/// A block's 32 weight values (the bytes after its scale) as integers.
fn unpack_block(format: WeightFormat, bytes: &[u8], out: &mut [i16; QK]) {
    match format {
        WeightFormat::Q8_0 => {
            for (o, &q) in out.iter_mut().zip(bytes) {
                *o = q as i8 as i16;
            }
        }
        WeightFormat::Q4_0 => {
            let (low, high) = out.split_at_mut(QK / 2);
            for (j, &byte) in bytes[..QK / 2].iter().enumerate() {
                low[j] = (byte & 0x0F) as i16 - 8;
                high[j] = (byte >> 4) as i16 - 8;
            }
        }
        _ => unreachable!("integer products are for Q8_0 and Q4_0"),
    }
}

/// The reference: row `r` of `x` times output `o` of `weight`, without the bias.
#[cfg(test)]
pub(crate) fn reference_dot(weight: &PackedWeight, x: &QuantizedRows, r: usize, o: usize) -> f32 {
    let format = weight.format();
    let mut acc = 0.0f32;
    for (b, block) in weight.row(o).chunks_exact(format.block_bytes()).enumerate() {
        let (qx, d_x) = x.block_values(r, b);
        let s: i32 = (0..QK)
            .map(|j| weight_value(format, &block[2..], j) * qx[j] as i32)
            .sum();
        acc = (scale(block) * d_x).mul_add(s as f32, acc);
    }
    acc
}

/// `[rows, out]` products of `weight`'s rows (`Q8_0` or `Q4_0`) with the quantized inputs,
/// plus the bias.
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
    let blocks = d_in / QK;
    let mut y = vec![0.0f32; rows * d_out];
    if rows == 0 {
        return y;
    }
    let out = Columns::new(&mut y, d_out);
    (0..d_out.div_ceil(PANEL))
        .into_par_iter()
        .for_each(|panel| {
            let first = panel * PANEL;
            let unpacked = Panel::unpack(weight, first);
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let tile_rows = TILE_ROWS.min(rows - r0);
                // Rows past the input's end repeat its last row; their sums are not written.
                let row_of: [usize; TILE_ROWS] = std::array::from_fn(|r| (r0 + r).min(rows - 1));
                let mut sums = [[0.0f32; PANEL]; TILE_ROWS];
                match isa {
                    Isa::Portable => portable::tile(&unpacked, blocks, x, &row_of, &mut sums),
                    // SAFETY: `Isa` names only levels the CPU has.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => unsafe {
                        avx2::tile(&unpacked, blocks, x, &row_of, &mut sums)
                    },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Vnni => unsafe {
                        avx512::tile(&unpacked, blocks, x, &row_of, &mut sums)
                    },
                }
                for (r, sums) in sums.iter().enumerate().take(tile_rows) {
                    for (o, &s) in sums.iter().enumerate().take(PANEL.min(d_out - first)) {
                        // SAFETY: in bounds (`tile_rows`, the outputs taken); this task owns the
                        // panel's outputs.
                        unsafe { out.write(r0 + r, first + o, s + b[first + o]) };
                    }
                }
            }
        });
    y
}

mod portable {
    use super::*;

    /// The definition, tile by tile, on the unpacked panel.
    pub(super) fn tile(
        panel: &Panel,
        blocks: usize,
        x: &QuantizedRows,
        row_of: &[usize; TILE_ROWS],
        sums: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        for b in 0..blocks {
            for (r, acc) in sums.iter_mut().enumerate() {
                let (qx, d_x) = x.block_values(row_of[r], b);
                for (o, acc) in acc.iter_mut().enumerate() {
                    let s: i32 = (0..PAIRS)
                        .map(|p| {
                            let at = ((b * PAIRS + p) * PANEL + o) * 2;
                            panel.pairs[at] as i32 * qx[2 * p] as i32
                                + panel.pairs[at + 1] as i32 * qx[2 * p + 1] as i32
                        })
                        .sum();
                    *acc = (panel.scales[b * PANEL + o] * d_x).mul_add(s as f32, *acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// The tile with AVX-512 VNNI: per pair, two loads of the panel and, for each of the 8
    /// rows, a broadcast of its input pair and two `vpdpwssd`.
    #[allow(clippy::needless_range_loop)] // `r`, `h` index registers and offsets alike
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn tile(
        panel: &Panel,
        blocks: usize,
        x: &QuantizedRows,
        row_of: &[usize; TILE_ROWS],
        sums: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        assert!(panel.pairs.len() >= blocks * QK * PANEL && panel.scales.len() >= blocks * PANEL);
        let rows: [&[i16]; TILE_ROWS] = std::array::from_fn(|r| x.row_values(row_of[r]));
        for row in rows {
            assert!(row.len() >= blocks * QK);
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        for b in 0..blocks {
            let mut s = [[_mm512_setzero_si512(); 2]; TILE_ROWS];
            for p in 0..PAIRS {
                // SAFETY: block `b`'s pairs are in the panel, and each row holds `blocks`
                // blocks (asserted above).
                unsafe {
                    let w = panel.pairs.as_ptr().add((b * PAIRS + p) * PANEL * 2);
                    let (w_low, w_high) = (
                        _mm512_loadu_si512(w.cast()),
                        _mm512_loadu_si512(w.add(PANEL).cast()),
                    );
                    for r in 0..TILE_ROWS {
                        let pair = rows[r]
                            .as_ptr()
                            .add(b * QK + 2 * p)
                            .cast::<i32>()
                            .read_unaligned();
                        let pair = _mm512_set1_epi32(pair);
                        s[r][0] = _mm512_dpwssd_epi32(s[r][0], w_low, pair);
                        s[r][1] = _mm512_dpwssd_epi32(s[r][1], w_high, pair);
                    }
                }
            }
            // SAFETY: block `b`'s 32 scales (asserted above).
            let (d_low, d_high) = unsafe {
                let d = panel.scales.as_ptr().add(b * PANEL);
                (_mm512_loadu_ps(d), _mm512_loadu_ps(d.add(PANEL / 2)))
            };
            for r in 0..TILE_ROWS {
                let d_x = _mm512_set1_ps(x.block_values(row_of[r], b).1);
                let d = [_mm512_mul_ps(d_low, d_x), _mm512_mul_ps(d_high, d_x)];
                for h in 0..2 {
                    acc[r][h] = _mm512_fmadd_ps(d[h], _mm512_cvtepi32_ps(s[r][h]), acc[r][h]);
                }
            }
        }
        for (r, out) in sums.iter_mut().enumerate() {
            // SAFETY: 32 values into a row of 32.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), acc[r][0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(PANEL / 2), acc[r][1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// Rows of the tile handled at once: four registers of 8 outputs each per row.
    const AT_ONCE: usize = 2;

    /// The tile with AVX2, two rows at a time: per pair, four loads of the panel and per row
    /// a broadcast, four `madd`s and four additions.
    #[allow(clippy::needless_range_loop)] // `r`, `h` index registers and offsets alike
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(
        panel: &Panel,
        blocks: usize,
        x: &QuantizedRows,
        row_of: &[usize; TILE_ROWS],
        sums: &mut [[f32; PANEL]; TILE_ROWS],
    ) {
        assert!(panel.pairs.len() >= blocks * QK * PANEL && panel.scales.len() >= blocks * PANEL);
        for (pair_of_rows, out) in row_of
            .chunks_exact(AT_ONCE)
            .zip(sums.chunks_exact_mut(AT_ONCE))
        {
            let rows: [&[i16]; AT_ONCE] = std::array::from_fn(|r| x.row_values(pair_of_rows[r]));
            for row in rows {
                assert!(row.len() >= blocks * QK);
            }
            let mut acc = [[_mm256_setzero_ps(); 4]; AT_ONCE];
            for b in 0..blocks {
                let mut s = [[_mm256_setzero_si256(); 4]; AT_ONCE];
                for p in 0..PAIRS {
                    // SAFETY: as in the AVX-512 tile (asserted above).
                    unsafe {
                        let w = panel.pairs.as_ptr().add((b * PAIRS + p) * PANEL * 2);
                        let w: [__m256i; 4] =
                            std::array::from_fn(|h| _mm256_loadu_si256(w.add(h * 16).cast()));
                        for r in 0..AT_ONCE {
                            let pair = rows[r]
                                .as_ptr()
                                .add(b * QK + 2 * p)
                                .cast::<i32>()
                                .read_unaligned();
                            let pair = _mm256_set1_epi32(pair);
                            for h in 0..4 {
                                s[r][h] = _mm256_add_epi32(s[r][h], _mm256_madd_epi16(w[h], pair));
                            }
                        }
                    }
                }
                for r in 0..AT_ONCE {
                    let d_x = _mm256_set1_ps(x.block_values(pair_of_rows[r], b).1);
                    for h in 0..4 {
                        // SAFETY: block `b`'s scales (asserted above).
                        let d_w = unsafe {
                            _mm256_loadu_ps(panel.scales.as_ptr().add(b * PANEL + h * 8))
                        };
                        let d = _mm256_mul_ps(d_w, d_x);
                        acc[r][h] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s[r][h]), acc[r][h]);
                    }
                }
            }
            for (r, out) in out.iter_mut().enumerate() {
                for h in 0..4 {
                    // SAFETY: 8 values into a row of 32.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(h * 8), acc[r][h]) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::cpu::test_values as values;

    /// Every kernel gives the reference's bits for every (row, output), on a shape with a
    /// partial panel and a partial tile; the result is within the inputs' quantization of the
    /// product over the dequantized weight; a row gives the same alone.
    #[test]
    fn tiled_integer_products_are_the_reference() {
        let (d_out, d_in, rows) = (70, 128, 19);
        let w = values(d_out * d_in, 0.5);
        let x = values(rows * d_in, 2.5);
        let b = values(d_out, 1.5);
        let qx = QuantizedRows::new(&x, rows, d_in);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0] {
            let mut packed = PackedWeight::pack(&w, [d_out, d_in], format).unwrap();
            if format == WeightFormat::Q8_0 {
                // A byte of −128 (which phi-zoo never writes, but a GGUF file may hold).
                let mut bytes = packed.bytes().to_vec();
                bytes[2] = 128;
                packed = PackedWeight::from_bytes(format, [d_out, d_in], bytes).unwrap();
            }
            let dequantized = packed.dequantize();
            let y = products(&packed, &qx, rows, &b);
            for r in 0..rows {
                let xr = &x[r * d_in..(r + 1) * d_in];
                let x_amax = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for o in 0..d_out {
                    let reference = reference_dot(&packed, &qx, r, o) + b[o];
                    let got = y[r * d_out + o];
                    assert_eq!(got.to_bits(), reference.to_bits(), "{format} {r} {o}");
                    let wr = &dequantized[o * d_in..(o + 1) * d_in];
                    let exact: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>() + b[o];
                    let bound =
                        wr.iter().map(|v| v.abs()).sum::<f32>() * x_amax * (1.0 / 65534.0 + 1e-6);
                    assert!(
                        (got - exact).abs() <= bound,
                        "{format} {r} {o}: {got} vs {exact}"
                    );
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
            let alone = QuantizedRows::new(&x[5 * d_in..6 * d_in], 1, d_in);
            let y_alone = products(&packed, &alone, 1, &b);
            assert_eq!(y_alone, y[5 * d_out..6 * d_out], "{format}: row 5 alone");
        }
    }
}
