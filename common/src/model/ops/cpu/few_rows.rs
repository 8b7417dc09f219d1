//! `x·W + b` for a few rows (a decode step, a batch of decode steps), read straight from the
//! weight's `[out, in]` memory.
//!
//! Decoding is weight-bandwidth bound at one row, and with continuous batching it runs 4..32 rows
//! per step: burn's matmul took 2.2× the one-row time at 4 rows and 3.6× at 16 for phi-1.5 on 2
//! cores, where the weight is read once either way. Here every task takes a block of output
//! rows, keeps each weight row in L1 while every input row is multiplied with it (tiles of 2
//! outputs × 4 inputs, or 4 outputs for one or two inputs, AVX2 FMA when the CPU has it, found
//! at run time), and the blocks run in
//! parallel. Each (output, row) dot product is the same sequence of operations whatever the
//! number of rows or the tile it falls in, so a row's result does not depend on the batch it is
//! in: batched decoding gives what decoding alone gives, bit for bit.
//!
//! The weight's values come through [`WeightRows`]: f32 memory, or a packed format
//! (`ops/cpu/packed.rs`) dequantized eight values at a time into the same registers, so a
//! product over packed weights is the f32 product over their dequantized values, bit for bit.

use burn::prelude::*;
use rayon::prelude::*;

use super::{LANES, sum_lanes};

/// Output rows per parallel task: a few tasks per thread, and each weight block read once.
const OUTPUTS_PER_TASK: usize = 64;

/// Values a tile reads from a weight row at once (four groups of `LANES`): a packed format's
/// block, whose scale is read once for all four.
pub(crate) const BLOCK: usize = 4 * LANES;

/// Where a tile reads output row `o`'s weight values (`d_in` of them per row).
pub(crate) trait WeightRows: Sync {
    /// Output rows.
    fn outputs(&self) -> usize;
    /// Values `i..i + LANES` of row `o` (`i + LANES <= d_in`).
    fn lanes(&self, o: usize, i: usize) -> [f32; LANES];
    /// Value `k` of row `o`.
    fn value(&self, o: usize, k: usize) -> f32;
    /// What the four groups of values `i..i + BLOCK` of row `o` share, read once.
    #[cfg(target_arch = "x86_64")]
    type Block: Copy;
    /// The block of values `i..i + BLOCK` of row `o`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx2(&self, o: usize, i: usize) -> Self::Block;
    /// Group `g` (0..4) of a block, `LANES` values in an AVX2 register.
    ///
    /// # Safety
    /// As `block_avx2`; `block` came from it.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group_avx2(block: Self::Block, g: usize) -> std::arch::x86_64::__m256;
    /// `lanes` in an AVX2 register.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C, and `i + LANES <= d_in`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn lanes_avx2(&self, o: usize, i: usize) -> std::arch::x86_64::__m256;
    /// The same rows from output `first` on.
    fn starting_at(&self, first: usize) -> Self
    where
        Self: Sized;
}

/// Rows of f32 memory, `d_in` values each.
#[derive(Clone, Copy)]
pub(crate) struct F32Rows<'a> {
    pub w: &'a [f32],
    pub d_in: usize,
}

impl WeightRows for F32Rows<'_> {
    fn outputs(&self) -> usize {
        self.w.len() / self.d_in
    }

    #[inline]
    fn lanes(&self, o: usize, i: usize) -> [f32; LANES] {
        self.w[o * self.d_in + i..][..LANES]
            .try_into()
            .expect("LANES values")
    }

    #[inline]
    fn value(&self, o: usize, k: usize) -> f32 {
        self.w[o * self.d_in + k]
    }

    #[cfg(target_arch = "x86_64")]
    type Block = *const f32;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(&self, o: usize, i: usize) -> *const f32 {
        self.w[o * self.d_in + i..][..BLOCK].as_ptr()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: *const f32, g: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: `block` starts `BLOCK` values in bounds (`block_avx2`'s slice).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(block.add(g * LANES)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(&self, o: usize, i: usize) -> std::arch::x86_64::__m256 {
        let values = &self.w[o * self.d_in + i..][..LANES];
        // SAFETY: in bounds (the slice above); AVX2 is the caller's promise.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(values.as_ptr()) }
    }

    fn starting_at(&self, first: usize) -> Self {
        Self {
            w: &self.w[first * self.d_in..],
            d_in: self.d_in,
        }
    }
}

