//! Fresh parameters for a model trained from scratch, initialised as transformers' `PhiPreTrainedModel`
//! does: normal(0, initializer_range) weights, zero biases, LayerNorms at identity.

use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;

use crate::error::Result;
use crate::model::ParamSource;
use crate::params::Part;

pub struct FreshInit<B: Backend> {
    device: B::Device,
    std: f64,
}

impl<B: Backend> FreshInit<B> {
    pub fn new(device: B::Device, std: f64) -> Self {
        Self { device, std }
    }

    fn normal(&self) -> Initializer {
        Initializer::Normal {
            mean: 0.0,
            std: self.std,
        }
    }
}

impl<B: Backend> ParamSource<B> for FreshInit<B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn linear(&mut self, _: Part, d_in: usize, d_out: usize) -> Result<Linear<B>> {
        let mut linear = LinearConfig::new(d_in, d_out)
            .with_initializer(self.normal())
            .init(&self.device);
        linear.bias = Some(burn::module::Param::from_tensor(Tensor::zeros(
            [d_out],
            &self.device,
        )));
        Ok(linear)
    }

    fn layer_norm(&mut self, _: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>> {
        Ok(LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init(&self.device))
    }

    fn embedding(&mut self, _: Part, vocab: usize, dim: usize) -> Result<Embedding<B>> {
        Ok(EmbeddingConfig::new(vocab, dim)
            .with_initializer(self.normal())
            .init(&self.device))
    }
}
