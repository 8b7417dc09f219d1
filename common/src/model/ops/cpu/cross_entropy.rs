//! Cross-entropy rows and their gradient in one parallel pass over the logits, in place.
//!
//! The LM head's logits are `[rows, 51200]`: at the tiny config's batch, 39M values whose
//! exponentials took most of the loss's time through libm's scalar `expf`. Here the exponential
//! is a vectorizable polynomial (`exp_lanes`), compiled for AVX2 when the CPU has it (checked at
//! run time) and for the baseline otherwise: the same operations in the same order, no fused
//! multiply-adds, so every CPU gets the same bits.

use rayon::prelude::*;

use super::{LANES, sum_lanes};

/// For each row of `logits` (`[rows, vocab]` products without the bias) with target `t` and
/// weight `w`, the logits `x = row + bias`: overwrites the row with `w·(softmax(x) − onehot(t))`,
/// the gradient of `w·nll` with respect to `x`, and returns each row's
/// `nll = logsumexp(x) − x[t]` (as `ln Σ exp(x − max) − (x[t] − max)`, the sum in f64). A row
/// of weight 0 becomes zeros with nll 0.
pub(crate) fn softmax_grad_rows(
    logits: &mut [f32],
    bias: &[f32],
    targets: &[usize],
    weights: &[f32],
) -> Vec<f64> {
    let vocab = bias.len();
    let avx2 = has_avx2();
    let mut nll = vec![0.0; targets.len()];
    logits
        .par_chunks_mut(vocab)
        .zip(nll.par_iter_mut())
        .zip(targets.par_iter().zip(weights.par_iter()))
        .for_each(|((row, nll), (&target, &weight))| {
            *nll = if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    row_avx2(row, bias, target, weight)
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!()
            } else {
                row_gradient(row, bias, target, weight)
            }
        });
    nll
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `row_gradient` with AVX2 registers for its exponentials.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(row: &mut [f32], bias: &[f32], target: usize, weight: f32) -> f64 {
    row_with(row, bias, target, weight, |block| avx2::exp_lanes(block))
}

/// One row with the portable exponential (see `softmax_grad_rows`).
fn row_gradient(row: &mut [f32], bias: &[f32], target: usize, weight: f32) -> f64 {
    row_with(row, bias, target, weight, exp_lanes)
}

