//! The KV cache: keys (after rotary) and values of past positions, per layer, preallocated to a
//! fixed capacity and written in place, so decoding allocates nothing per token.

use burn::prelude::*;

use crate::config::PhiConfig;

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
    /// returns every position so far, `0..start + seq`.
    pub fn append(
        &mut self,
        start: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (
            Self::write(&mut self.keys, start, k),
            Self::write(&mut self.values, start, v),
        )
    }

    fn write(slot: &mut Option<Tensor<B, 4>>, start: usize, new: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, heads, seq, dim] = new.dims();
        let stored = slot
            .take()
            .expect("a layer cache always holds its tensors between calls")
            .slice_assign([0..batch, 0..heads, start..start + seq, 0..dim], new);
        let so_far = stored
            .clone()
            .slice([0..batch, 0..heads, 0..start + seq, 0..dim]);
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
            capacity,
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

    pub(crate) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }
}
