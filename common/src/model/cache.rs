//! The KV cache: keys (after rotary) and values of past positions, per layer, preallocated to a
//! fixed capacity and written in place, so decoding allocates nothing per token.

use std::ops::Range;

use burn::prelude::*;

use super::ops;
use crate::config::PhiConfig;
use crate::error::{PhiError, Result};

/// One layer's keys and values, `[batch, kv_heads, capacity, head_dim]` each.
#[derive(Debug)]
pub struct LayerCache<B: Backend> {
    // Held in `Option` so `append` can take the tensors by value: burn writes in place only when
    // the handle it is given is the only one.
    keys: Option<Tensor<B, 4>>,
    values: Option<Tensor<B, 4>>,
}

impl<B: Backend> LayerCache<B> {
    /// Writes `k`, `v` (`[batch, kv_heads, seq, head_dim]`) at positions `start..start + seq` and
    /// returns the first `keys` slots (at least `start + seq`: every position so far, and with
    /// fixed shapes slots not yet filled, which attention masks).
    pub fn append(
        &mut self,
        start: usize,
        keys: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (
            Self::write(&mut self.keys, start, keys, k),
            Self::write(&mut self.values, start, keys, v),
        )
    }

    /// The cached keys, for tests that look at where they live.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Tensor<B, 4> {
        self.keys.clone().expect("held between passes")
    }

    fn write(
        slot: &mut Option<Tensor<B, 4>>,
        start: usize,
        keys: usize,
        new: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let [batch, heads, _, dim] = new.dims();
        let stored = ops::write_cache_slots(
            slot.take()
                .expect("a layer cache always holds its tensors between calls"),
            start,
            new,
        );
        // From slot 0, so a view of the cache (no copy) on every backend.
        let so_far = stored.clone().slice([0..batch, 0..heads, 0..keys, 0..dim]);
        *slot = Some(stored);
        so_far
    }
}

