//! Fresh parameters for a model trained from scratch, initialised as transformers' `PhiPreTrainedModel`
//! does: normal(0, initializer_range) weights, zero biases, LayerNorms at identity.

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
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
        // Drawn lazily, so a benchmark of random weights does not wait for the whole model first;
        // on CPU backends in transformers' [out, in] memory order, seen as [in, out], as loaded
        // checkpoints are (`linear_from_hf`).
        let std = self.std;
        let cpu = is_cpu::<B>(&self.device);
        let weight = Param::uninitialized(
            ParamId::new(),
            move |device, require_grad| {
                let normal = Distribution::Normal(0.0, std);
                let w = if cpu {
                    Tensor::<B, 2>::random([d_out, d_in], normal, device).transpose()
                } else {
                    Tensor::<B, 2>::random([d_in, d_out], normal, device)
                };
                if require_grad { w.require_grad() } else { w }
            },
            self.device.clone(),
            true,
            [d_in, d_out].into(),
        );
        Ok(Linear {
            weight,
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], &self.device))),
        })
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
