//! `Trainee`: a `Phi` with the settings its optimizer step needs, as the module burn-train's
//! learner trains. `Phi` alone cannot carry them, and the learner calls `TrainStep::optimize`
//! with nothing but the optimizer, the rate and the gradients.

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::batch::LmBatch;
use crate::model::Phi;
use crate::train::gradient_sync::{GradientSync, SharedSync, sum_gradients};
use crate::train::regularize::{clip_grad_global_norm, decay_weight_matrices, scale_grads};
use crate::train::step::LmStepOutput;

/// Scaling, clipping and decay applied around every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// Global-norm clipping threshold; `None`: no clipping.
    pub grad_clip_norm: Option<f64>,
    /// Decoupled weight decay on weight matrices (the optimizer itself gets none).
    pub weight_decay: f64,
    /// Factor on the gradients before clipping: burn-train sums the gradients of accumulated
    /// micro-batches (and of devices), so a run sets 1 / (accumulation × devices) to step on the
    /// gradient of the mean loss.
    pub grad_scale: f64,
}

impl Default for StepSettings {
    fn default() -> Self {
        Self {
            grad_clip_norm: None,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

#[derive(Module, Debug)]
/// A `Phi` with its step settings: the module burn-train's learner trains in full fine-tuning and pretraining.
pub struct Trainee<B: Backend> {
    /// The model, trained.
    pub phi: Phi<B>,
    #[module(skip)]
    /// Clipping, decay and gradient scaling around every optimizer step.
    pub settings: StepSettings,
    #[module(skip)]
    /// Where the gradients are summed across the nodes of a data-parallel run (none: one node).
    pub sync: Option<SharedSync>,
}

impl<B: Backend> Trainee<B> {
    /// A trainee of `phi` with `settings`.
    pub fn new(phi: Phi<B>, settings: StepSettings) -> Self {
        Self {
            phi,
            settings,
            sync: None,
        }
    }
}

impl<B: AutodiffBackend> TrainStep for Trainee<B> {
    type Input = LmBatch<B>;
    type Output = LmStepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmStepOutput<B>> {
        let (output, grads) = self.phi.lm_train_step(batch, None);
        TrainOutput::new(self, grads, output)
    }

    fn optimize<AB, O>(self, optim: &mut O, lr: f64, grads: GradientsParams) -> Self
    where
        AB: AutodiffBackend,
        O: Optimizer<Self, AB>,
        Self: AutodiffModule<AB>,
    {
        let (settings, sync) = (self.settings, self.sync.clone());
        optimizer_step(self, settings, sync.as_deref(), optim, lr, grads)
    }
}

/// What `training::run` needs of the module it trains, besides burn-train's step traits: the
/// model (for its config and device) and the step settings (the run sets the gradient scale).
pub trait LmTrainee<B: Backend> {
    /// The model trained (or whose adapters are trained).
    fn phi(&self) -> &Phi<B>;
    /// The step settings, for the runner to set the gradient scale.
    fn settings_mut(&mut self) -> &mut StepSettings;
    /// Where gradients are summed across nodes, if the run has several.
    fn gradient_sync(&self) -> Option<&SharedSync>;
    /// Sets where gradients are summed across nodes.
    fn set_gradient_sync(&mut self, sync: Option<SharedSync>);
}

impl<B: Backend> LmTrainee<B> for Trainee<B> {
    fn phi(&self) -> &Phi<B> {
        &self.phi
    }

    fn settings_mut(&mut self) -> &mut StepSettings {
        &mut self.settings
    }

    fn gradient_sync(&self) -> Option<&SharedSync> {
        self.sync.as_ref()
    }

    fn set_gradient_sync(&mut self, sync: Option<SharedSync>) {
        self.sync = sync;
    }
}

/// One optimizer step as every trainee takes it: gradients summed across nodes (with `sync`),
/// scaled, clipped by their global norm, decoupled decay on weight matrices, then the optimizer's
/// update.
pub fn optimizer_step<AB, M, O>(
    module: M,
    settings: StepSettings,
    sync: Option<&dyn GradientSync>,
    optim: &mut O,
    lr: f64,
    mut grads: GradientsParams,
) -> M
where
    AB: AutodiffBackend,
    M: AutodiffModule<AB>,
    O: Optimizer<M, AB>,
{
    if let Some(sync) = sync
        && let Err(error) = sum_gradients::<AB, M>(&module, &mut grads, sync)
    {
        // The learner gives a step no way to fail: the run cannot go on without its peers.
        panic!("summing gradients across the run's nodes failed (a node stopped?): {error}");
    }
    scale_grads::<AB, M>(&module, &mut grads, settings.grad_scale);
    if let Some(max_norm) = settings.grad_clip_norm {
        clip_grad_global_norm::<AB, M>(&module, &mut grads, max_norm);
    }
    // Decoupled decay, as AdamW applies it: from the weights before this step's update.
    let decayed = decay_weight_matrices::<AB, M>(module, lr, settings.weight_decay);
    optim.step(lr, decayed, grads)
}

impl<B: Backend> InferenceStep for Trainee<B> {
    type Input = LmBatch<B>;
    type Output = LmStepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmStepOutput<B> {
        self.phi.lm_step(batch)
    }
}
