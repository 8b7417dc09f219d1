//! Where the rows of one forward pass sit: their rotary angles, their first slot in the KV cache,
//! and, for left-padded batches, which keys each query may see.

use burn::prelude::*;

use super::rotary::{PartialRotary, RotaryAngles};

pub struct Positions<B: Backend> {
    /// Cache slot of the first new column.
    pub start: usize,
    pub angles: RotaryAngles<B>,
    /// `[batch, 1, seq, keys]`, true where a query must not look. `None`: plain causal masking,
    /// which attention builds itself.
    pub mask: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> Positions<B> {
    /// `seq` new columns at cache slots `start..`, for rows with `pads[row]` padding slots on the
    /// left (empty or all zero: no padding).
    pub fn new(
        rotary: &PartialRotary<B>,
        start: usize,
        seq: usize,
        pads: &[usize],
        device: &B::Device,
    ) -> Self {
        if pads.iter().all(|&p| p == 0) {
            return Self {
                start,
                angles: rotary.angles(start, seq),
                mask: None,
            };
        }
        // A row's real tokens are numbered from 0 after its padding, as if it ran alone.
        let positions: Vec<Vec<usize>> = pads
            .iter()
            .map(|&pad| {
                (start..start + seq)
                    .map(|slot| slot.saturating_sub(pad))
                    .collect()
            })
            .collect();
        let keys = start + seq;
        let mut masked = Vec::with_capacity(pads.len() * seq * keys);
        for &pad in pads {
            for query in start..start + seq {
                for key in 0..keys {
                    // Future keys and padding are hidden; a padding query sees itself only, so
                    // its softmax has a finite entry and no NaN reaches the values.
                    masked.push(key > query || (key < pad && key != query));
                }
            }
        }
        let mask = Tensor::from_data(TensorData::new(masked, [pads.len(), 1, seq, keys]), device);
        Self {
            start,
            angles: rotary.angles_at(&positions, device),
            mask: Some(mask),
        }
    }
}
