//! Writing a pass's keys or values into the KV cache in place.
//!
//! burn-flex 0.21's `slice_assign` copies its destination every time: it takes the tensor by
//! value but makes it contiguous through a clone (`to_contiguous(&self)` returns `self.clone()`)
//! that is still alive when it asks for mutable storage, so the copy-on-write always copies. For
//! the cache that is every layer's whole buffer per decoded token: 240 MB a token for phi-1.5 at
//! 612 slots, a seventh of a Q8_0 decode step on 2 cores. Here the new rows are copied into the
//! buffer itself, which the cache holds alone between passes.

use burn::prelude::*;

use super::{host_f32, in_place};

/// `stored` (`[batch, heads, capacity, dim]`, contiguous) with `new` (`[rows, heads, seq, dim]`,
/// `rows <= batch`: the first rows) written at slots `start..start + seq`; `None` when `B` is
/// not the CPU backend.
pub(crate) fn write<B: Backend>(
    stored: Tensor<B, 4>,
    start: usize,
    new: Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [_, heads, capacity, dim] = stored.dims();
    let [rows, _, seq, _] = new.dims();
    let new = host_f32(new);
    in_place(stored, |buffer| {
        for (bh, rows) in new.chunks_exact(seq * dim).enumerate() {
            let at = (bh * capacity + start) * dim;
            buffer[at..at + seq * dim].copy_from_slice(rows);
        }
        debug_assert_eq!(new.len(), rows * heads * seq * dim);
    })
}