/// One row: its maximum, its exponentials (by `exp`, a block at a time) stored and summed, then
/// scaled. A row holding NaN or an infinity gets NaN throughout, as the tensor version would.
#[inline(always)]
fn row_with(
    row: &mut [f32],
    bias: &[f32],
    target: usize,
    weight: f32,
    exp: impl Fn([f32; LANES]) -> [f32; LANES],
) -> f64 {
    if weight == 0.0 {
        row.fill(0.0);
        return 0.0;
    }
    let tail = row.len() - row.len() % LANES;
    // The maximum per lane, and `Σ 0·x`, which is NaN exactly when some value is not finite.
    let (mut lanes, mut finite) = ([f32::NEG_INFINITY; LANES], [0.0f32; LANES]);
    for (x, b) in row[..tail]
        .chunks_exact(LANES)
        .zip(bias.chunks_exact(LANES))
    {
        for i in 0..LANES {
            let v = x[i] + b[i];
            lanes[i] = if v > lanes[i] { v } else { lanes[i] };
            finite[i] += v * 0.0;
        }
    }
    let rest: Vec<f32> = row[tail..]
        .iter()
        .zip(&bias[tail..])
        .map(|(x, b)| x + b)
        .collect();
    let max = lanes
        .iter()
        .chain(&rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let check: f32 = finite.iter().sum::<f32>() + rest.iter().map(|v| v * 0.0).sum::<f32>();
    if check.is_nan() {
        row.fill(f32::NAN);
        return f64::NAN;
    }
    let shifted_target = row[target] + bias[target] - max;
    let mut sums = [0.0f64; LANES];
    for (x, b) in row[..tail]
        .chunks_exact_mut(LANES)
        .zip(bias.chunks_exact(LANES))
    {
        let mut block = [0.0; LANES];
        for i in 0..LANES {
            block[i] = x[i] + b[i] - max;
        }
        let e = exp(block);
        x.copy_from_slice(&e);
        for i in 0..LANES {
            sums[i] += e[i] as f64;
        }
    }
    let mut sum = sum_lanes(&sums);
    for (x, v) in row[tail..].iter_mut().zip(rest) {
        let mut block = [0.0; LANES];
        block[0] = v - max;
        *x = exp(block)[0];
        sum += *x as f64;
    }
    let scale = (weight as f64 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= scale);
    row[target] -= weight;
    sum.ln() - shifted_target as f64
}

/// The exponential's constants (see `exp_lanes`).
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2²³: adding it rounds to an integer, held in the low bits.
const ROUND: f32 = 12_582_912.0;
/// `ln 2` in two parts, the first with few enough bits that `n·LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this, `exp` leaves the normal floats: the result is 0.
const SMALLEST: f32 = -87.3;
/// `exp(r)`'s Taylor coefficients from `r⁷` down to `r⁰`.
const TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `exp(x)` per lane for `x ≤ 0` (what a row minus its maximum holds), within 2 ulp of the
/// true value; 0 below `SMALLEST`.
///
/// `x = n·ln 2 + r` with `n` the nearest integer to `x/ln 2` and `|r| ≤ ln 2 / 2`; `exp(r)` by
/// its Taylor series to the 7th power (truncation below 1e-8 relative), times `2ⁿ` written
/// straight into the exponent bits. `avx2::exp_lanes` performs the same operations in the same
/// order (multiplies and adds, never fused), so both give the same bits.
fn exp_lanes(x: [f32; LANES]) -> [f32; LANES] {
    x.map(|x| {
        let v = if x > SMALLEST { x } else { SMALLEST };
        let rounded = v * LOG2_E + ROUND;
        let n = rounded - ROUND;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let p = TAYLOR[1..].iter().fold(TAYLOR[0], |p, &c| p * r + c);
        // `rounded`'s bits are ROUND's plus n: 2ⁿ's exponent field with no float-to-int step.
        let biased = rounded
            .to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(127);
        let scaled = p * f32::from_bits(biased << 23);
        if x < SMALLEST { 0.0 } else { scaled }
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LN2_HI, LN2_LO, LOG2_E, ROUND, SMALLEST, TAYLOR};
    use crate::model::ops::cpu::LANES;

    /// `super::exp_lanes` on one register.
    #[target_feature(enable = "avx2")]
    pub(super) fn exp_lanes(x: [f32; LANES]) -> [f32; LANES] {
        // SAFETY: `x` and `out` are one register's worth of f32 each.
        let x = unsafe { _mm256_loadu_ps(x.as_ptr()) };
        let smallest = _mm256_set1_ps(SMALLEST);
        // maxps(x, s) is x where x > s, else s: the portable `if`.
        let v = _mm256_max_ps(x, smallest);
        let round = _mm256_set1_ps(ROUND);
        let rounded = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(LOG2_E)), round);
        let n = _mm256_sub_ps(rounded, round);
        let r = _mm256_sub_ps(
            _mm256_sub_ps(v, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
            _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
        );
        let mut p = _mm256_set1_ps(TAYLOR[0]);
        for &c in &TAYLOR[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
        }
        let biased = _mm256_add_epi32(
            _mm256_sub_epi32(
                _mm256_castps_si256(rounded),
                _mm256_set1_epi32(ROUND.to_bits() as i32),
            ),
            _mm256_set1_epi32(127),
        );
        let scaled = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
        let below = _mm256_cmp_ps(x, smallest, _CMP_LT_OQ);
        let out = _mm256_blendv_ps(scaled, _mm256_setzero_ps(), below);
        let mut lanes = [0.0; LANES];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), out) };
        lanes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same quantities in plain f64, one step at a time.
    fn reference(row: &[f32], bias: &[f32], target: usize, weight: f64) -> (Vec<f64>, f64) {
        let x: Vec<f64> = row
            .iter()
            .zip(bias)
            .map(|(&x, &b)| (x + b) as f64)
            .collect();
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|&v| (v - max).exp()).sum();
        let grad = x
            .iter()
            .enumerate()
            .map(|(i, &v)| weight * ((v - max).exp() / sum - (i == target) as u8 as f64))
            .collect();
        (grad, sum.ln() + max - x[target])
    }

    #[test]
    fn rows_equal_the_f64_reference() {
        // 37: four blocks of eight and a ragged tail.
        let vocab = 37;
        let rows = 5;
        let values: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 29 % 31) as f32 - 15.0) * 0.7)
            .collect();
        let bias: Vec<f32> = (0..vocab).map(|i| (i as f32 * 0.3).sin()).collect();
        let targets = [0, 36, 5, 17, 2];
        let weights = [0.25, 0.5, 0.0, 1.0, 0.125];
        let mut grads = values.clone();
        let nll = softmax_grad_rows(&mut grads, &bias, &targets, &weights);
        for r in 0..rows {
            let row = &values[r * vocab..(r + 1) * vocab];
            let (grad, loss) = reference(row, &bias, targets[r], weights[r] as f64);
            for (a, b) in grads[r * vocab..(r + 1) * vocab].iter().zip(&grad) {
                assert!((*a as f64 - b).abs() < 1e-7, "row {r}: {a} vs {b}");
            }
            let expected = if weights[r] == 0.0 { 0.0 } else { loss };
            assert!(
                (nll[r] - expected).abs() < 1e-6,
                "row {r}: {} vs {expected}",
                nll[r]
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulp_down_to_the_normal_floats() {
        let mut worst = 0.0f64;
        for i in 0..=873_000 {
            let x = -(i as f32) * 1e-4;
            let ours = exp_lanes([x; LANES])[0] as f64;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((ours - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp_lanes([-90.0; LANES])[0], 0.0);
        assert_eq!(exp_lanes([0.0; LANES])[0], 1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_build_gives_the_portable_bits() {
        if !has_avx2() {
            return;
        }
        let vocab = 1003;
        let values: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919 % 1009) as f32) * 0.02 - 9.0)
            .collect();
        let bias: Vec<f32> = (0..vocab).map(|i| (i as f32).cos()).collect();
        let (mut fast, mut portable) = (values.clone(), values);
        // SAFETY: checked above.
        let a = unsafe { row_avx2(&mut fast, &bias, 11, 0.5) };
        let b = row_gradient(&mut portable, &bias, 11, 0.5);
        assert_eq!(a.to_bits(), b.to_bits());
        assert!(
            fast.iter()
                .zip(&portable)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}