/// Every layer's cache plus how many positions are filled.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<LayerCache<B>>,
    len: usize,
    capacity: usize,
    /// Left padding slots of each row.
    pads: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `pads.len()` sequences of up to `capacity` slots, row `r` starting
    /// with `pads[r]` slots of left padding.
    pub fn new(config: &PhiConfig, pads: Vec<usize>, capacity: usize, device: &B::Device) -> Self {
        let batch = pads.len();
        let shape = [
            batch,
            config.num_key_value_heads,
            ops::cache_slots::<B>(capacity),
            config.head_dim(),
        ];
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerCache {
                keys: Some(Tensor::zeros(shape, device)),
                values: Some(Tensor::zeros(shape, device)),
            })
            .collect();
        Self {
            layers,
            len: 0,
            capacity,
            pads,
        }
    }

    /// Positions filled so far; the next token sits at this position.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before anything has been cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots the tensors have per row: `capacity`, rounded up on GPU backends
    /// (`ops::cache_slots`); the slots past `capacity` are never written.
    pub(crate) fn slots(&self) -> usize {
        self.tensors().next().map_or(0, |t| t.dims()[2])
    }

    /// Rows (sequences) the cache holds.
    pub fn batch(&self) -> usize {
        self.pads.len()
    }

    /// Left padding slots of each row.
    pub fn padding(&self) -> &[usize] {
        &self.pads
    }

    /// A one-row cache copied into `rows` identical rows: one context shared by several
    /// continuations (multiple-choice scoring runs the context once).
    pub fn repeat_rows(&self, rows: usize) -> Self {
        assert_eq!(self.batch(), 1, "repeat_rows copies a one-row cache");
        let repeat = |t: &Option<Tensor<B, 4>>| {
            Some(
                t.as_ref()
                    .expect("a layer cache always holds its tensors between calls")
                    .clone()
                    .repeat_dim(0, rows),
            )
        };
        Self {
            layers: self
                .layers
                .iter()
                .map(|layer| LayerCache {
                    keys: repeat(&layer.keys),
                    values: repeat(&layer.values),
                })
                .collect(),
            len: self.len,
            capacity: self.capacity,
            pads: vec![self.pads[0]; rows],
        }
    }

    /// Forgets every position (the memory is kept for the next sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Rows the tensors have room for (at least `batch()`): rows join up to this without a copy.
    pub fn rows_allocated(&self) -> usize {
        self.tensors().next().map_or(0, |t| t.dims()[0])
    }

    /// Makes room for at least `rows` rows and `capacity` slots per row, copying what is held
    /// into larger tensors when the present ones are too small (callers grow geometrically).
    pub fn reserve(&mut self, rows: usize, capacity: usize) {
        let (old_rows, old_capacity) = (self.rows_allocated(), self.capacity);
        if rows <= old_rows && capacity <= old_capacity {
            return;
        }
        let (rows, capacity) = (rows.max(old_rows), capacity.max(old_capacity));
        let (batch, len) = (self.batch(), self.len);
        for slot in self.tensors_mut() {
            let old = slot.take().expect("a layer cache holds its tensors");
            let [_, heads, _, dim] = old.dims();
            let slots = ops::cache_slots::<B>(capacity);
            let mut grown = Tensor::zeros([rows, heads, slots, dim], &old.device());
            if batch > 0 && len > 0 {
                let held = [0..batch, 0..heads, 0..len, 0..dim];
                grown = grown.slice_assign(held.clone(), old.slice(held));
            }
            *slot = Some(grown);
        }
        self.capacity = capacity;
    }

    /// Adds the sequence a one-row cache holds as a new last row, its positions ending where this
    /// cache's end (left padding before them), so it decodes in step with the other rows. A cache
    /// with no rows takes the sequence's length. The row must fit: `reserve` and `shift` first.
    pub fn push_row(&mut self, row: &KvCache<B>) -> Result<()> {
        if row.batch() != 1 {
            return Err(PhiError::Input(format!(
                "push_row takes a one-row cache, not one of {} rows",
                row.batch()
            )));
        }
        let content = row.len - row.pads[0];
        if self.pads.is_empty() {
            self.len = content;
        }
        if content > self.len || self.len > self.capacity || self.batch() == self.rows_allocated() {
            return Err(PhiError::Input(format!(
                "a row of {content} positions does not fit a cache of {} rows × {} slots with {} \
                 rows used and {} slots filled",
                self.rows_allocated(),
                self.capacity,
                self.batch(),
                self.len
            )));
        }
        let (r, len) = (self.batch(), self.len);
        let pad = len - content;
        for (slot, source) in self.tensors_mut().zip(row.tensors()) {
            let [_, heads, _, dim] = source.dims();
            let taken = source
                .clone()
                .slice([0..1, 0..heads, row.pads[0]..row.len, 0..dim]);
            let stored = slot.take().expect("a layer cache holds its tensors");
            *slot = Some(stored.slice_assign([r..r + 1, 0..heads, pad..len, 0..dim], taken));
        }
        self.pads.push(pad);
        Ok(())
    }

    /// Removes row `row`, moving the last row into its place (as `Vec::swap_remove`); the
    /// caller's per-row state must follow the same move. The last row out empties the cache.
    pub fn swap_remove_row(&mut self, row: usize) {
        let last = self.batch() - 1;
        if row != last {
            let len = self.len;
            self.copy_within((last..last + 1, 0..len), (row..row + 1, 0..len));
        }
        self.pads.swap_remove(row);
        if self.pads.is_empty() {
            self.len = 0;
        }
    }

    /// Moves every row's positions so they end at slot `new_len` instead of `len()`: later, to
    /// line the rows up with a longer sequence joining them; earlier, to reclaim the padding all
    /// rows share when the slots run out. Each row's padding changes by the same amount.
    pub fn shift(&mut self, new_len: usize) -> Result<()> {
        let len = self.len;
        let shared_pad = self.pads.iter().copied().min().unwrap_or(len);
        if new_len > self.capacity || new_len + shared_pad < len {
            return Err(PhiError::Input(format!(
                "cannot move positions ending at {len} to end at {new_len}: {} slots, {shared_pad} \
                 padding shared by every row",
                self.capacity
            )));
        }
        if new_len == len {
            return Ok(());
        }
        let batch = self.batch();
        // Columns from..len move to to..new_len; a right shift keeps the padding it moves too.
        let from = len.saturating_sub(new_len).min(len);
        let to = new_len.saturating_sub(len);
        self.copy_within((0..batch, from..len), (0..batch, to..new_len));
        for pad in &mut self.pads {
            *pad = *pad + new_len - len;
        }
        self.len = new_len;
        Ok(())
    }

    /// Copies rows × slots `from` of every layer's keys and values over rows × slots `to` (the
    /// same sizes). The blocks may overlap: the slice read shares the tensor's memory, so burn
    /// copies it before writing.
    fn copy_within(
        &mut self,
        (from_rows, from_slots): (Range<usize>, Range<usize>),
        (to_rows, to_slots): (Range<usize>, Range<usize>),
    ) {
        for slot in self.tensors_mut() {
            let stored = slot.take().expect("a layer cache holds its tensors");
            let [_, heads, _, dim] = stored.dims();
            let moved =
                stored
                    .clone()
                    .slice([from_rows.clone(), 0..heads, from_slots.clone(), 0..dim]);
            *slot = Some(
                stored.slice_assign([to_rows.clone(), 0..heads, to_slots.clone(), 0..dim], moved),
            );
        }
    }

    fn tensors(&self) -> impl Iterator<Item = &Tensor<B, 4>> {
        self.layers
            .iter()
            .flat_map(|l| [l.keys.as_ref(), l.values.as_ref()])
            .map(|t| t.expect("a layer cache holds its tensors"))
    }

    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Option<Tensor<B, 4>>> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.keys, &mut l.values])
    }

    pub(crate) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }
}
