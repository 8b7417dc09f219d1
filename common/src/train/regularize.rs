//! What burn's optimizers do not do the way the recipes need: clipping by the norm of all
//! gradients together (burn's `Norm` clipping is per tensor), and weight decay on weight matrices
//! only (burn has no parameter groups, so its decay would reach biases and LayerNorms too).

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;

/// The L2 norm of every float parameter's gradient taken together.
pub fn grad_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut sum = SquaredSum::<B> { grads, total: None };
    module.visit(&mut sum);
    sum.total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Scales all gradients by one factor so that their global norm is at most `max_norm`; returns
/// the norm before clipping.
pub fn clip_grad_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = grad_global_norm(module, grads);
    if norm > max_norm && norm.is_finite() {
        let mut scale = Scale::<B> {
            grads,
            factor: max_norm / (norm + 1e-6),
            _backend: std::marker::PhantomData,
        };
        module.visit(&mut scale);
    }
    norm
}

/// Multiplies every gradient by `factor` (accumulated micro-batch gradients are summed; scaling
/// by 1/count makes them the gradient of the mean loss).
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    if factor != 1.0 {
        module.visit(&mut Scale::<B> {
            grads,
            factor,
            _backend: std::marker::PhantomData,
        });
    }
}

/// Decoupled weight decay, `p ← p·(1 − lr·decay)`, on parameters of rank 2 and above (linear
/// weights, the embedding); biases and LayerNorm parameters are left alone, and so are frozen
/// parameters (those not requiring gradients, such as a LoRA run's base weights).
pub fn decay_weight_matrices<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: M,
    lr: f64,
    decay: f64,
) -> M {
    if decay == 0.0 || lr == 0.0 {
        return module;
    }
    module.map(&mut MatrixDecay {
        factor: 1.0 - lr * decay,
    })
}

struct SquaredSum<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let squares = grad.cast(FloatDType::F32).square().sum();
        self.total = Some(match self.total.take() {
            Some(total) => {
                let device = total.device();
                total + squares.to_device(&device)
            }
            None => squares,
        });
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

struct MatrixDecay {
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for MatrixDecay {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if D < 2 || !param.is_require_grad() {
            return param;
        }
        let factor = self.factor;
        param.map(|tensor| {
            let require_grad = tensor.is_require_grad();
            let decayed = Tensor::from_inner(tensor.inner().mul_scalar(factor));
            if require_grad {
                decayed.require_grad()
            } else {
                decayed
            }
        })
    }
}
