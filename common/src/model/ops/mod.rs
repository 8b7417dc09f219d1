//! The model's execution choices, in one place: on burn's CPU backend, in inference and in f32,
//! phi-zoo's kernels (`cpu`); everywhere else (GPU backends, training under autodiff, f16 on the
//! CPU) the generic tensor code (`tensor`). Both compute the same f32 arithmetic, so a choice
//! changes speed, never results (each kernel is tested against the code it replaces). Model code
//! calls these functions and never asks which backend it runs on.

pub(super) mod cpu;
pub(super) mod tensor;

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use super::rotary::{PartialRotary, Partners, RotaryAngles};

/// Whether `B` runs on burn's CPU backend (directly or under autodiff): told by its device type.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn is_cpu<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        use std::any::TypeId;
        TypeId::of::<B::Device>() == TypeId::of::<burn::backend::flex::FlexDevice>()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

/// The CPU kernels apply to `x`: an f32 inference tensor on the CPU backend.
fn kernels_apply<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    is_cpu::<B>() && !B::ad_enabled(&x.device()) && x.dtype() == DType::F32
}

/// `x·W + b` for `x: [rows, in]` with `weight` in `PhiLinear`'s CPU layout, when the CPU kernel
/// applies (`None`: the caller's tensor code runs).
pub(crate) fn few_rows_linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    if !kernels_apply(x) || weight.dtype() != DType::F32 {
        return None;
    }
    #[cfg(feature = "flex")]
    return cpu::few_rows::linear(x.clone(), weight, bias);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, bias);
        None
    }
}

/// `x·W + b` for `x: [rows, in]` with many rows (a prompt) and `weight` in `PhiLinear`'s CPU
/// layout, when the CPU kernel applies (`None`: the caller's tensor code runs).
pub(crate) fn many_rows_linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Option<Tensor<B, 2>> {
    if !kernels_apply(x) || weight.dtype() != DType::F32 || bias.dtype() != DType::F32 {
        return None;
    }
    #[cfg(feature = "flex")]
    return cpu::many_rows::linear(x.clone(), weight, bias);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, bias);
        None
    }
}

/// `x·Wᵀ + b` for `x: [rows, in]` and a packed weight (`prompt`: many rows), when the CPU
/// kernel applies (`None`: the caller multiplies by the dequantized weight).
pub(crate) fn packed_linear<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &super::packed::PackedWeight,
    bias: Tensor<B, 1>,
    prompt: bool,
) -> Option<Tensor<B, 2>> {
    if !kernels_apply(x) || bias.dtype() != DType::F32 {
        return None;
    }
    #[cfg(feature = "flex")]
    return Some(cpu::packed::linear(x.clone(), weight, bias, prompt));
    #[cfg(not(feature = "flex"))]
    {
        let _ = (weight, bias, prompt);
        None
    }
}

/// `gelu_new`, elementwise.
pub(crate) fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if kernels_apply(&x) {
        cpu::gelu::gelu_new(x)
    } else {
        tensor::gelu_new(x)
    }
}

/// Partial rotary on `x: [batch, heads, seq, head_dim]` (queries or keys), in the same layout.
pub(crate) fn rotary<B: Backend>(
    x: Tensor<B, 4>,
    rotary: &PartialRotary<B>,
    angles: &RotaryAngles<B>,
) -> Tensor<B, 4> {
    if !kernels_apply(&x) {
        return rotary.apply(x, angles, rotary_partners::<B>());
    }
    // One pass over the projection's own `[batch, seq, heads·head_dim]` layout (of which `x`
    // is a view) instead of rotary's slices and concatenations.
    let [batch, heads, seq, head_dim] = x.dims();
    let flat = swap_heads_and_positions(x).reshape([batch, seq, heads * head_dim]);
    swap_heads_and_positions(
        cpu::rotary::apply(flat, head_dim, angles).reshape([batch, seq, heads, head_dim]),
    )
}

/// Key slots GPU backends attend over: the filled ones rounded up to a multiple of this.
pub(crate) const DECODE_BUCKET: usize = 256;

