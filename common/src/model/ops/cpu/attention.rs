//! Causal attention on the CPU for prompts: parallel over (row, head, block of queries), each
//! block seeing only the keys up to its last query, reading and writing the projections' own
//! `[batch, seq, heads * head_dim]` layout.

use burn::prelude::*;
use rayon::prelude::*;

/// Queries per work item: larger blocks make better matmuls, smaller ones skip more future keys
/// and balance the threads better. For phi-1.5 at 512 tokens, 32..512 all timed 52-65 ms per
/// layer (`examples/prefill_profile`), within this machine's noise; 128 sits in the middle.
const QUERY_BLOCK: usize = 128;

/// `softmax(q·kᵀ·scale, hiding masked keys)·v` for `q: [batch, seq, heads * dim]` (queries
/// after rotary, heads not yet split) and `k`, `v: [batch, kv_heads, keys, dim]`, where query
/// `i` sits at key slot `keys - seq + i`; returns `[batch, seq, heads * dim]`, heads merged.
/// Each query sees the keys up to its own slot, less those `mask` (`[batch, 1, seq, keys]`,
/// true = hidden) hides. Scores and softmax are f32, as on every path.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    heads: usize,
    scale: f32,
) -> Tensor<B, 3> {
    let device = q.device();
    let [batch, seq, width] = q.dims();
    let [_, kv_heads, keys, dim] = k.dims();
    let (q, k, v) = (super::host_f32(q), super::host_f32(k), super::host_f32(v));
    let hidden = mask.map(super::host_bools);
    let shape = Shape {
        seq,
        keys,
        heads,
        kv_heads,
        dim,
    };
    let mut out = vec![0.0f32; batch * seq * width];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let blocks = seq.div_ceil(QUERY_BLOCK);
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|item| {
            let (row, rest) = (item / (heads * blocks), item % (heads * blocks));
            let (head, block) = (rest / blocks, rest % blocks);
            let queries = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(seq);
            // SAFETY: items write disjoint (row, query, head) cells of `out`, which outlives the loop.
            unsafe {
                attend_block(
                    &shape,
                    Item { row, head, queries },
                    &q,
                    &k,
                    &v,
                    hidden.as_deref(),
                    scale,
                    &out_ptr,
                )
            };
        });
    Tensor::from_data(TensorData::new(out, [batch, seq, width]), &device)
}

struct Shape {
    seq: usize,
    keys: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
}

struct Item {
    row: usize,
    head: usize,
    queries: std::ops::Range<usize>,
}

/// The output buffer, written by every thread at disjoint places.
struct SharedOut(*mut f32);
unsafe impl Sync for SharedOut {}

