//! The feed-forward half of a Phi block: `fc2(gelu_new(fc1(x)))` (PHI_SPEC §1.4).

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::lora::{LayerAdapters, project};

#[derive(Module, Debug)]
pub struct PhiMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> PhiMlp<B> {
    /// `x: [batch, seq, hidden]` → `[batch, seq, hidden]`, with the LoRA updates of `adapters`.
    pub fn forward(&self, x: Tensor<B, 3>, adapters: Option<&LayerAdapters<B>>) -> Tensor<B, 3> {
        let fc1 = project(&self.fc1, adapters.and_then(|a| a.fc1.as_ref()), x);
        let activated = if crate::cpu::applies(&fc1) {
            crate::cpu::gelu::gelu_new(fc1)
        } else {
            gelu_new(fc1)
        };
        project(&self.fc2, adapters.and_then(|a| a.fc2.as_ref()), activated)
    }
}

/// `gelu_new`, the tanh approximation `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))`; the erf GELU
/// gives plausible but wrong output. Computed as the identical `x·σ(2√(2/π)(x + 0.044715x³))`
/// (since `0.5(1 + tanh(u)) = σ(2u)`): on the CPU backend `σ` costs one `exp` where `tanh` costs
/// far more, and it is two elementwise passes fewer. The cube is two multiplications: `powf`
/// costs far more on the CPU backend.
pub fn gelu_new<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * sigmoid(inner)
}
