//! The feed-forward half of a Phi block: `fc2(gelu_new(fc1(x)))` (PHI_SPEC §1.4).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::gelu_approximate;

#[derive(Module, Debug)]
pub struct PhiMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> PhiMlp<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // `gelu_new` is the tanh approximation; the erf GELU gives plausible but wrong output.
        self.fc2.forward(gelu_approximate(self.fc1.forward(x)))
    }
}