/// `x·W + b` with `weight` burn's `[in, out]` view of `[out, in]` memory (`PhiLinear`'s CPU
/// layout); `None` when the tensors are not laid out so (the caller takes the generic path).
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    let device = x.device();
    let [rows, d_in] = x.dims();
    let [_, d_out] = weight.dims();
    let x = super::host_f32(x);
    let b = super::host_f32(bias);
    let y = super::with_out_in_memory(weight, |w| {
        rows_times(F32Rows { w, d_in }, &x, rows, d_in, &b)
    })?;
    Some(Tensor::from_data(
        TensorData::new(y, [rows, d_out]),
        &device,
    ))
}

/// `x·Wᵀ + b` for `x`: `rows × d_in` and `w`'s output rows, `[rows, outputs]`, the outputs in
/// parallel blocks.
pub(crate) fn rows_times<W: WeightRows>(
    w: W,
    x: &[f32],
    rows: usize,
    d_in: usize,
    b: &[f32],
) -> Vec<f32> {
    let d_out = w.outputs();
    let mut y_t = vec![0.0f32; d_out * rows];
    y_t.par_chunks_mut(OUTPUTS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * OUTPUTS_PER_TASK;
            products(&w.starting_at(first), x, rows, d_in, out);
            for (o, values) in out.chunks_mut(rows).enumerate() {
                values.iter_mut().for_each(|v| *v += b[first + o]);
            }
        });
    // `[out, rows]` → `[rows, out]`.
    let mut y = vec![0.0f32; rows * d_out];
    for (o, values) in y_t.chunks(rows).enumerate() {
        for (r, &v) in values.iter().enumerate() {
            y[r * d_out + o] = v;
        }
    }
    y
}

/// `out[o·rows + r] = Σ_i w[o][i]·x[r·d_in + i]` for the first `out.len() / rows` rows of `w`.
fn products<W: WeightRows>(w: &W, x: &[f32], rows: usize, d_in: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        unsafe { avx2::products(w, x, rows, d_in, out) };
        return;
    }
    portable::products(w, x, rows, d_in, out);
}

/// Tiles of up to 2 outputs × 4 rows (4 outputs for one or two rows, whose tiles would
/// otherwise run only two chains of dependent multiply-adds), the remainders in smaller tiles of
/// the same kernel. Each (output, row) sum takes the same additions in any tile.
macro_rules! tiled {
    ($tile:ident, $w:expr, $x:expr, $rows:expr, $d_in:expr, $out:expr) => {{
        let (w, x, rows, d_in, out) = ($w, $x, $rows, $d_in, $out);
        let outputs = out.len() / rows;
        let widest = if rows <= 2 { 4 } else { 2 };
        let mut o = 0;
        while o < outputs {
            let o_n = (outputs - o).min(widest);
            let mut r = 0;
            while r < rows {
                let r_n = (rows - r).min(4);
                let sums = match (o_n, r_n) {
                    (4, 2) => $tile::<4, 2, _>(w, x, d_in, o, r),
                    (4, 1) => $tile::<4, 1, _>(w, x, d_in, o, r),
                    (3, 2) => $tile::<3, 2, _>(w, x, d_in, o, r),
                    (3, 1) => $tile::<3, 1, _>(w, x, d_in, o, r),
                    (2, 4) => $tile::<2, 4, _>(w, x, d_in, o, r),
                    (2, 3) => $tile::<2, 3, _>(w, x, d_in, o, r),
                    (2, 2) => $tile::<2, 2, _>(w, x, d_in, o, r),
                    (2, 1) => $tile::<2, 1, _>(w, x, d_in, o, r),
                    (1, 4) => $tile::<1, 4, _>(w, x, d_in, o, r),
                    (1, 3) => $tile::<1, 3, _>(w, x, d_in, o, r),
                    (1, 2) => $tile::<1, 2, _>(w, x, d_in, o, r),
                    _ => $tile::<1, 1, _>(w, x, d_in, o, r),
                };
                for (i, row_sums) in sums.iter().take(o_n).enumerate() {
                    for (j, &s) in row_sums.iter().take(r_n).enumerate() {
                        out[(o + i) * rows + r + j] = s;
                    }
                }
                r += r_n;
            }
            o += o_n;
        }
    }};
}

