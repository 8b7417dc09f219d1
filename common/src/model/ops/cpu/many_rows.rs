//! `x·Wᵀ + b` for many rows (a prompt) in f32, from the weight's `[out, in]` rows: f32 memory,
//! or f16 and bf16 rows converted exactly.
//!
//! burn's CPU matmul (the `gemm` crate without its nightly feature) runs AVX2 FMA, eight lanes,
//! even where the CPU has AVX-512: 116 GFLOP/s for phi-1.5's fc1 at 512 rows on 2 Zen 5 cores.
//! And f16 or bf16 weights had to be converted whole to f32 before each product. Here each task
//! converts a tile of 12 weight rows into f32 (in cache) and multiplies it with every input
//! row: the inputs are laid out once per call in panels of 32 rows, value `k` of the panel's
//! rows contiguous (`[k][32]`), so each step of the AVX-512 kernel is two loads of inputs, and
//! for each of the 12 outputs a broadcast of its weight and two FMAs (24 accumulators).
//!
//! Each (row, output) result has one definition, whatever the kernel, tile or row count:
//! `acc = fma(w[o][k], x[r][k], acc)` for `k` in order from `acc = 0`, then the bias added. So
//! a packed f16 or bf16 weight gives the f32 product over its converted values bit for bit, and
//! a row's result does not depend on the rows beside it.

use burn::prelude::*;
use rayon::prelude::*;

use super::isa::Isa;

/// Weight rows (outputs) per tile, converted once per task.
const TILE_OUTPUTS: usize = 12;

/// Input rows per panel: two AVX-512 registers.
const PANEL_ROWS: usize = 32;

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
        let row = |o: usize, out: &mut [f32]| out.copy_from_slice(&w[o * d_in..(o + 1) * d_in]);
        products(&x, rows, d_in, d_out, row, &b)
    })?;
    Some(Tensor::from_data(
        TensorData::new(y, [rows, d_out]),
        &device,
    ))
}

/// Where tasks write `[rows, d_out]` results: memory they share, each task writing only its own
/// outputs' columns.
#[derive(Clone, Copy)]
pub(super) struct Columns {
    y: *mut f32,
    d_out: usize,
}

// SAFETY: tasks write disjoint columns (`Columns::write`'s promise); the memory outlives them.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    pub(super) fn new(y: &mut [f32], d_out: usize) -> Self {
        Self {
            y: y.as_mut_ptr(),
            d_out,
        }
    }

    /// `y[r][o] = value`.
    ///
    /// # Safety
    /// `r` and `o` are in bounds of the memory given to `new`, and no other task writes
    /// column `o`.
    pub(super) unsafe fn write(self, r: usize, o: usize, value: f32) {
        debug_assert!(o < self.d_out);
        // SAFETY: the caller's promise.
        unsafe { *self.y.add(r * self.d_out + o) = value };
    }
}

/// `[rows, d_out]` products of `x` (`rows × d_in`) with the weight rows that `weight_row(o,
/// out)` writes as f32 (`d_in` values), plus the bias.
pub(crate) fn products(
    x: &[f32],
    rows: usize,
    d_in: usize,
    d_out: usize,
    weight_row: impl Fn(usize, &mut [f32]) + Sync,
    b: &[f32],
) -> Vec<f32> {
    products_with(Isa::best(), x, rows, d_in, d_out, weight_row, b)
}

/// `products` on a given instruction set.
pub(crate) fn products_with(
    isa: Isa,
    x: &[f32],
    rows: usize,
    d_in: usize,
    d_out: usize,
    weight_row: impl Fn(usize, &mut [f32]) + Sync,
    b: &[f32],
) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * d_out];
    if rows == 0 || d_out == 0 {
        return y;
    }
    if d_in == 0 {
        // No products: each row is the bias (and panels of no values cannot be cut).
        y.chunks_exact_mut(d_out)
            .for_each(|row| row.copy_from_slice(&b[..d_out]));
        return y;
    }
    let panels = rows.div_ceil(PANEL_ROWS);
    // Panel `p`: rows `32p..32p + 32` (zeros past the last), `[k][32]`.
    let mut x_t = vec![0.0f32; panels * d_in * PANEL_ROWS];
    x_t.par_chunks_mut(d_in * PANEL_ROWS)
        .enumerate()
        .for_each(|(p, panel)| {
            for r in 0..PANEL_ROWS.min(rows - p * PANEL_ROWS) {
                let row = &x[(p * PANEL_ROWS + r) * d_in..][..d_in];
                for (k, &v) in row.iter().enumerate() {
                    panel[k * PANEL_ROWS + r] = v;
                }
            }
        });
    let out = Columns::new(&mut y, d_out);
    (0..d_out.div_ceil(TILE_OUTPUTS))
        .into_par_iter()
        .for_each(|tile| {
            let first = tile * TILE_OUTPUTS;
            let outputs = TILE_OUTPUTS.min(d_out - first);
            // Outputs past the weight's last row repeat it; their sums are not written.
            let mut w = vec![0.0f32; TILE_OUTPUTS * d_in];
            for (o, row) in w.chunks_exact_mut(d_in).enumerate() {
                weight_row(first + o.min(outputs - 1), row);
            }
            for (p, panel) in x_t.chunks_exact(d_in * PANEL_ROWS).enumerate() {
                let mut sums = [[0.0f32; PANEL_ROWS]; TILE_OUTPUTS];
                match isa {
                    Isa::Portable => portable::tile(&w, panel, d_in, &mut sums),
                    // SAFETY: `Isa` names only levels the CPU has.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2::tile(&w, panel, d_in, &mut sums) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 | Isa::Avx512Vnni => unsafe {
                        avx512::tile(&w, panel, d_in, &mut sums)
                    },
                }
                let first_row = p * PANEL_ROWS;
                for (o, sums) in sums.iter().enumerate().take(outputs) {
                    for (r, &s) in sums.iter().enumerate().take(rows - first_row) {
                        // SAFETY: in bounds (`outputs`, the rows taken); this task owns the
                        // tile's outputs.
                        unsafe { out.write(first_row + r, first + o, s + b[first + o]) };
                    }
                }
            }
        });
    y
}

