//! The few-row product over packed weights: `Q8_0` and `Q4_0` in integers (`quant_dot.rs`), f16
//! and bf16 through the kernel of `few_rows.rs`, reading each weight row eight values at a time
//! from its packed bytes and converting them in registers exactly as
//! `PackedWeight::dequantize_row` does (every f16 and bf16 is exact in f32). So the f16 and bf16
//! result is the f32 kernel's on the converted weight, bit for bit, while the memory read per
//! token is half of f32's.

use burn::prelude::*;

use super::LANES;
use super::few_rows::{BLOCK, WeightRows, rows_times};
use crate::model::packed::{PackedWeight, WeightFormat};

/// `x·Wᵀ + b` for `x: [rows, in]` (f32) and a packed `[out, in]` weight, `[rows, out]`.
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: &PackedWeight,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let device = x.device();
    let [rows, d_in] = x.dims();
    let [d_out, _] = weight.dims();
    let x = super::host_f32(x);
    let b = super::host_f32(bias);
    let rows_of = |format| Packed {
        bytes: weight.bytes(),
        row_bytes: WeightFormat::row_bytes(format, d_in),
        outputs: d_out,
    };
    let y = match weight.format() {
        WeightFormat::F32 => rows_times(
            Rows::<F32Bytes>::new(rows_of(WeightFormat::F32)),
            &x,
            rows,
            d_in,
            &b,
        ),
        WeightFormat::F16 => rows_times(
            Rows::<F16>::new(rows_of(WeightFormat::F16)),
            &x,
            rows,
            d_in,
            &b,
        ),
        WeightFormat::Bf16 => rows_times(
            Rows::<Bf16>::new(rows_of(WeightFormat::Bf16)),
            &x,
            rows,
            d_in,
            &b,
        ),
        WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
            let x = super::quant_dot::QuantizedRows::new(&x, rows, d_in);
            super::quant_dot::products(weight, &x, rows, &b)
        }
    };
    Tensor::from_data(TensorData::new(y, [rows, d_out]), &device)
}

/// A packed weight's bytes, rows of `row_bytes` each.
#[derive(Clone, Copy)]
struct Packed<'a> {
    bytes: &'a [u8],
    row_bytes: usize,
    outputs: usize,
}

/// How one format turns eight values' bytes into f32.
trait Format {
    /// Values `i..i + LANES` of a row's bytes (`i` a multiple of `LANES`).
    fn lanes(row: &[u8], i: usize) -> [f32; LANES];
    /// Value `k` of a row's bytes.
    fn value(row: &[u8], k: usize) -> f32;
    /// Bytes of `BLOCK` values.
    const BLOCK_BYTES: usize;
    /// What a block's four groups share (its bytes, its scale).
    #[cfg(target_arch = "x86_64")]
    type Block: Copy;
    /// The block whose bytes start at `bytes` (`BLOCK_BYTES` of them).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx2(bytes: &[u8]) -> Self::Block;
    /// Group `g` of a block in an AVX2 register.
    ///
    /// # Safety
    /// As `block_avx2`, and `block` came from it.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group_avx2(block: Self::Block, g: usize) -> std::arch::x86_64::__m256;
    /// `lanes` in an AVX2 register.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; the row holds values `i..i + LANES`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256;
}

/// The rows of a weight packed in format `F`.
struct Rows<'a, F> {
    packed: Packed<'a>,
    first: usize,
    format: std::marker::PhantomData<F>,
}

impl<'a, F> Rows<'a, F> {
    fn new(packed: Packed<'a>) -> Self {
        Self {
            packed,
            first: 0,
            format: std::marker::PhantomData,
        }
    }

    fn row(&self, o: usize) -> &'a [u8] {
        let start = (self.first + o) * self.packed.row_bytes;
        &self.packed.bytes[start..start + self.packed.row_bytes]
    }
}