/// One (row, head, query block): scores against the keys it may see, softmax, times values.
///
/// # Safety
/// `out` must point to `batch × seq × heads × dim` floats, and no other call may write this
/// item's (row, queries, head) cells at the same time.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_block(
    s: &Shape,
    item: Item,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hidden: Option<&[bool]>,
    scale: f32,
    out: &SharedOut,
) {
    let Item { row, head, queries } = item;
    let width = s.heads * s.dim;
    let rows = queries.len();
    // Key/value head serving this query head (grouped-query attention).
    let kv_head = head / (s.heads / s.kv_heads);
    let kv_offset = (row * s.kv_heads + kv_head) * s.keys * s.dim;
    // The block's last query sits at key slot keys - seq + queries.end - 1.
    let seen = s.keys - s.seq + queries.end;
    let q_offset = (row * s.seq + queries.start) * width + head * s.dim;
    let mut probs = vec![0.0f32; rows * seen];
    // SAFETY (both products): the pointers and strides stay inside `q`, `k`, `v`, `probs` and
    // this item's cells of `out`, as the offsets above are computed from their shapes.
    unsafe {
        // probs[i, j] = scale · q_i · k_j
        gemm::gemm(
            rows,
            seen,
            s.dim,
            probs.as_mut_ptr(),
            1,
            seen as isize,
            false,
            q.as_ptr().add(q_offset),
            1,
            width as isize,
            k.as_ptr().add(kv_offset),
            s.dim as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (i, scores) in probs.chunks_exact_mut(seen).enumerate() {
        let query = queries.start + i;
        // Causally, keys after the query's own slot are hidden: no exp is spent on them.
        let own_slot = s.keys - s.seq + query;
        let (scores, future) = scores.split_at_mut(own_slot + 1);
        future.fill(0.0);
        if let Some(hidden) = hidden {
            let hidden = &hidden[(row * s.seq + query) * s.keys..][..own_slot + 1];
            for (score, &h) in scores.iter_mut().zip(hidden) {
                if h {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            // Nothing visible (no mask phi-zoo builds does this): attend to nothing.
            scores.fill(0.0);
            continue;
        }
        let mut sum = 0.0f32;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        for score in scores.iter_mut() {
            *score /= sum;
        }
    }
    unsafe {
        // out[query, head, :] = probs · v
        gemm::gemm(
            rows,
            s.dim,
            seen,
            out.0.add(q_offset),
            1,
            width as isize,
            false,
            probs.as_ptr(),
            1,
            seen as isize,
            v.as_ptr().add(kv_offset),
            1,
            s.dim as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    type B = burn::backend::Flex;

    /// softmax(q·kᵀ·scale + hidden)·v written out with tensor ops, `[batch, heads, seq, dim]`.
    fn reference(
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        hidden: Tensor<B, 4, Bool>,
        scale: f32,
    ) -> Tensor<B, 4> {
        let groups = q.dims()[1] / k.dims()[1];
        let repeat = |t: Tensor<B, 4>| {
            let [b, h, s, d] = t.dims();
            t.unsqueeze_dim::<5>(2)
                .expand([b, h, groups, s, d])
                .reshape([b, h * groups, s, d])
        };
        let scores = q.matmul(repeat(k).swap_dims(2, 3)).mul_scalar(scale);
        softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3).matmul(repeat(v))
    }

    /// Causal attention over cached keys (keys > seq), grouped-query heads, more than one query
    /// block, a batch of two, with and without a padding mask.
    #[test]
    fn equals_the_tensor_version() {
        let device = Default::default();
        let (batch, heads, kv_heads, dim) = (2, 4, 2, 8);
        let (seq, keys) = (super::QUERY_BLOCK + 3, super::QUERY_BLOCK + 20);
        let q = Tensor::<B, 4>::random([batch, heads, seq, dim], Distribution::Default, &device);
        let k =
            Tensor::<B, 4>::random([batch, kv_heads, keys, dim], Distribution::Default, &device);
        let v =
            Tensor::<B, 4>::random([batch, kv_heads, keys, dim], Distribution::Default, &device);
        // Row 1 has 5 padding slots, which its real queries do not see; a padding query sees
        // itself only (as `Positions` builds it).
        let mut hidden = Vec::new();
        for row in 0..batch {
            for i in 0..seq {
                let query = keys - seq + i;
                for key in 0..keys {
                    let pad = row == 1 && key < 5;
                    hidden.push(key > query || (pad && key != query));
                }
            }
        }
        let padding = Tensor::<B, 4, Bool>::from_data(
            TensorData::new(hidden, [batch, 1, seq, keys]),
            &device,
        );
        let causal = Tensor::<B, 2, Bool>::tril_mask([seq, keys], (keys - seq) as i64, &device)
            .reshape([1, 1, seq, keys]);
        let scale = (dim as f32).powf(-0.5);
        for mask in [None, Some(padding)] {
            let fast = super::attention(
                q.clone().swap_dims(1, 2).reshape([batch, seq, heads * dim]),
                k.clone(),
                v.clone(),
                mask.clone(),
                heads,
                scale,
            );
            let hidden = mask.unwrap_or_else(|| causal.clone().expand([batch, 1, seq, keys]));
            let plain = reference(q.clone(), k.clone(), v.clone(), hidden, scale)
                .swap_dims(1, 2)
                .reshape([batch, seq, heads * dim]);
            let fast: Vec<f32> = fast.into_data().to_vec().unwrap();
            let plain: Vec<f32> = plain.into_data().to_vec().unwrap();
            let worst = fast
                .iter()
                .zip(&plain)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "max |Δ| {worst}");
        }
    }
}