mod portable {
    use super::*;

    /// The definition: one chain of fused multiply-adds per (output, row), in `k` order.
    pub(super) fn tile(
        w: &[f32],
        panel: &[f32],
        d_in: usize,
        sums: &mut [[f32; PANEL_ROWS]; TILE_OUTPUTS],
    ) {
        for k in 0..d_in {
            let x = &panel[k * PANEL_ROWS..(k + 1) * PANEL_ROWS];
            for (o, acc) in sums.iter_mut().enumerate() {
                let w = w[o * d_in + k];
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a = w.mul_add(x, *a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// 12 outputs × 32 rows in 24 registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn tile(
        w: &[f32],
        panel: &[f32],
        d_in: usize,
        sums: &mut [[f32; PANEL_ROWS]; TILE_OUTPUTS],
    ) {
        assert!(w.len() >= TILE_OUTPUTS * d_in && panel.len() >= d_in * PANEL_ROWS);
        let (w, panel) = (w.as_ptr(), panel.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_OUTPUTS];
        for k in 0..d_in {
            // SAFETY: `k < d_in` and the lengths asserted above.
            unsafe {
                let x = panel.add(k * PANEL_ROWS);
                let (x_low, x_high) = (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16)));
                for (o, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*w.add(o * d_in + k));
                    acc[0] = _mm512_fmadd_ps(w, x_low, acc[0]);
                    acc[1] = _mm512_fmadd_ps(w, x_high, acc[1]);
                }
            }
        }
        for (acc, out) in acc.iter().zip(sums.iter_mut()) {
            // SAFETY: 32 values into a row of 32.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(16), acc[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// Outputs and rows per pass: 6 × 16 in 12 registers.
    const OUTPUTS: usize = 6;
    const ROWS: usize = 16;

    /// The tile in four passes of 6 outputs × 16 rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(
        w: &[f32],
        panel: &[f32],
        d_in: usize,
        sums: &mut [[f32; PANEL_ROWS]; TILE_OUTPUTS],
    ) {
        assert!(w.len() >= TILE_OUTPUTS * d_in && panel.len() >= d_in * PANEL_ROWS);
        let (w, panel) = (w.as_ptr(), panel.as_ptr());
        for o0 in (0..TILE_OUTPUTS).step_by(OUTPUTS) {
            for r0 in (0..PANEL_ROWS).step_by(ROWS) {
                let mut acc = [[_mm256_setzero_ps(); 2]; OUTPUTS];
                for k in 0..d_in {
                    // SAFETY: `k < d_in`, `o0 + o < 12`, `r0 + 16 <= 32`: in bounds.
                    unsafe {
                        let x = panel.add(k * PANEL_ROWS + r0);
                        let (x_low, x_high) = (_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8)));
                        for (o, acc) in acc.iter_mut().enumerate() {
                            let w = _mm256_set1_ps(*w.add((o0 + o) * d_in + k));
                            acc[0] = _mm256_fmadd_ps(w, x_low, acc[0]);
                            acc[1] = _mm256_fmadd_ps(w, x_high, acc[1]);
                        }
                    }
                }
                for (o, acc) in acc.iter().enumerate() {
                    // SAFETY: 16 values into row `o0 + o` at `r0`, within its 32.
                    unsafe {
                        let out = sums[o0 + o].as_mut_ptr().add(r0);
                        _mm256_storeu_ps(out, acc[0]);
                        _mm256_storeu_ps(out.add(8), acc[1]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::cpu::test_values as values;

    /// Every kernel gives the definition's bits for every (row, output) on a shape with a
    /// partial tile and a partial panel, close to burn's matmul; a row gives the same alone.
    #[test]
    fn tiled_products_are_the_definition() {
        let (d_out, d_in, rows) = (29, 70, 37);
        let w = values(d_out * d_in, 0.5);
        let x = values(rows * d_in, 2.5);
        let b = values(d_out, 1.5);
        let row = |o: usize, out: &mut [f32]| out.copy_from_slice(&w[o * d_in..(o + 1) * d_in]);
        let y = products(&x, rows, d_in, d_out, row, &b);
        for r in 0..rows {
            for o in 0..d_out {
                let definition = (0..d_in).fold(0.0f32, |acc, k| {
                    w[o * d_in + k].mul_add(x[r * d_in + k], acc)
                }) + b[o];
                assert_eq!(y[r * d_out + o].to_bits(), definition.to_bits(), "{r} {o}");
            }
        }
        for isa in Isa::available() {
            let by_kernel = products_with(isa, &x, rows, d_in, d_out, row, &b);
            let same = by_kernel
                .iter()
                .zip(&y)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{isa:?} differs from the best kernel");
        }
        let alone = products(&x[33 * d_in..34 * d_in], 1, d_in, d_out, row, &b);
        assert_eq!(alone, y[33 * d_out..34 * d_out], "row 33 alone");
        // No inputs: each row is the bias.
        let bias_only = products(&[], 2, 0, 3, |_, _| {}, &[1.0, 2.0, 3.0]);
        assert_eq!(bias_only, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
