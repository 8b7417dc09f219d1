//! Partial rotary position embedding in the NeoX convention (ARCHITECTURE.md §1).
//!
//! Only the first `rotary_dim` channels of each head rotate, and channel `j` pairs with
//! `j + rotary_dim / 2` (`rotate_half`), not with `j + 1`: burn's `RotaryEncoding` is interleaved
//! and full-width, so it would give plausible but wrong output here.

use std::sync::OnceLock;

use burn::prelude::*;

/// Precomputed tables over whole heads, `[max_positions, head_dim]`, computed in f32 (as
/// transformers does) and stored in the model's float type (transformers casts them to the
/// activations' dtype).
///
/// Rotation as `x·cos + x[partner]·sin_folded`: channel `j < rotary_dim / 2` pairs with
/// `j + rotary_dim / 2` and takes `−sin`, its partner takes `+sin`, and channels past
/// `rotary_dim` pass through (`cos` 1, `sin` 0, their own partner). The same products and sums
/// as `rot·cos + cat(−x₂, x₁)·sin` (a sign moved from a value to a table is exact), in one
/// gather and three elementwise operations of fixed shape on GPU backends, where each slice,
/// negation and concatenation was a kernel per layer and per step.
#[derive(Module, Debug)]
pub struct PartialRotary<B: Backend> {
    /// Plain tensors: not parameters, not saved, but they follow the module across devices.
    cos: Tensor<B, 2>,
    sin_folded: Tensor<B, 2>,
    /// Each channel's partner, `[head_dim]`.
    partner: Tensor<B, 1, Int>,
    rotary_dim: usize,
}

impl<B: Backend> PartialRotary<B> {
    /// Tables for heads of `head_dim` channels whose first `rotary_dim` rotate, over
    /// `max_positions` positions, frequencies `theta^(-2i/rotary_dim)`.
    pub fn new(
        rotary_dim: usize,
        head_dim: usize,
        max_positions: usize,
        theta: f64,
        device: &B::Device,
    ) -> Self {
        let half = rotary_dim / 2;
        // Same f32 arithmetic as transformers: inv_freq = 1 / theta^(arange(0, dim, 2) / dim),
        // angle = pos * inv_freq, emb = cat(freqs, freqs), so that the angles round as
        // its do.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / rotary_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for pos in 0..max_positions {
            for sign in [-1.0f32, 1.0] {
                for &f in &inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(sign * angle.sin());
                }
            }
            cos.extend(std::iter::repeat_n(1.0, head_dim - rotary_dim));
            sin.extend(std::iter::repeat_n(0.0, head_dim - rotary_dim));
        }
        let partner: Vec<i64> = (0..head_dim)
            .map(|j| match j {
                j if j < half => j + half,
                j if j < rotary_dim => j - half,
                j => j,
            } as i64)
            .collect();
        let shape = [max_positions, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin_folded: Tensor::from_data(TensorData::new(sin, shape), device),
            partner: Tensor::from_data(TensorData::new(partner, [head_dim]), device),
            rotary_dim,
        }
    }

    /// The number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    fn head_dim(&self) -> usize {
        self.cos.dims()[1]
    }

    /// Angles for `seq` consecutive positions from `start`, shared by every row.
    /// The caller guarantees `start + seq <= max_positions`.
    pub fn angles(&self, start: usize, seq: usize) -> RotaryAngles<B> {
        let shape = [1, 1, seq, self.head_dim()];
        RotaryAngles {
            cos: self.cos.clone().narrow(0, start, seq).reshape(shape),
            sin_folded: self.sin_folded.clone().narrow(0, start, seq).reshape(shape),
            rotary_dim: self.rotary_dim,
            host: OnceLock::new(),
        }
    }

    /// Angles for each row's own positions, `positions[row][i] < max_positions` (left-padded
    /// batches, where a row's first real token sits at position 0 whatever its column).
    pub fn angles_at(&self, positions: &[Vec<usize>], device: &B::Device) -> RotaryAngles<B> {
        let (batch, seq) = (positions.len(), positions[0].len());
        let flat: Vec<i64> = positions.iter().flatten().map(|&p| p as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [batch * seq]), device);
        let shape = [batch, 1, seq, self.head_dim()];
        RotaryAngles {
            cos: self.cos.clone().select(0, index.clone()).reshape(shape),
            sin_folded: self.sin_folded.clone().select(0, index).reshape(shape),
            rotary_dim: self.rotary_dim,
            host: OnceLock::new(),
        }
    }

    /// Rotates the first `rotary_dim` channels of `x: [batch, heads, seq, head_dim]`, reading
    /// each channel's partner as `partners` says (the same values either way).
    pub fn apply(
        &self,
        x: Tensor<B, 4>,
        angles: &RotaryAngles<B>,
        partners: Partners,
    ) -> Tensor<B, 4> {
        let partner = self.partners(x.clone(), partners);
        x * angles.cos.clone() + partner * angles.sin_folded.clone()
    }

    /// `x` with each channel replaced by its partner's value, by a gather or by slices.
    fn partners(&self, x: Tensor<B, 4>, partners: Partners) -> Tensor<B, 4> {
        if partners == Partners::Gather {
            return x.select(3, self.partner.clone());
        }
        let (rd, half, head_dim) = (self.rotary_dim, self.rotary_dim / 2, self.head_dim());
        let mut parts = vec![
            x.clone().narrow(3, half, half),
            x.clone().narrow(3, 0, half),
        ];
        if rd < head_dim {
            parts.push(x.narrow(3, rd, head_dim - rd));
        }
        Tensor::cat(parts, 3)
    }
}

