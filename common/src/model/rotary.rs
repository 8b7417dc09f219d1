//! Partial rotary position embedding in the NeoX convention (ARCHITECTURE.md §1).
//!
//! Only the first `rotary_dim` channels of each head rotate, and channel `j` pairs with
//! `j + rotary_dim / 2` (`rotate_half`), not with `j + 1`: burn's `RotaryEncoding` is interleaved
//! and full-width, so it would give plausible but wrong output here.

use std::sync::OnceLock;

use burn::prelude::*;

/// Precomputed cos/sin tables, `[max_positions, rotary_dim]`, computed in f32 (as transformers does)
/// and stored in the model's float type (transformers casts them to the activations' dtype).
#[derive(Module, Debug)]
pub struct PartialRotary<B: Backend> {
    /// Plain tensors: not parameters, not saved, but they follow the module across devices.
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    rotary_dim: usize,
}

impl<B: Backend> PartialRotary<B> {
    /// Tables for `rotary_dim` channels over `max_positions` positions, frequencies `theta^(-2i/rotary_dim)`.
    pub fn new(rotary_dim: usize, max_positions: usize, theta: f64, device: &B::Device) -> Self {
        let half = rotary_dim / 2;
        // Same f32 arithmetic as transformers: inv_freq = 1 / theta^(arange(0, dim, 2) / dim),
        // angle = pos * inv_freq, emb = cat(freqs, freqs), so that the angles round as
        // its do.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / rotary_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_positions * rotary_dim);
        let mut sin = Vec::with_capacity(max_positions * rotary_dim);
        for pos in 0..max_positions {
            for _ in 0..2 {
                for &f in &inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [max_positions, rotary_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            rotary_dim,
        }
    }

    /// The number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Angles for `seq` consecutive positions from `start`, shared by every row.
    /// The caller guarantees `start + seq <= max_positions`.
    pub fn angles(&self, start: usize, seq: usize) -> RotaryAngles<B> {
        let shape = [1, 1, seq, self.rotary_dim];
        RotaryAngles {
            cos: self.cos.clone().narrow(0, start, seq).reshape(shape),
            sin: self.sin.clone().narrow(0, start, seq).reshape(shape),
            host: OnceLock::new(),
        }
    }

    /// Angles for each row's own positions, `positions[row][i] < max_positions` (left-padded
    /// batches, where a row's first real token sits at position 0 whatever its column).
    pub fn angles_at(&self, positions: &[Vec<usize>], device: &B::Device) -> RotaryAngles<B> {
        let (batch, seq) = (positions.len(), positions[0].len());
        let flat: Vec<i64> = positions.iter().flatten().map(|&p| p as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [batch * seq]), device);
        let shape = [batch, 1, seq, self.rotary_dim];
        RotaryAngles {
            cos: self.cos.clone().select(0, index.clone()).reshape(shape),
            sin: self.sin.clone().select(0, index).reshape(shape),
            host: OnceLock::new(),
        }
    }

    /// Rotates the first `rotary_dim` channels of `x: [batch, heads, seq, head_dim]`.
    pub fn apply(&self, x: Tensor<B, 4>, angles: &RotaryAngles<B>) -> Tensor<B, 4> {
        let [_, _, _, head_dim] = x.dims();
        let rd = self.rotary_dim;
        let rot = if rd == head_dim {
            x.clone()
        } else {
            x.clone().narrow(3, 0, rd)
        };
        let first = rot.clone().narrow(3, 0, rd / 2);
        let second = rot.clone().narrow(3, rd / 2, rd / 2);
        let rotated_half = Tensor::cat(vec![second.neg(), first], 3);
        let rotated = rot * angles.cos.clone() + rotated_half * angles.sin.clone();
        if rd == head_dim {
            rotated
        } else {
            Tensor::cat(vec![rotated, x.narrow(3, rd, head_dim - rd)], 3)
        }
    }
}

/// cos and sin for the positions of one forward pass, `[batch or 1, 1, seq, rotary_dim]`,
/// computed once and shared by every layer.
#[derive(Clone, Debug)]
pub struct RotaryAngles<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    /// The same values on the host, read once for all layers when a CPU kernel asks.
    host: OnceLock<HostAngles>,
}

/// cos and sin as f32 host values, `rows × rotary_dim` each; `rows` is `seq`, or `batch × seq`
/// for per-row positions.
#[derive(Clone, Debug)]
pub struct HostAngles {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub rows: usize,
}

impl<B: Backend> RotaryAngles<B> {
    /// The angles as f32 host values, read from the tensors on first use.
    pub fn host_values(&self) -> &HostAngles {
        self.host.get_or_init(|| {
            let [batch, _, seq, _] = self.cos.dims();
            let values = |t: &Tensor<B, 4>| -> Vec<f32> {
                t.to_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("converted to f32 just above")
            };
            HostAngles {
                cos: values(&self.cos),
                sin: values(&self.sin),
                rows: batch * seq,
            }
        })
    }
}