impl<F: Format + Sync> WeightRows for Rows<'_, F> {
    fn outputs(&self) -> usize {
        self.packed.outputs - self.first
    }

    #[inline]
    fn lanes(&self, o: usize, i: usize) -> [f32; LANES] {
        F::lanes(self.row(o), i)
    }

    #[inline]
    fn value(&self, o: usize, k: usize) -> f32 {
        F::value(self.row(o), k)
    }

    #[cfg(target_arch = "x86_64")]
    type Block = F::Block;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(&self, o: usize, i: usize) -> F::Block {
        let at = i / BLOCK * F::BLOCK_BYTES;
        // SAFETY: the caller's promise; the slice holds the block.
        unsafe { F::block_avx2(&self.row(o)[at..at + F::BLOCK_BYTES]) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: F::Block, g: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's promise.
        unsafe { F::group_avx2(block, g) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(&self, o: usize, i: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's promise, and `row` is the whole row.
        unsafe { F::lanes_avx2(self.row(o), i) }
    }

    fn starting_at(&self, first: usize) -> Self {
        Self {
            packed: self.packed,
            first: self.first + first,
            format: std::marker::PhantomData,
        }
    }
}

/// f32 in bytes (a packed weight can hold f32 too).
struct F32Bytes;
/// IEEE half precision.
struct F16;
/// bfloat16.
struct Bf16;

impl Format for F32Bytes {
    const BLOCK_BYTES: usize = 4 * BLOCK;
    #[cfg(target_arch = "x86_64")]
    type Block = *const u8;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(bytes: &[u8]) -> *const u8 {
        bytes.as_ptr()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: *const u8, g: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: the block's 128 bytes are in bounds (`block_avx2`'s slice).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(block.add(32 * g).cast()) }
    }

    fn lanes(row: &[u8], i: usize) -> [f32; LANES] {
        std::array::from_fn(|l| Self::value(row, i + l))
    }

    fn value(row: &[u8], k: usize) -> f32 {
        let b = &row[4 * k..4 * k + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256 {
        let bytes = &row[4 * i..4 * (i + LANES)];
        // SAFETY: 32 bytes in bounds (the slice above).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(bytes.as_ptr().cast()) }
    }
}

impl Format for F16 {
    const BLOCK_BYTES: usize = 2 * BLOCK;
    #[cfg(target_arch = "x86_64")]
    type Block = *const u8;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(bytes: &[u8]) -> *const u8 {
        bytes.as_ptr()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: *const u8, g: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the block's 64 bytes are in bounds; F16C converts exactly.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(block.add(16 * g).cast())) }
    }

    fn lanes(row: &[u8], i: usize) -> [f32; LANES] {
        std::array::from_fn(|l| Self::value(row, i + l))
    }

    fn value(row: &[u8], k: usize) -> f32 {
        half::f16::from_le_bytes([row[2 * k], row[2 * k + 1]]).to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let bytes = &row[2 * i..2 * (i + LANES)];
        // SAFETY: 16 bytes in bounds (the slice above); F16C converts exactly.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bytes.as_ptr().cast())) }
    }
}

impl Format for Bf16 {
    const BLOCK_BYTES: usize = 2 * BLOCK;
    #[cfg(target_arch = "x86_64")]
    type Block = *const u8;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(bytes: &[u8]) -> *const u8 {
        bytes.as_ptr()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: *const u8, g: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the block's 64 bytes are in bounds; a bf16 is the top half of its f32.
        unsafe {
            let halves = _mm_loadu_si128(block.add(16 * g).cast());
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16))
        }
    }

    fn lanes(row: &[u8], i: usize) -> [f32; LANES] {
        std::array::from_fn(|l| Self::value(row, i + l))
    }

    fn value(row: &[u8], k: usize) -> f32 {
        half::bf16::from_le_bytes([row[2 * k], row[2 * k + 1]]).to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let bytes = &row[2 * i..2 * (i + LANES)];
        // SAFETY: 16 bytes in bounds; a bf16 is the top half of its f32's bits.
        unsafe {
            let halves = _mm_loadu_si128(bytes.as_ptr().cast());
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16))
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use crate::model::packed::{PackedWeight, WeightFormat};

    type B = burn::backend::Flex;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.377 + seed).sin() * 2.0) * (1.0 + (i % 5) as f32))
            .collect()
    }

    /// Every format, every tile shape: the packed kernel gives the f32 kernel's result on the
    /// converted weight bit for bit for the float formats (both on the path this CPU takes), the
    /// block formats' integer products come close to it, every reader's lanes are the reference
    /// dequantization, and a row's result does not depend on its batch.
    #[test]
    fn packed_products_are_the_f32_products_of_the_dequantized_weight() {
        let device = Default::default();
        let (d_out, d_in) = (131, 96);
        let w = values(d_out * d_in, 0.5);
        let bias = Tensor::<B, 1>::from_data(TensorData::new(values(d_out, 1.5), [d_out]), &device);
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(values(7 * d_in, 2.5), [7, d_in]), &device);
        for format in WeightFormat::ALL {
            let packed = PackedWeight::pack(&w, [d_out, d_in], format).unwrap();
            let dequantized = packed.dequantize();
            // The reader's lanes are the reference dequantization, value for value.
            let rows = super::Packed {
                bytes: packed.bytes(),
                row_bytes: format.row_bytes(d_in),
                outputs: d_out,
            };
            let check = |lanes: &dyn Fn(usize, usize) -> [f32; super::LANES]| {
                for o in [0, 1, d_out - 1] {
                    for i in (0..d_in).step_by(super::LANES) {
                        let want = &dequantized[o * d_in + i..][..super::LANES];
                        assert_eq!(
                            lanes(o, i).map(f32::to_bits),
                            *want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{format} row {o} at {i}"
                        );
                    }
                }
            };
            use super::WeightRows;
            match format {
                WeightFormat::F32 => {
                    check(&|o, i| super::Rows::<super::F32Bytes>::new(rows).lanes(o, i))
                }
                WeightFormat::F16 => {
                    check(&|o, i| super::Rows::<super::F16>::new(rows).lanes(o, i))
                }
                WeightFormat::Bf16 => {
                    check(&|o, i| super::Rows::<super::Bf16>::new(rows).lanes(o, i))
                }
                // The block formats multiply in integers (`quant_dot`).
                WeightFormat::Q8_0 | WeightFormat::Q4_0 => {}
            }
            let weight =
                Tensor::<B, 2>::from_data(TensorData::new(dequantized, [d_out, d_in]), &device)
                    .transpose();
            let f32_kernel: Vec<f32> =
                crate::model::ops::cpu::few_rows::linear(x.clone(), weight, bias.clone())
                    .unwrap()
                    .into_data()
                    .to_vec()
                    .unwrap();
            let packed_kernel: Vec<f32> = super::linear(x.clone(), &packed, bias.clone())
                .into_data()
                .to_vec()
                .unwrap();
            if matches!(format, WeightFormat::Q8_0 | WeightFormat::Q4_0) {
                // Products in integers over quantized inputs (`quant_dot`'s tests bound each):
                // here within 1% of the outputs' scale.
                let d = packed_kernel
                    .iter()
                    .zip(&f32_kernel)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                let scale = f32_kernel.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(d < 1e-2 * scale, "{format}: {d} (scale {scale})");
            } else {
                assert_eq!(packed_kernel, f32_kernel, "{format}");
            }
            let alone: Vec<f32> =
                super::linear(x.clone().slice([3..4, 0..d_in]), &packed, bias.clone())
                    .into_data()
                    .to_vec()
                    .unwrap();
            assert_eq!(
                alone,
                packed_kernel[3 * d_out..4 * d_out],
                "{format}: row 3 alone"
            );
        }
    }

    /// The AVX2 readers dequantize as the portable ones do (on CPUs that have AVX2).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_readers_dequantize_as_the_reference() {
        use super::{Format, LANES};
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let (d_out, d_in) = (3, 64);
        let w = values(d_out * d_in, 4.0);
        /// Values `i..i + LANES` read by `lanes_avx2`, by the block reader, and by `lanes`.
        fn both<F: Format>(row: &[u8], i: usize) -> ([f32; LANES], [f32; LANES]) {
            use std::arch::x86_64::_mm256_storeu_ps;
            let (mut fast, mut grouped) = ([0.0f32; LANES], [0.0f32; LANES]);
            let at = i / super::BLOCK * F::BLOCK_BYTES;
            // SAFETY: the CPU has the features (checked above); the row holds the values.
            unsafe {
                _mm256_storeu_ps(fast.as_mut_ptr(), F::lanes_avx2(row, i));
                let block = F::block_avx2(&row[at..at + F::BLOCK_BYTES]);
                _mm256_storeu_ps(
                    grouped.as_mut_ptr(),
                    F::group_avx2(block, i % super::BLOCK / LANES),
                );
            }
            assert_eq!(
                fast.map(f32::to_bits),
                grouped.map(f32::to_bits),
                "group at {i}"
            );
            (fast, F::lanes(row, i))
        }
        for format in WeightFormat::ALL {
            let packed = PackedWeight::pack(&w, [d_out, d_in], format).unwrap();
            for o in 0..d_out {
                let row = packed.row(o);
                for i in (0..d_in).step_by(LANES) {
                    let (fast, slow) = match format {
                        WeightFormat::F32 => both::<super::F32Bytes>(row, i),
                        WeightFormat::F16 => both::<super::F16>(row, i),
                        WeightFormat::Bf16 => both::<super::Bf16>(row, i),
                        WeightFormat::Q8_0 | WeightFormat::Q4_0 => continue,
                    };
                    assert_eq!(
                        fast.map(f32::to_bits),
                        slow.map(f32::to_bits),
                        "{format} {o} {i}"
                    );
                }
            }
        }
    }
}
