//! `LoraTrainee`: a frozen `Phi` with trainable LoRA adapters, as burn-train's learner trains it.
//! Only the adapters are parameters of the module: the optimizer holds state for them alone, and
//! checkpoints hold them alone (the base is read from its own checkpoint on start and resume).

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::batch::LmBatch;
use crate::lora::{LoraConfig, PhiAdapters};
use crate::model::Phi;
use crate::train::frozen::Frozen;
use crate::train::gradient_sync::SharedSync;
use crate::train::step::LmStepOutput;
use crate::train::trainee::{LmTrainee, StepSettings, optimizer_step};

#[derive(Module, Debug)]
/// A frozen `Phi` with trainable LoRA adapters, as the module burn-train's learner trains.
pub struct LoraTrainee<B: Backend> {
    /// The base model, not trained.
    pub base: Frozen<Phi<B>>,
    /// The adapters, trained.
    pub adapters: PhiAdapters<B>,
    #[module(skip)]
    /// Clipping, decay and gradient scaling around every optimizer step.
    pub settings: StepSettings,
    #[module(skip)]
    /// Where the gradients are summed across the nodes of a data-parallel run (none: one node).
    pub sync: Option<SharedSync>,
}

impl<B: Backend> LoraTrainee<B> {
    /// `phi`, frozen, with fresh adapters as `lora` places them (B zero: no change at first).
    pub fn new(phi: Phi<B>, lora: &LoraConfig, settings: StepSettings) -> Self {
        let device = phi.devices()[0].clone();
        let adapters = lora.init(&phi, &device);
        Self {
            base: Frozen(phi.no_grad()),
            adapters,
            settings,
            sync: None,
        }
    }

    /// The base with the adapters folded in: a plain `Phi` for export and inference.
    pub fn merged(&self) -> Phi<B> {
        self.adapters.merge_into(self.base.0.clone())
    }
}

impl<B: Backend> LmTrainee<B> for LoraTrainee<B> {
    fn phi(&self) -> &Phi<B> {
        &self.base.0
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

impl<B: AutodiffBackend> TrainStep for LoraTrainee<B> {
    type Input = LmBatch<B>;
    type Output = LmStepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmStepOutput<B>> {
        let (output, grads) = self.base.0.lm_train_step(batch, Some(&self.adapters));
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

impl<B: Backend> InferenceStep for LoraTrainee<B> {
    type Input = LmBatch<B>;
    type Output = LmStepOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmStepOutput<B> {
        self.base.0.lm_step_adapted(batch, Some(&self.adapters))
    }
}
