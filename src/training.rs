//! Training runs on burn-train's learner: a `Trainee` (Phi + clipping and decay settings), a
//! `StreamLoader` over a mixture for training and one over a held-out mixture for validation,
//! checkpoints every epoch (an epoch being a fixed number of optimizer steps), and exact resume.
//!
//! Metrics land in `<dir>/{train,valid}/epoch-N/<name>.log`, one line per micro-batch: `Loss`,
//! `Perplexity`, `Learning_Rate`, `Tokens_per_second` and, given the hardware's peak, `MFU`.

mod epoch_line;
mod epoch_logger;

pub use epoch_line::EpochLineRenderer;
pub use epoch_logger::EpochLogger;

use std::path::PathBuf;
use std::sync::Arc;

use burn::lr_scheduler::LrScheduler;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::DefaultRecorder;
use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::{
    ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use phi_zoo_common::train::{PerplexityOfLoss, TokenRate, Trainee};
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
    /// The newest checkpoints kept (the one with the best validation loss is kept as well).
    pub keep: usize,
    /// Validation batches after each epoch.
    pub valid_batches: usize,
    /// Resume after this epoch's checkpoint.
    pub resume_epoch: Option<usize>,
    /// Peak FLOP/s of all devices together, for the MFU metric (none: no MFU).
    pub peak_flops: Option<f64>,
}

/// Trains `trainee` as `plan` says and returns the trained inference model. With several
/// `devices`, burn-train's multi-device strategy runs data parallel: each optimizer step reads
/// `batch × grad_accum` sequences on every device, and the optimizer runs on the first. With
/// none, the run stays on the trainee's device.
pub fn run<B, O, S>(
    mut trainee: Trainee<B>,
    optim: O,
    scheduler: S,
    train: Arc<Mixture>,
    valid: Arc<Mixture>,
    plan: &RunPlan,
    devices: &[B::Device],
) -> Trainee<B::InnerBackend>
where
    B: AutodiffBackend,
    O: Optimizer<Trainee<B>, B> + 'static,
    S: LrScheduler + 'static,
{
    let devices = match devices {
        [] => trainee.phi.devices()[..1].to_vec(),
        some => some.to_vec(),
    };
    let device = devices[0].clone();
    // The learner sums the gradients of all micro-batches of a step, on all devices.
    trainee.settings.grad_scale = 1.0 / (plan.grad_accum * devices.len()) as f64;
    let flops_per_token = trainee
        .phi
        .config()
        .training_flops_per_token(train.seq_len());
    let micro_batches = plan.steps_per_epoch * plan.grad_accum * devices.len();
    let first_epoch = plan.resume_epoch.unwrap_or(0) as u64;
    let train_loader = StreamLoader::<B>::new(
        train,
        plan.batch,
        micro_batches,
        first_epoch,
        device.clone(),
    );
    let valid_loader = StreamLoader::<B::InnerBackend>::repeating(
        valid,
        plan.batch,
        plan.valid_batches.max(1),
        device.clone(),
    );
    let valid_loss = LossMetric::<B::InnerBackend>::new();
    let checkpoints = ComposedCheckpointingStrategy::builder()
        .add(KeepLastNCheckpoints::new(plan.keep.max(1)))
        .add(MetricCheckpointingStrategy::new(
            &valid_loss,
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
        ))
        .build();
    let execution = if devices.len() > 1 {
        ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice)
    } else {
        ExecutionStrategy::single(device)
    };
    let mut training =
        SupervisedTraining::new(&plan.dir, Arc::new(train_loader), Arc::new(valid_loader))
            .metric_train_numeric(LossMetric::<B>::new())
            .metric_train_numeric(PerplexityOfLoss::new())
            .metric_train_numeric(LearningRateMetric::new())
            .metric_train_numeric(TokenRate::tokens_per_second())
            .metric_valid_numeric(valid_loss)
            .metric_valid_numeric(PerplexityOfLoss::new())
            .with_file_checkpointer(DefaultRecorder::new())
            .with_checkpointing_strategy(checkpoints)
            .with_training_strategy(execution.into())
            .num_epochs(plan.epochs)
            .with_metric_logger(EpochLogger::new(&plan.dir, first_epoch as usize + 1))
            .renderer(EpochLineRenderer::default())
            .with_application_logger(None);
    if let Some(peak) = plan.peak_flops {
        training = training
            .metric_train_numeric(TokenRate::model_flops_utilization(flops_per_token, peak));
    }
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
