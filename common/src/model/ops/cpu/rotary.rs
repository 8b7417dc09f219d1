//! Partial rotary embedding in one parallel pass on the CPU, in the projections' own layout.

use burn::prelude::*;

use crate::model::rotary::RotaryAngles;

/// Rotates the first `rotary_dim` channels of every head of `x: [batch, seq, heads * head_dim]`
/// (a q or k projection before it is split into heads) by `angles`; the same f32 arithmetic as
/// `PartialRotary::apply`, without its slices, negation, concatenations and transposed copies.
pub(crate) fn apply<B: Backend>(
    x: Tensor<B, 3>,
    head_dim: usize,
    angles: &RotaryAngles<B>,
) -> Tensor<B, 3> {
    let [_, seq, width] = x.dims();
    let host = angles.host_values();
    let (cos, sin_folded, rows_of_angles) = (&host.cos, &host.sin_folded, host.rows);
    let half = host.rotary_dim / 2;
    // Angle rows are per (batch row, position) for padded batches, else shared by all rows.
    let angle_row = |row: usize| {
        if rows_of_angles == seq {
            row % seq
        } else {
            row
        }
    };
    super::map_rows(x, width, |first_row, values| {
        for (i, position) in values.chunks_exact_mut(width).enumerate() {
            let a = angle_row(first_row + i) * head_dim;
            let (cos, sin) = (&cos[a..a + head_dim], &sin_folded[a..a + head_dim]);
            for head in position.chunks_exact_mut(head_dim) {
                // `sin` holds −sin for the first half: the same products as `−x₂·sin`.
                for j in 0..half {
                    let (x1, x2) = (head[j], head[j + half]);
                    head[j] = x1 * cos[j] + x2 * sin[j];
                    head[j + half] = x2 * cos[j + half] + x1 * sin[j + half];
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    use crate::model::rotary::{PartialRotary, Partners};

    type B = burn::backend::Flex;

    /// Against `PartialRotary::apply` on the split-heads layout, for shared positions and for
    /// per-row positions (left-padded batches).
    #[test]
    fn equals_the_tensor_version() {
        let device = Default::default();
        let (batch, seq, heads, head_dim, rotary_dim) = (2, 7, 3, 8, 4);
        let rotary = PartialRotary::<B>::new(rotary_dim, head_dim, 32, 10_000.0, &device);
        let shared = rotary.angles(5, seq);
        let per_row = rotary.angles_at(&[(0..seq).collect(), (3..3 + seq).collect()], &device);
        for angles in [shared, per_row] {
            let x = Tensor::<B, 3>::random(
                [batch, seq, heads * head_dim],
                Distribution::Default,
                &device,
            );
            let fast: Vec<f32> = super::apply(x.clone(), head_dim, &angles)
                .into_data()
                .to_vec()
                .unwrap();
            let split = x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
            let plain: Vec<f32> = rotary
                .apply(split, &angles, Partners::Slices)
                .swap_dims(1, 2)
                .reshape([batch, seq, heads * head_dim])
                .into_data()
                .to_vec()
                .unwrap();
            for (a, b) in fast.iter().zip(&plain) {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
        }
    }
}
