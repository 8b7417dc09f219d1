//! Fresh parameters for a model trained from scratch, initialised as transformers' `PhiPreTrainedModel`
//! does: normal(0, initializer_range) weights, zero biases, LayerNorms at identity.

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::embedding::TokenEmbedding;
use super::linear::PhiLinear;
use super::packed::WeightFormat;
use super::params::{ParamSource, Part};
use crate::error::Result;

/// Parameters drawn as transformers draws them, with standard deviation `std`.
pub struct FreshInit<B: Backend> {
    device: B::Device,
    std: f64,
    format: WeightFormat,
}

impl<B: Backend> FreshInit<B> {
    /// On `device`, weights normal(0, `std`), linear weights in `format`.
    pub fn new(device: B::Device, std: f64, format: WeightFormat) -> Self {
        Self {
            device,
            std,
            format,
        }
    }
}

impl<B: Backend> ParamSource<B> for FreshInit<B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn linear(&mut self, _: Part, d_in: usize, d_out: usize) -> Result<PhiLinear<B>> {
        PhiLinear::fresh(d_in, d_out, self.std, &self.device).into_format(self.format)
    }

    fn layer_norm(&mut self, _: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>> {
        Ok(LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init(&self.device))
    }

    fn embedding(&mut self, _: Part, vocab: usize, dim: usize) -> Result<TokenEmbedding<B>> {
        let normal = Distribution::Normal(0.0, self.std);
        Ok(TokenEmbedding::new(Tensor::random(
            [vocab, dim],
            normal,
            &self.device,
        )))
    }
}
