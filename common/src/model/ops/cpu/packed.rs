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

/// `x·Wᵀ + b` for `x: [rows, in]` (f32) and a packed `[out, in]` weight, `[rows, out]`. A few
/// rows (decoding) read the packed bytes in place (`quant_dot`, or `few_rows` converting in
/// registers); a `prompt` runs `quant_gemm` for `Q8_0` and `Q4_0` and `many_rows` over rows
/// converted a tile at a time for the float formats.
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: &PackedWeight,
    bias: Tensor<B, 1>,
    prompt: bool,
) -> Tensor<B, 2> {
    let device = x.device();
    let [rows, d_in] = x.dims();
    let [d_out, _] = weight.dims();
    let x = super::host_f32(x);
    let b = super::host_f32(bias);
    let packed = Packed {
        bytes: weight.bytes(),
        row_bytes: weight.format().row_bytes(d_in),
        outputs: d_out,
    };
    let y = match weight.format() {
        WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
            let x = super::quant_dot::QuantizedRows::new(&x, rows, d_in);
            if prompt {
                super::quant_gemm::products(weight, &x, rows, &b)
            } else {
                super::quant_dot::products(weight, &x, rows, &b)
            }
        }
        _ if prompt => {
            let row = |o: usize, out: &mut [f32]| weight.dequantize_row(o, out);
            super::many_rows::products(&x, rows, d_in, d_out, row, &b)
        }
        WeightFormat::F32 => rows_times(Rows::<F32Bytes>::new(packed), &x, rows, d_in, &b),
        WeightFormat::F16 => rows_times(Rows::<F16>::new(packed), &x, rows, d_in, &b),
        WeightFormat::Bf16 => rows_times(Rows::<Bf16>::new(packed), &x, rows, d_in, &b),
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

/// How one float format turns its bytes into f32 (exactly: every f16 and bf16 is an f32).
trait Format {
    /// Bytes of one value.
    const BYTES: usize;
    /// The value whose bytes start at `bytes[0]`.
    fn value(bytes: &[u8]) -> f32;
    /// Eight values in an AVX2 register, their bytes from `bytes`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `bytes` holds `8 × BYTES` bytes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn eight_avx2(bytes: *const u8) -> std::arch::x86_64::__m256;
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
        std::array::from_fn(|l| self.value(o, i + l))
    }

    #[inline]
    fn value(&self, o: usize, k: usize) -> f32 {
        F::value(&self.row(o)[k * F::BYTES..(k + 1) * F::BYTES])
    }

    #[cfg(target_arch = "x86_64")]
    type Block = *const u8;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2(&self, o: usize, i: usize) -> *const u8 {
        self.row(o)[i * F::BYTES..(i + BLOCK) * F::BYTES].as_ptr()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2(block: *const u8, g: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: the block's `BLOCK` values are in bounds (`block_avx2`'s slice).
        unsafe { F::eight_avx2(block.add(g * LANES * F::BYTES)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes_avx2(&self, o: usize, i: usize) -> std::arch::x86_64::__m256 {
        let bytes = &self.row(o)[i * F::BYTES..(i + LANES) * F::BYTES];
        // SAFETY: the caller's promise; the slice holds the eight values.
        unsafe { F::eight_avx2(bytes.as_ptr()) }
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
    const BYTES: usize = 4;

    fn value(b: &[u8]) -> f32 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn eight_avx2(bytes: *const u8) -> std::arch::x86_64::__m256 {
        // SAFETY: 32 bytes in bounds (the caller's promise).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(bytes.cast()) }
    }
}

impl Format for F16 {
    const BYTES: usize = 2;

    fn value(b: &[u8]) -> f32 {
        half::f16::from_le_bytes([b[0], b[1]]).to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn eight_avx2(bytes: *const u8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: 16 bytes in bounds (the caller's promise); F16C converts exactly.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bytes.cast())) }
    }
}

impl Format for Bf16 {
    const BYTES: usize = 2;

    fn value(b: &[u8]) -> f32 {
        half::bf16::from_le_bytes([b[0], b[1]]).to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn eight_avx2(bytes: *const u8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: 16 bytes in bounds (the caller's promise); a bf16 is the top half of its f32.
        unsafe {
            let halves = _mm_loadu_si128(bytes.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16))
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use crate::model::packed::{PackedWeight, WeightFormat};

    use crate::model::ops::cpu::test_values as values;

    type B = burn::backend::Flex;

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
            let packed_kernel: Vec<f32> = super::linear(x.clone(), &packed, bias.clone(), false)
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
            let alone: Vec<f32> = super::linear(
                x.clone().slice([3..4, 0..d_in]),
                &packed,
                bias.clone(),
                false,
            )
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

    /// The AVX2 readers convert as the portable ones do (on CPUs that have AVX2): eight values
    /// at a time and by blocks of four groups.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_readers_convert_as_the_reference() {
        use super::{BLOCK, Format, LANES, Packed, Rows, WeightRows};
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let (d_out, d_in) = (3, 64);
        let w = values(d_out * d_in, 4.0);
        fn check<F: Format + Sync>(rows: Rows<'_, F>, d_out: usize, d_in: usize) {
            use std::arch::x86_64::_mm256_storeu_ps;
            for o in 0..d_out {
                for i in (0..d_in).step_by(LANES) {
                    let (mut eight, mut grouped) = ([0.0f32; LANES], [0.0f32; LANES]);
                    // SAFETY: the CPU has the features (checked above); the values exist.
                    unsafe {
                        _mm256_storeu_ps(eight.as_mut_ptr(), rows.lanes_avx2(o, i));
                        let block = rows.block_avx2(o, i - i % BLOCK);
                        let group = Rows::<F>::group_avx2(block, i % BLOCK / LANES);
                        _mm256_storeu_ps(grouped.as_mut_ptr(), group);
                    }
                    let slow = rows.lanes(o, i).map(f32::to_bits);
                    assert_eq!(eight.map(f32::to_bits), slow, "row {o} at {i}");
                    assert_eq!(grouped.map(f32::to_bits), slow, "row {o} block at {i}");
                }
            }
        }
        for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16] {
            let packed = PackedWeight::pack(&w, [d_out, d_in], format).unwrap();
            let bytes = Packed {
                bytes: packed.bytes(),
                row_bytes: format.row_bytes(d_in),
                outputs: d_out,
            };
            match format {
                WeightFormat::F32 => check(Rows::<super::F32Bytes>::new(bytes), d_out, d_in),
                WeightFormat::F16 => check(Rows::<super::F16>::new(bytes), d_out, d_in),
                _ => check(Rows::<super::Bf16>::new(bytes), d_out, d_in),
            }
        }
    }
}
