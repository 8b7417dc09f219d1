//! Training runs on burn-train's learner: a `Trainee` (Phi + clipping and decay settings), a
//! `StreamLoader` over a mixture for training and one over a held-out mixture for validation,
//! checkpoints every epoch (an epoch being a fixed number of optimizer steps), and exact resume.

use std::path::PathBuf;
use std::sync::Arc;

use burn::lr_scheduler::LrScheduler;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::DefaultRecorder;
use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::LossMetric;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{Learner, SupervisedTraining};
use phi_zoo_common::train::Trainee;
use phi_zoo_datasets::{Mixture, StreamLoader};

/// How a run walks its data and when it checkpoints.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub dir: PathBuf,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps per epoch: the checkpoint interval.
    pub steps_per_epoch: usize,
    pub epochs: usize,
    /// Checkpoints kept.
    pub keep: usize,
    /// Validation batches after each epoch.
    pub valid_batches: usize,
    /// Resume after this epoch's checkpoint.
    pub resume_epoch: Option<usize>,
}

/// Trains `trainee` as `plan` says and returns the trained inference model.
pub fn run<B, O, S>(
    trainee: Trainee<B>,
    optim: O,
    scheduler: S,
    train: Arc<Mixture>,
    valid: Arc<Mixture>,
    plan: &RunPlan,
) -> Trainee<B::InnerBackend>
where
    B: AutodiffBackend,
    O: Optimizer<Trainee<B>, B> + 'static,
    S: LrScheduler + 'static,
{
    let device = trainee.phi.devices()[0].clone();
    let micro_batches = plan.steps_per_epoch * plan.grad_accum;
    let first_epoch = plan.resume_epoch.unwrap_or(0) as u64;
    let train_loader = StreamLoader::<B>::new(
        train,
        plan.batch,
        micro_batches,
        first_epoch,
        device.clone(),
    );
    let valid_loader = StreamLoader::<B::InnerBackend>::new(
        valid,
        plan.batch,
        plan.valid_batches.max(1),
        0,
        device,
    );
    let mut training =
        SupervisedTraining::new(&plan.dir, Arc::new(train_loader), Arc::new(valid_loader))
            .metric_train_numeric(LossMetric::<B>::new())
            .metric_valid_numeric(LossMetric::<B::InnerBackend>::new())
            .with_file_checkpointer(DefaultRecorder::new())
            .with_checkpointing_strategy(KeepLastNCheckpoints::new(plan.keep.max(1)))
            .num_epochs(plan.epochs)
            .renderer(QuietRenderer)
            .with_application_logger(None);
    if plan.grad_accum > 1 {
        training = training.grads_accumulation(plan.grad_accum);
    }
    if let Some(epoch) = plan.resume_epoch {
        training = training.checkpoint(epoch);
    }
    training
        .launch(Learner::new(trainee, optim, scheduler))
        .model
}

/// Renders nothing: the run reports through its own logs and summary.
pub struct QuietRenderer;

impl MetricsRendererTraining for QuietRenderer {
    fn update_train(&mut self, _: MetricState) {}
    fn update_valid(&mut self, _: MetricState) {}
    fn render_train(&mut self, _: TrainingProgress, _: Vec<ProgressType>) {}
    fn render_valid(&mut self, _: TrainingProgress, _: Vec<ProgressType>) {}
    fn on_train_end(
        &mut self,
        _: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for QuietRenderer {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for QuietRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _: burn::train::metric::MetricDefinition) {}
}
