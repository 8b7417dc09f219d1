//! Fresh parameters for a model trained from scratch, initialised as transformers' `PhiPreTrainedModel`
//! does: normal(0, initializer_range) weights, zero biases, LayerNorms at identity.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::error::Result;
use crate::linear::is_cpu;
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
}

impl<B: Backend> ParamSource<B> for FreshInit<B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn linear(&mut self, _: Part, d_in: usize, d_out: usize) -> Result<Linear<B>> {
        // Drawn now, not lazily: a lazily drawn parameter is drawn again by every clone of the
        // model, so two clones of one fresh model would differ. On CPU backends in transformers'
        // [out, in] memory order, seen as [in, out], as loaded checkpoints are (`linear_from_hf`).
        let normal = Distribution::Normal(0.0, self.std);
        let weight = if is_cpu::<B>(&self.device) {
            Tensor::<B, 2>::random([d_out, d_in], normal, &self.device).transpose()
        } else {
            Tensor::<B, 2>::random([d_in, d_out], normal, &self.device)
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        })
    }

    fn layer_norm(&mut self, _: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>> {
        Ok(LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init(&self.device))
    }

    fn embedding(&mut self, _: Part, vocab: usize, dim: usize) -> Result<Embedding<B>> {
        let normal = Distribution::Normal(0.0, self.std);
        Ok(Embedding {
            weight: Param::from_tensor(Tensor::random([vocab, dim], normal, &self.device)),
        })
    }
}