/// A tile's sums: each accumulator's lanes added in one fixed order, then the inputs past the last
/// whole lane group (`body..d_in`) with `fused` multiply-adds or separate ones.
fn finish<const O: usize, const R: usize, W: WeightRows>(
    acc: [[[f32; LANES]; R]; O],
    (w, x, d_in, o, r): (&W, &[f32], usize, usize, usize),
    fused: bool,
) -> [[f32; 4]; 4] {
    let body = d_in - d_in % LANES;
    let mut sums = [[0.0f32; 4]; 4];
    for (a, row_acc) in acc.iter().enumerate() {
        for (b, lanes) in row_acc.iter().enumerate() {
            let mut s = sum_lanes(lanes);
            for k in body..d_in {
                let (wk, xk) = (w.value(o + a, k), x[(r + b) * d_in + k]);
                s = if fused {
                    wk.mul_add(xk, s)
                } else {
                    s + wk * xk
                };
            }
            sums[a][b] = s;
        }
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, LANES, WeightRows, finish};

    /// See `super::products`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn products<W: WeightRows>(
        w: &W,
        x: &[f32],
        rows: usize,
        d_in: usize,
        out: &mut [f32],
    ) {
        tiled!(tile, w, x, rows, d_in, out);
    }

    /// Dot products of outputs `o..o + O` with rows `r..r + R`.
    #[allow(clippy::needless_range_loop)] // `a`, `b` index registers and offsets alike
    #[target_feature(enable = "avx2,fma,f16c")]
    fn tile<const O: usize, const R: usize, W: WeightRows>(
        w: &W,
        x: &[f32],
        d_in: usize,
        o: usize,
        r: usize,
    ) -> [[f32; 4]; 4] {
        assert!(o + O <= w.outputs() && (r + R) * d_in <= x.len());
        let body = d_in - d_in % LANES;
        let mut acc = [[_mm256_setzero_ps(); R]; O];
        let mut i = 0;
        // Whole blocks, then groups of `LANES`: each accumulator takes the same multiply-adds
        // in the same order either way (`i` ascending by `LANES`).
        while i + BLOCK <= body {
            // SAFETY: `i + BLOCK <= d_in`, outputs `o + a` are rows of `w` (asserted), and this
            // function's features are the CPU's (its caller's promise).
            let blocks: [W::Block; O] = std::array::from_fn(|a| unsafe { w.block_avx2(o + a, i) });
            for g in 0..BLOCK / LANES {
                // SAFETY: as above.
                let wv: [__m256; O] =
                    std::array::from_fn(|a| unsafe { W::group_avx2(blocks[a], g) });
                for b in 0..R {
                    // SAFETY: `i + BLOCK <= d_in` and row `r + b` is in `x` (asserted).
                    let xv =
                        unsafe { _mm256_loadu_ps(x.as_ptr().add((r + b) * d_in + i + g * LANES)) };
                    for a in 0..O {
                        acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
                    }
                }
            }
            i += BLOCK;
        }
        while i < body {
            let mut wv = [_mm256_setzero_ps(); O];
            for (a, wv) in wv.iter_mut().enumerate() {
                // SAFETY: `i + LANES <= d_in`, as above.
                *wv = unsafe { w.lanes_avx2(o + a, i) };
            }
            for b in 0..R {
                // SAFETY: `i + LANES <= d_in` and row `r + b` is in `x` (asserted).
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((r + b) * d_in + i)) };
                for a in 0..O {
                    acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
                }
            }
            i += LANES;
        }
        let mut lanes = [[[0.0f32; LANES]; R]; O];
        for a in 0..O {
            for b in 0..R {
                // SAFETY: `lanes[a][b]` holds exactly one register's values.
                unsafe { _mm256_storeu_ps(lanes[a][b].as_mut_ptr(), acc[a][b]) };
            }
        }
        finish(lanes, (w, x, d_in, o, r), true)
    }
}

