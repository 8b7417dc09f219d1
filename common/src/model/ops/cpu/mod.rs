//! phi-zoo's kernels for burn's CPU backend (inference, f32).
//!
//! burn's CPU backend runs each elementwise op as its own single-threaded pass and its attention
//! op on one thread over every key. At prefill shapes those passes, not the matmuls, took a third
//! of phi-1.5's time on 2 cores (`examples/prefill_profile`). The kernels here do the same
//! arithmetic in fewer passes, on every core; every other backend, and training (autodiff),
//! keeps the generic tensor code they replace.

pub(crate) mod attention;
#[cfg(feature = "flex")]
pub(crate) mod cache_write;
#[cfg(all(feature = "train", feature = "flex"))]
pub(crate) mod cross_entropy;
#[cfg(feature = "flex")]
pub(crate) mod decode_attention;
#[cfg(feature = "flex")]
pub(crate) mod few_rows;
pub(crate) mod gelu;
#[cfg(feature = "flex")]
pub(crate) mod isa;
#[cfg(feature = "flex")]
pub(crate) mod many_rows;
#[cfg(feature = "flex")]
pub(crate) mod packed;
#[cfg(feature = "flex")]
pub(crate) mod quant_dot;
#[cfg(feature = "flex")]
pub(crate) mod quant_gemm;
pub(crate) mod rotary;

use burn::prelude::*;
use rayon::prelude::*;

/// Runs `kernel(first_row, rows)` over `x` (f32, seen as rows of `row_len` values) in parallel
/// chunks of whole rows, in place when `x` owns its memory (burn then moves it, no copy).
pub(crate) fn map_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    row_len: usize,
    kernel: impl Fn(usize, &mut [f32]) + Sync,
) -> Tensor<B, D> {
    let device = x.device();
    let shape = x.shape();
    let mut values = host_f32(x);
    let rows = values.len() / row_len;
    // A few chunks per thread balance the load without much bookkeeping.
    let chunk_rows = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
    values
        .par_chunks_mut(chunk_rows * row_len)
        .enumerate()
        .for_each(|(chunk, part)| kernel(chunk * chunk_rows, part));
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// `x`'s values (f32, as the dispatch checks), moved out without a copy when `x` owns its memory.
pub(crate) fn host_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data()
        .into_vec()
        .expect("the CPU fast paths run on f32 tensors only")
}

/// Lanes of the kernels' dot-product accumulators: an AVX2 register of f32, and a fixed order
/// of additions whatever the CPU.
#[cfg(feature = "flex")]
pub(crate) const LANES: usize = 8;

/// Running lanes added up, always in this order: the few-row projection and decode attention
/// promise a row the same bits in any batch, and the cross-entropy kernel the same bits on any
/// CPU.
#[cfg(feature = "flex")]
pub(crate) fn sum_lanes<T: Copy + std::ops::Add<Output = T>>(lanes: &[T; LANES]) -> T {
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// A mask's values (true = hidden), for the attention kernels.
pub(crate) fn host_bools<B: Backend, const D: usize>(mask: Tensor<B, D, Bool>) -> Vec<bool> {
    mask.into_data()
        .into_vec()
        .expect("a Bool tensor reads back as bools")
}

/// The CPU backend's tensor behind `t`, when `B` is that backend.
#[cfg(feature = "flex")]
pub(crate) fn flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<burn_flex::FlexTensor> {
    use std::any::Any;
    let primitive = t.into_primitive().tensor();
    (Box::new(primitive) as Box<dyn Any>)
        .downcast::<burn_flex::FlexTensor>()
        .ok()
        .map(|t| *t)
}

/// `x` (an f32 tensor of the CPU backend) with `kernel` run over its values in place: no copy
/// when `x` owns contiguous memory, as a fresh matmul output does (`host_f32` and
/// `Tensor::from_data` would copy a buffer the allocator did not align as burn wants). `None`
/// when `B` is not the CPU backend.
#[cfg(feature = "flex")]
pub(crate) fn in_place<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kernel: impl FnOnce(&mut [f32]),
) -> Option<Tensor<B, D>> {
    use std::any::Any;
    let mut t = flex(x)?;
    let len = t.layout().shape().num_elements();
    if t.layout().contiguous_offsets() != Some((0, len)) {
        t = t.to_contiguous();
    }
    // Copies first only if the memory is shared (copy-on-write).
    kernel(&mut t.storage_mut::<f32>()[..len]);
    let primitive = (Box::new(t) as Box<dyn Any>)
        .downcast::<B::FloatTensorPrimitive>()
        .ok()?;
    Some(Tensor::from_primitive(
        burn::tensor::TensorPrimitive::Float(*primitive),
    ))
}

/// `f` over `weight`'s `[out, in]` f32 memory, when `weight` is burn's `[in, out]` view of it
/// (`PhiLinear`'s CPU layout) on the CPU backend; `None` otherwise.
#[cfg(feature = "flex")]
pub(crate) fn with_out_in_memory<B: Backend, T>(
    weight: Tensor<B, 2>,
    f: impl FnOnce(&[f32]) -> T,
) -> Option<T> {
    let [d_in, d_out] = weight.dims();
    let weight = flex(weight)?;
    let layout = weight.layout();
    if layout.strides() != [1, d_in as isize] {
        return None;
    }
    let start = layout.start_offset();
    Some(f(&weight.storage::<f32>()[start..start + d_out * d_in]))
}

/// Values for the kernels' tests: varied signs and magnitudes, no two rows alike.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.377 + seed).sin() * 2.0) * (1.0 + (i % 5) as f32))
        .collect()
}
