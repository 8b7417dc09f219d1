//! `gelu_new` in one parallel pass on the CPU.

use burn::prelude::*;

/// `x·σ(2√(2/π)(x + 0.044715x³))` per element, the same f32 arithmetic as the tensor version in
/// `ops::tensor::gelu_new` (which burn's CPU backend runs as eight single-threaded passes).
pub(crate) fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f32 = (2.0 * 0.797_884_560_802_865_4) as f32;
    let row_len = x.dims()[D - 1];
    super::map_rows(x, row_len, |_, values| {
        for v in values {
            let x = *v;
            let inner = (x + x * x * x * 0.044715) * TWO_SQRT_2_OVER_PI;
            *v = x * sigmoid(inner);
        }
    })
}

/// The logistic function as burn's CPU backend computes it (stable for either sign).
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    #[test]
    fn equals_the_tensor_version() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([2, 5, 37], Distribution::Uniform(-6.0, 6.0), &device);
        let fast: Vec<f32> = super::gelu_new(x.clone()).into_data().to_vec().unwrap();
        let plain: Vec<f32> = crate::model::ops::tensor::gelu_new(x)
            .into_data()
            .to_vec()
            .unwrap();
        for (a, b) in fast.iter().zip(&plain) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