/// The key slots a cached pass on `B` attends over when `filled` of the cache's `slots` are
/// filled after it: on GPU backends (`Some`) the filled ones rounded up to a multiple of
/// [`DECODE_BUCKET`], the rest masked on the device, so that every decode step within a bucket
/// has the same shapes and launches the same kernels (each new shape is a new kernel,
/// compilation or autotune run there); on the CPU backend (`None`) exactly the filled ones,
/// which its kernels read in place.
pub(crate) fn attended_slots<B: Backend>(filled: usize, slots: usize) -> Option<usize> {
    if is_cpu::<B>() {
        return None;
    }
    let bucket_end = filled.div_ceil(DECODE_BUCKET) * DECODE_BUCKET;
    Some(bucket_end.min(slots).max(filled))
}

/// `stored` (a layer's cached keys or values, `[batch, heads, capacity, dim]`) with `new`
/// written at slots `start..start + seq`. On the CPU backend in the cache's own memory
/// (`cpu::cache_write`: burn-flex's `slice_assign` copies the whole buffer); elsewhere burn's
/// `slice_assign`, in place when the handle is the only one.
pub(crate) fn write_cache_slots<B: Backend>(
    stored: Tensor<B, 4>,
    start: usize,
    new: Tensor<B, 4>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if is_cpu::<B>() && !B::ad_enabled(&stored.device()) && stored.dtype() == DType::F32 {
        // No clone of `stored` may live while it is written, or it is copied first.
        return cpu::cache_write::write(stored, start, new.cast(DType::F32))
            .expect("the CPU backend's tensors");
    }
    slice_cache(stored, start, new)
}

fn slice_cache<B: Backend>(stored: Tensor<B, 4>, start: usize, new: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, heads, seq, dim] = new.dims();
    stored.slice_assign([0..batch, 0..heads, start..start + seq, 0..dim], new)
}

/// Slots a KV cache for `capacity` positions allocates per row on `B`: on GPU backends a whole
/// number of [`DECODE_BUCKET`]s, so attention always reads a whole number of buckets. (cubecl
/// 0.10's autotune, having tuned a product for 256 keys, launched the same kernel for 202,
/// which it cannot run: "Rhs dimension n=202 must be a multiple of plane size 8", a panic.)
pub(crate) fn cache_slots<B: Backend>(capacity: usize) -> usize {
    if is_cpu::<B>() {
        capacity
    } else {
        capacity.div_ceil(DECODE_BUCKET) * DECODE_BUCKET
    }
}

/// The ids of the `k` highest values of each row of `x: [rows, n]`, `[rows, k]`, in no set
/// order: `argtopk`, a reduction on the device, where the backend has it (the cubecl
/// backends); a sort on the CPU backend, which has no `argtopk` (burn's generic sort reads the
/// tensor back to the host, which on a GPU would be a full transfer).
pub(crate) fn top_indices<B: Backend>(x: Tensor<B, 2>, k: usize) -> Tensor<B, 2, Int> {
    if is_cpu::<B>() {
        return x.sort_descending_with_indices(1).1.narrow(1, 0, k);
    }
    x.argtopk(k, 1)
}

/// How the tensor code of rotary reads channel partners on `B`.
pub(crate) fn rotary_partners<B: Backend>() -> Partners {
    if is_cpu::<B>() {
        Partners::Slices
    } else {
        Partners::Gather
    }
}

/// `t: [batch, n, m, dim]` as `[batch, m, n, dim]` (heads first or positions first):
/// `swap_dims(1, 2)`, or a reshape when `n` or `m` is 1, as in a decode step, where both orders
/// are the same memory: GPU backends then get a contiguous tensor, not a strided view that a
/// later operation copies (a copy kernel per layer and step).
pub(crate) fn swap_heads_and_positions<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, n, m, dim] = t.dims();
    if n == 1 || m == 1 {
        t.reshape([batch, m, n, dim])
    } else {
        t.swap_dims(1, 2)
    }
}

