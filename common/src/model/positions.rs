//! Where the rows of one forward pass sit: their rotary angles, their first slot in the KV cache,
//! the key slots attention reads, and which keys each query may see.

use burn::prelude::*;

use super::rotary::{PartialRotary, RotaryAngles};

pub struct Positions<B: Backend> {
    /// Cache slot of the first new column.
    pub start: usize,
    /// Key slots attention reads: `start + seq`, or more with fixed shapes (the rest masked).
    pub keys: usize,
    pub angles: RotaryAngles<B>,
    /// `[batch, 1, seq, keys]`, true where a query must not look. `None`: plain causal masking,
    /// which attention builds itself.
    pub mask: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> Positions<B> {
    /// `seq` new columns at cache slots `start..`, for rows with `pads[row]` padding slots on the
    /// left (empty or all zero: no padding). With `fixed_keys`, attention reads that many key
    /// slots (at least `start + seq`; those past the filled ones hidden) and the mask is built
    /// on the device: the fixed shapes of GPU decoding (`ops::attended_slots`).
    pub fn new(
        rotary: &PartialRotary<B>,
        start: usize,
        seq: usize,
        pads: &[usize],
        fixed_keys: Option<usize>,
        device: &B::Device,
    ) -> Self {
        // A row's real tokens are numbered from 0 after its padding, as if it ran alone.
        let row_positions = || -> Vec<Vec<usize>> {
            let pads = if pads.is_empty() { &[0][..] } else { pads };
            pads.iter()
                .map(|&pad| {
                    (start..start + seq)
                        .map(|slot| slot.saturating_sub(pad))
                        .collect()
                })
                .collect()
        };
        if let Some(keys) = fixed_keys {
            return Self {
                start,
                keys,
                // A gather of fixed shape: no slice whose offset moves every step.
                angles: rotary.angles_at(&row_positions(), device),
                mask: Some(device_mask(start, seq, keys, pads, device)),
            };
        }
        let keys = start + seq;
        if pads.iter().all(|&p| p == 0) {
            return Self {
                start,
                keys,
                angles: rotary.angles(start, seq),
                mask: None,
            };
        }
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
            keys,
            angles: rotary.angles_at(&row_positions(), device),
            mask: Some(mask),
        }
    }
}

/// The mask of `new`'s host loop, `[batch, 1, seq, keys]`, computed on the device from two
/// small position tensors: query `q` (at slot `start + i`) sees keys `first..=q`, where `first`
/// is its row's padding, or `q` itself for a padding query (which sees only itself).
fn device_mask<B: Backend>(
    start: usize,
    seq: usize,
    keys: usize,
    pads: &[usize],
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let batch = pads.len().max(1);
    let (mut query, mut first) = (Vec::with_capacity(batch * seq), Vec::new());
    for row in 0..batch {
        let pad = pads.get(row).copied().unwrap_or(0);
        for slot in start..start + seq {
            query.push(slot as i64);
            first.push(pad.min(slot) as i64);
        }
    }
    let shape = [batch, 1, seq, keys];
    let column = |values: Vec<i64>| {
        Tensor::<B, 4, Int>::from_data(TensorData::new(values, [batch, 1, seq, 1]), device)
            .expand(shape)
    };
    let key = Tensor::<B, 1, Int>::arange(0..keys as i64, device)
        .reshape([1, 1, 1, keys])
        .expand(shape);
    key.clone()
        .greater(column(query))
        .bool_or(key.lower(column(first)))
}

#[cfg(test)]
mod tests {
    use super::Positions;
    use crate::model::rotary::PartialRotary;

    type B = burn::backend::Flex;

    /// The device-built mask hides what the host loop hides over the filled slots, and every
    /// slot past them; each row rotates by the angles of the exact pass.
    #[test]
    fn fixed_shapes_mask_and_rotate_as_the_exact_pass() {
        let device = Default::default();
        let rotary = PartialRotary::<B>::new(4, 8, 64, 10_000.0, &device);
        for (start, seq, pads) in [(5, 1, vec![0, 3, 5]), (0, 4, vec![2, 0]), (9, 3, vec![])] {
            let filled = start + seq;
            let keys = filled + 7;
            let exact = Positions::new(&rotary, start, seq, &pads, None, &device);
            let fixed = Positions::new(&rotary, start, seq, &pads, Some(keys), &device);
            assert_eq!(fixed.keys, keys);
            let got: Vec<bool> = fixed.mask.clone().unwrap().into_data().to_vec().unwrap();
            let batch = pads.len().max(1);
            let expected: Vec<bool> = match exact.mask.clone() {
                Some(mask) => mask.into_data().to_vec().unwrap(),
                None => (0..batch * seq * filled)
                    .map(|i| (i % filled) > start + (i / filled) % seq)
                    .collect(),
            };
            assert_eq!(got.len(), batch * seq * keys);
            for (i, hidden) in got.iter().enumerate() {
                let (key, query, row) = (i % keys, (i / keys) % seq, i / (keys * seq));
                if key < filled {
                    let e = expected[(row * seq + query) * filled + key];
                    assert_eq!(*hidden, e, "row {row} query {query} key {key}");
                } else {
                    assert!(hidden, "a slot past the filled ones is hidden");
                }
            }
            // Unpadded rows share one set of angles in the exact pass; fixed shapes give each
            // row its own, the same.
            let exact_cos = &exact.angles.host_values().cos;
            for row in fixed.angles.host_values().cos.chunks(exact_cos.len()) {
                assert_eq!(row, &exact_cos[..]);
            }
        }
    }
}
