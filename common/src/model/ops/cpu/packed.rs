//! The few-row product over packed weights (f16, bf16, `Q8_0`, `Q4_0`): the kernel of
//! `few_rows.rs`, reading each weight row eight values at a time from its packed bytes and
//! dequantizing them in registers exactly as `PackedWeight::dequantize_row` does (every value
//! an f16 or bf16, or a small integer times an f16 scale, is exact in f32). So the result is the
//! f32 kernel's on the dequantized weight, bit for bit, while the memory read per token is the
//! packed size: half of f32's in f16, 34/128 in `Q8_0`, 18/128 in `Q4_0`.

use burn::prelude::*;

use super::LANES;
use super::few_rows::{WeightRows, rows_times};
use crate::model::packed::{PackedWeight, QK, WeightFormat, scale};

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
        WeightFormat::Q8_0 => rows_times(
            Rows::<Q8>::new(rows_of(WeightFormat::Q8_0)),
            &x,
            rows,
            d_in,
            &b,
        ),
        WeightFormat::Q4_0 => rows_times(
            Rows::<Q4>::new(rows_of(WeightFormat::Q4_0)),
            &x,
            rows,
            d_in,
            &b,
        ),
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
/// `Q8_0` blocks: an f16 scale, 32 signed bytes.
struct Q8;
/// `Q4_0` blocks: an f16 scale, 16 bytes of two four-bit values (elements j and j + 16).
struct Q4;

impl Format for F32Bytes {
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

/// A quantized block's bytes and where value `i` of the row falls in it: the block, and the
/// group of eight within it.
fn block_of(row: &[u8], i: usize, block_bytes: usize) -> (&[u8], usize) {
    let block = i / QK;
    (
        &row[block * block_bytes..(block + 1) * block_bytes],
        (i % QK) / LANES,
    )
}

impl Format for Q8 {
    fn lanes(row: &[u8], i: usize) -> [f32; LANES] {
        let (block, group) = block_of(row, i, 2 + QK);
        let d = scale(block);
        let q = &block[2 + group * LANES..][..LANES];
        std::array::from_fn(|l| d * (q[l] as i8) as f32)
    }

    fn value(row: &[u8], k: usize) -> f32 {
        let (block, _) = block_of(row, k, 2 + QK);
        scale(block) * (block[2 + k % QK] as i8) as f32
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let (block, group) = block_of(row, i, 2 + QK);
        let d = _mm256_set1_ps(scale(block));
        let q = &block[2 + group * LANES..][..LANES];
        // SAFETY: 8 bytes in bounds (the slice above).
        unsafe {
            let bytes = _mm_loadl_epi64(q.as_ptr().cast());
            _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)))
        }
    }
}

impl Format for Q4 {
    fn lanes(row: &[u8], i: usize) -> [f32; LANES] {
        let (block, group) = block_of(row, i, 2 + QK / 2);
        let d = scale(block);
        // Groups 0 and 1 are the low nibbles of bytes 0..8 and 8..16; groups 2 and 3 the high.
        let bytes = &block[2 + (group % 2) * LANES..][..LANES];
        let shift = if group >= 2 { 4 } else { 0 };
        std::array::from_fn(|l| d * (((bytes[l] >> shift) & 0x0F) as i32 - 8) as f32)
    }

    fn value(row: &[u8], k: usize) -> f32 {
        Self::lanes(row, k - k % LANES)[k % LANES]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(row: &[u8], i: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let (block, group) = block_of(row, i, 2 + QK / 2);
        let d = _mm256_set1_ps(scale(block));
        let bytes = &block[2 + (group % 2) * LANES..][..LANES];
        // SAFETY: 8 bytes in bounds (the slice above).
        unsafe {
            let mut v = _mm_loadl_epi64(bytes.as_ptr().cast());
            if group >= 2 {
                v = _mm_srli_epi16(v, 4);
            }
            let nibbles = _mm_and_si128(v, _mm_set1_epi8(0x0F));
            let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(nibbles), _mm256_set1_epi32(8));
            _mm256_mul_ps(d, _mm256_cvtepi32_ps(q))
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
    /// dequantized weight bit for bit (both on the path this CPU takes), the portable reader's
    /// lanes are the reference dequantization, and a row's result does not depend on its batch.
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
                WeightFormat::Q8_0 => {
                    check(&|o, i| super::Rows::<super::Q8>::new(rows).lanes(o, i))
                }
                WeightFormat::Q4_0 => {
                    check(&|o, i| super::Rows::<super::Q4>::new(rows).lanes(o, i))
                }
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
            assert_eq!(packed_kernel, f32_kernel, "{format}");
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
        fn both<F: Format>(row: &[u8], i: usize) -> ([f32; LANES], [f32; LANES]) {
            let mut fast = [0.0f32; LANES];
            // SAFETY: the CPU has the features (checked above); the row holds the values.
            unsafe {
                std::arch::x86_64::_mm256_storeu_ps(fast.as_mut_ptr(), F::lanes_avx2(row, i));
            }
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
                        WeightFormat::Q8_0 => both::<super::Q8>(row, i),
                        WeightFormat::Q4_0 => both::<super::Q4>(row, i),
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