/// Causal attention of queries `q: [batch, heads, seq, head_dim]` at the last `seq` key slots
/// over keys and values `[batch, kv_heads, keys, head_dim]`, hiding what `mask`
/// (`[batch, 1, seq, keys]`, true = hidden) hides when given (else plain causal masking):
/// `softmax(q·kᵀ·scale)·v`, scores and softmax in f32, heads merged, `[batch, seq, heads·head_dim]`;
/// the product with `v` in `matmul` when given (mixed precision). The CPU kernels, which run
/// f32 inference only, compute in f32.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    dropout: &Dropout,
    scale: f64,
    matmul: Option<FloatDType>,
) -> Tensor<B, 3> {
    let [batch, heads, seq, head_dim] = q.dims();
    // Back to `[batch, seq, heads·head_dim]`: for the CPU kernel's input, and the output's layout.
    let merge =
        |t: Tensor<B, 4>| swap_heads_and_positions(t).reshape([batch, seq, heads * head_dim]);
    if kernels_apply(&q) && seq > 1 {
        return cpu::attention::attention(merge(q), k, v, mask, heads, scale as f32);
    }
    // A decode step: a kernel that reads the cache in place and reduces over each row's own
    // slots only, so a row decodes the same in any batch.
    #[cfg(feature = "flex")]
    if kernels_apply(&q)
        && let Some(out) = cpu::decode_attention::attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask.clone(),
            scale as f32,
        )
    {
        return out;
    }
    merge(tensor::attention(q, k, v, mask, dropout, scale, matmul))
}

/// Cross-entropy rows of the logits `x = products + bias` (`products: [rows, vocab]`, f32, an
/// LM head's matmul without its bias) against `targets: [rows]`, each row weighted by
/// `weights: [rows]`: the gradient of `Σ w·nll` with respect to the logits,
/// `w·(softmax(x) − onehot(t))`, computed in the products' memory, and each row's
/// `nll = logsumexp(x) − x[t]` (0 where `w` is 0). For training's fused head and loss.
#[cfg(feature = "train")]
pub(crate) fn cross_entropy_rows<B: Backend>(
    products: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    #[cfg(feature = "flex")]
    if kernels_apply(&products) && bias.dtype() == DType::F32 {
        let device = products.device();
        let [rows, vocab] = products.dims();
        let targets: Vec<usize> = targets
            .into_data()
            .iter::<i64>()
            .map(|t| t as usize)
            .collect();
        assert!(
            targets.iter().all(|&t| t < vocab),
            "a target id is outside the {vocab}-token vocabulary (token stores check their ids)"
        );
        let weights = cpu::host_f32(weights);
        let bias = cpu::host_f32(bias);
        let mut nll = vec![];
        let grad = cpu::in_place(products, |values| {
            nll = cpu::cross_entropy::softmax_grad_rows(values, &bias, &targets, &weights);
        })
        .expect("kernels_apply: the CPU backend");
        let nll: Vec<f32> = nll.into_iter().map(|v| v as f32).collect();
        return (
            grad,
            Tensor::from_data(TensorData::new(nll, [rows]), &device),
        );
    }
    tensor::cross_entropy_rows(products, bias, targets, weights)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_backend_is_recognised_with_and_without_autodiff() {
        use burn::backend::{Autodiff, Flex};
        assert!(super::is_cpu::<Flex>());
        assert!(super::is_cpu::<Autodiff<Flex>>());
    }

    /// The CPU kernel and the tensor code other backends run agree (the kernel is checked
    /// against an f64 reference in its own module).
    #[cfg(feature = "train")]
    #[test]
    fn cross_entropy_rows_kernel_equals_the_tensor_version() {
        use burn::backend::Flex;
        use burn::prelude::*;
        use burn::tensor::Distribution;

        let device = Default::default();
        let (rows, vocab) = (6, 203);
        let products =
            Tensor::<Flex, 2>::random([rows, vocab], Distribution::Uniform(-8.0, 8.0), &device);
        let bias = Tensor::<Flex, 1>::random([vocab], Distribution::Uniform(-1.0, 1.0), &device);
        let targets = Tensor::<Flex, 1, Int>::from_data([0, 202, 17, 5, 99, 140], &device);
        let weights = Tensor::<Flex, 1>::from_data([0.5, 0.0, 0.25, 1.0, 0.125, 0.5], &device);
        let run = |kernel: bool| {
            let args = (
                products.clone(),
                bias.clone(),
                targets.clone(),
                weights.clone(),
            );
            let (grad, nll) = if kernel {
                super::cross_entropy_rows(args.0, args.1, args.2, args.3)
            } else {
                super::tensor::cross_entropy_rows(args.0, args.1, args.2, args.3)
            };
            let grad: Vec<f32> = grad.into_data().to_vec().unwrap();
            let nll: Vec<f32> = nll.into_data().to_vec().unwrap();
            (grad, nll)
        };
        let ((grad, nll), (tensor_grad, tensor_nll)) = (run(true), run(false));
        for (a, b) in grad.iter().zip(&tensor_grad) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        for (a, b) in nll.iter().zip(&tensor_nll) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