/// How rotary reads each channel's partner: which is faster depends on the backend, so the
/// model's dispatch point (`ops`) chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partners {
    /// One gather of fixed shape: a single kernel on GPU backends.
    Gather,
    /// Three slices joined: burn's CPU backend gathers along the last axis one element at a
    /// time but copies slices in blocks (training's forward pass was 15% slower with the gather).
    Slices,
}

/// The tables' rows for the positions of one forward pass, `[batch or 1, 1, seq, head_dim]`,
/// computed once and shared by every layer.
#[derive(Clone, Debug)]
pub struct RotaryAngles<B: Backend> {
    cos: Tensor<B, 4>,
    sin_folded: Tensor<B, 4>,
    rotary_dim: usize,
    /// The same values on the host, read once for all layers when a CPU kernel asks.
    host: OnceLock<HostAngles>,
}

/// The tables' rows as f32 host values, `rows × head_dim` each (`cos`, and `sin` with the sign
/// folded in as the tensors hold it); `rows` is `seq`, or `batch × seq` for per-row positions.
#[derive(Clone, Debug)]
pub struct HostAngles {
    pub cos: Vec<f32>,
    pub sin_folded: Vec<f32>,
    pub rows: usize,
    /// The rotating channels at the start of each row.
    pub rotary_dim: usize,
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
                sin_folded: values(&self.sin_folded),
                rows: batch * seq,
                rotary_dim: self.rotary_dim,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    use super::{PartialRotary, Partners};

    type B = burn::backend::Flex;

    /// The folded tables give, bit for bit, `x₁·cos − x₂·sin` and `x₂·cos + x₁·sin` on the
    /// rotating channels (the `rotate_half` arithmetic) and the channels past them unchanged.
    #[test]
    fn folded_tables_give_rotate_half_bit_for_bit() {
        let device = Default::default();
        for (head_dim, rotary_dim) in [(10, 4), (8, 8)] {
            let (heads, seq, half) = (3, 5, rotary_dim / 2);
            let rotary = PartialRotary::<B>::new(rotary_dim, head_dim, 16, 10_000.0, &device);
            let angles = rotary.angles(7, seq);
            let x =
                Tensor::<B, 4>::random([1, heads, seq, head_dim], Distribution::Default, &device);
            let values: Vec<f32> = x.clone().into_data().to_vec().unwrap();
            // The gather GPU backends run gives the slices' values.
            let gathered = rotary.partners(x.clone(), Partners::Gather).into_data();
            rotary
                .partners(x.clone(), Partners::Slices)
                .into_data()
                .assert_eq(&gathered, true);
            let out: Vec<f32> = rotary
                .apply(x, &angles, Partners::Slices)
                .into_data()
                .to_vec()
                .unwrap();
            let host = angles.host_values();
            for (i, (head, got)) in values
                .chunks_exact(head_dim)
                .zip(out.chunks_exact(head_dim))
                .enumerate()
            {
                let a = (i % seq) * head_dim;
                let cos = &host.cos[a..a + head_dim];
                // The plain sin, its sign unfolded (negation is exact).
                let sin = |j: usize| {
                    let s = host.sin_folded[a + j];
                    if j < half { -s } else { s }
                };
                for (j, got) in got.iter().enumerate() {
                    let expected = match j {
                        j if j < half => head[j] * cos[j] + -head[j + half] * sin(j),
                        j if j < rotary_dim => head[j] * cos[j] + head[j - half] * sin(j),
                        j => head[j],
                    };
                    assert_eq!(got.to_bits(), expected.to_bits(), "channel {j}");
                }
            }
        }
    }
}