pub(super) mod portable {
    use super::{LANES, WeightRows, finish};

    /// See `super::products`.
    pub(in super::super) fn products<W: WeightRows>(
        w: &W,
        x: &[f32],
        rows: usize,
        d_in: usize,
        out: &mut [f32],
    ) {
        tiled!(tile, w, x, rows, d_in, out);
    }

    /// `avx2::tile`'s arithmetic in eight-lane arrays (vectorised by the compiler), with a
    /// separate multiply and add where that has a fused one.
    #[allow(clippy::needless_range_loop)] // `a`, `b`, `l` index lanes and offsets alike
    fn tile<const O: usize, const R: usize, W: WeightRows>(
        w: &W,
        x: &[f32],
        d_in: usize,
        o: usize,
        r: usize,
    ) -> [[f32; 4]; 4] {
        let body = d_in - d_in % LANES;
        let mut acc = [[[0.0f32; LANES]; R]; O];
        for i in (0..body).step_by(LANES) {
            let wv: [[f32; LANES]; O] = std::array::from_fn(|a| w.lanes(o + a, i));
            for b in 0..R {
                let xv = &x[(r + b) * d_in + i..][..LANES];
                for a in 0..O {
                    for l in 0..LANES {
                        acc[a][b][l] += wv[a][l] * xv[l];
                    }
                }
            }
        }
        finish(acc, (w, x, d_in, o, r), false)
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    /// Rows × outputs that cover every tile shape and a ragged inner length.
    #[test]
    fn equals_the_tensor_product_and_a_row_does_not_depend_on_its_batch() {
        let device = Default::default();
        let (d_in, d_out) = (203, 131);
        let w_out_in =
            Tensor::<B, 2>::random([d_out, d_in], Distribution::Uniform(-1.0, 1.0), &device);
        let bias = Tensor::<B, 1>::random([d_out], Distribution::Uniform(-1.0, 1.0), &device);
        let weight = w_out_in.clone().transpose(); // the `[in, out]` view PhiLinear holds
        let x = Tensor::<B, 2>::random([11, d_in], Distribution::Uniform(-1.0, 1.0), &device);
        let fast = super::linear(x.clone(), weight.clone(), bias.clone()).unwrap();
        let plain = x.clone().matmul(w_out_in.transpose()) + bias.clone().unsqueeze();
        let (fast, plain): (Vec<f32>, Vec<f32>) = (
            fast.into_data().to_vec().unwrap(),
            plain.into_data().to_vec().unwrap(),
        );
        for (a, b) in fast.iter().zip(&plain) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        for row in [0, 4, 10] {
            let alone = super::linear(
                x.clone().slice([row..row + 1, 0..d_in]),
                weight.clone(),
                bias.clone(),
            )
            .unwrap();
            let alone: Vec<f32> = alone.into_data().to_vec().unwrap();
            assert_eq!(alone, fast[row * d_out..(row + 1) * d_out], "row {row}");
        }
    }

    /// The portable path (CPUs without AVX2) against a plain sum, on every tile shape.
    #[test]
    fn the_portable_path_computes_the_same_products() {
        let (rows, d_in, outputs) = (7, 37, 5);
        let w: Vec<f32> = (0..outputs * d_in)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..rows * d_in)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0)
            .collect();
        let mut out = vec![0.0; outputs * rows];
        super::portable::products(&super::F32Rows { w: &w, d_in }, &x, rows, d_in, &mut out);
        for o in 0..outputs {
            for r in 0..rows {
                let want: f32 = (0..d_in).map(|k| w[o * d_in + k] * x[r * d_in + k]).sum();
                assert!((out[o * rows + r] - want).abs() < 1e-4, "{o} {r}");
            }
        }
    }

    #[test]
    fn a_weight_not_in_out_in_memory_is_left_to_the_generic_path() {
        let device = Default::default();
        let weight = Tensor::<B, 2>::random([8, 16], Distribution::Default, &device);
        let x = Tensor::<B, 2>::random([2, 8], Distribution::Default, &device);
        let bias = Tensor::<B, 1>::zeros([16], &device);
        assert!(super::linear(x, weight, bias).is_none());
    }
}
