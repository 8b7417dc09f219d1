//! Training runs on burn-train's learner: a `Trainee` (Phi + clipping and decay settings), a
//! `StreamLoader` over a mixture for training and one over a held-out mixture for validation,
//! checkpoints every epoch (an epoch being a fixed number of optimizer steps), and exact resume.
//!
//! Metrics land in `<dir>/{train,valid}/epoch-N/<name>.log`, one line per micro-batch: `Loss`,
//! `Perplexity`, `Learning_Rate`, `Tokens_per_second` and, given the hardware's peak, `MFU`.

mod checkpoint_files;
mod epoch_logger;
mod mixtures;
mod node_group;
mod progress;
mod report;

pub use checkpoint_files::{AtomicRecorder, DeferredDeletes, newest_checkpoint};
pub use epoch_logger::EpochLogger;
pub use mixtures::{DataSource, HELD_OUT_DOCUMENTS, RunMixtures, recipe_mixtures};
pub use node_group::NodeGroup;
pub use progress::RunProgress;
pub use report::{RunReport, logged_metric};

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::lr_scheduler::LrScheduler;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::{
    ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use burn::train::{InferenceStep, TrainStep};
use phi_zoo_common::checkpoint::{StoredDType, save_hf};
use phi_zoo_common::train::{
    LmBatch, LmStepOutput, LmTrainee, PerplexityOfLoss, TokenRate, known_peak_bf16_flops,
};
use phi_zoo_common::{Phi, PhiError, PhiTokenizer};
use phi_zoo_datasets::{FinetuneSet, Mixture, RankShard, SampleStream, StreamLoader};

/// How a run walks its data and when it checkpoints.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Checkpoints, metric logs and the curve go here.
    pub dir: PathBuf,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps per epoch: the checkpoint interval.
    pub steps_per_epoch: usize,
    /// Epochs in the run (the run has `epochs × steps_per_epoch` optimizer steps).
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

/// The batches a run trains and validates on, already cut into epochs.
pub struct RunData<B: AutodiffBackend> {
    /// Training batches, cut into epochs.
    pub train: Arc<dyn DataLoader<B, LmBatch<B>>>,
    /// Validation batches, the same at every validation.
    pub valid: Arc<dyn DataLoader<B::InnerBackend, LmBatch<B::InnerBackend>>>,
    /// Positions per sequence (for the FLOPs of a token).
    pub seq_len: usize,
}

impl RunPlan {
    /// Micro-batches in one epoch over all `devices`.
    pub fn micro_batches_per_epoch(&self, devices: usize) -> usize {
        self.steps_per_epoch * self.grad_accum * devices.max(1)
    }

    /// The epoch a run starts in (0 for a fresh run).
    pub fn first_epoch(&self) -> u64 {
        self.resume_epoch.unwrap_or(0) as u64
    }
}

impl<B: AutodiffBackend> RunData<B> {
    /// Epochs that walk the `train` stream (epoch k: samples k·E .. (k+1)·E), and the same
    /// `plan.valid_batches` batches of `valid` at every validation: a mixture's windows for
    /// pretraining, a `FinetuneSet`'s examples for fine-tuning. `seq_len`: the longest sequence.
    pub fn streams<S: SampleStream, V: SampleStream>(
        train: Arc<S>,
        valid: Arc<V>,
        seq_len: usize,
        plan: &RunPlan,
        devices: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            train: Arc::new(StreamLoader::<B, S>::new(
                train,
                plan.batch,
                plan.micro_batches_per_epoch(devices),
                plan.first_epoch(),
                device.clone(),
            )),
            valid: Arc::new(StreamLoader::<B::InnerBackend, V>::repeating(
                valid,
                plan.batch,
                plan.valid_batches.max(1),
                device.clone(),
            )),
            seq_len,
        }
    }
}

/// `run_with` on mixtures: pretraining.
pub fn run<B, M, O, S>(
    trainee: M,
    optim: O,
    scheduler: S,
    train: Arc<Mixture>,
    valid: Arc<Mixture>,
    plan: &RunPlan,
    devices: &[B::Device],
) -> M::InnerModule
where
    B: AutodiffBackend,
    M: Trained<B>,
    M::InnerModule: Validated<B::InnerBackend>,
    O: Optimizer<M, B> + 'static,
    S: LrScheduler + 'static,
{
    let device = devices
        .first()
        .cloned()
        .unwrap_or_else(|| trainee.phi().devices()[0].clone());
    let seq_len = train.seq_len();
    // With several nodes, each reads its share of every micro-batch of the run; all validate
    // on the whole held-out set.
    let (rank, nodes) = trainee
        .gradient_sync()
        .map_or((0, 1), |sync| (sync.rank(), sync.nodes()));
    let train = Arc::new(RankShard::new(train, rank, nodes, plan.batch));
    let data = RunData::streams(train, valid, seq_len, plan, devices.len(), &device);
    run_with(trainee, optim, scheduler, data, plan, devices)
}

/// A module burn-train's learner can train here: a language-model step over `LmBatch`.
pub trait Trained<B: AutodiffBackend>:
    TrainStep<Input = LmBatch<B>, Output = LmStepOutput<B>>
    + AutodiffModule<B>
    + LmTrainee<B>
    + Display
    + 'static
{
}

impl<B, M> Trained<B> for M
where
    B: AutodiffBackend,
    M: TrainStep<Input = LmBatch<B>, Output = LmStepOutput<B>>
        + AutodiffModule<B>
        + LmTrainee<B>
        + Display
        + 'static,
{
}

/// The validation side of a `Trained` module.
pub trait Validated<B: Backend>:
    InferenceStep<Input = LmBatch<B>, Output = LmStepOutput<B>> + Module<B> + 'static
{
}

impl<B, M> Validated<B> for M
where
    B: Backend,
    M: InferenceStep<Input = LmBatch<B>, Output = LmStepOutput<B>> + Module<B> + 'static,
{
}

/// Trains `trainee` on `data` as `plan` says and returns the trained inference module. With
/// several `devices`, burn-train's multi-device strategy runs data parallel: each optimizer step
/// reads `batch × grad_accum` sequences on every device (`data` must be cut for that many), and the
/// optimizer runs on the first. With none, the run stays on the trainee's device.
pub fn run_with<B, M, O, S>(
    mut trainee: M,
    optim: O,
    scheduler: S,
    data: RunData<B>,
    plan: &RunPlan,
    devices: &[B::Device],
) -> M::InnerModule
where
    B: AutodiffBackend,
    M: Trained<B>,
    M::InnerModule: Validated<B::InnerBackend>,
    O: Optimizer<M, B> + 'static,
    S: LrScheduler + 'static,
{
    // Each step frees and reallocates the same large buffers: keep them (see the function).
    crate::memory::retain_freed_memory();
    let devices = match devices {
        [] => trainee.phi().devices()[..1].to_vec(),
        some => some.to_vec(),
    };
    let device = devices[0].clone();
    let device_count = devices.len();
    // The learner sums the gradients of all micro-batches of a step, on all devices, and the
    // nodes of a data-parallel run sum theirs.
    let nodes = trainee.gradient_sync().map_or(1, |sync| sync.nodes());
    trainee.settings_mut().grad_scale = 1.0 / (plan.grad_accum * devices.len() * nodes) as f64;
    let flops_per_token = trainee
        .phi()
        .config()
        .training_flops_per_token(data.seq_len);
    let first_epoch = plan.first_epoch();
    let valid_loss = LossMetric::<B::InnerBackend>::new();
    let checkpoints = DeferredDeletes::new(
        ComposedCheckpointingStrategy::builder()
            .add(KeepLastNCheckpoints::new(plan.keep.max(1)))
            .add(MetricCheckpointingStrategy::new(
                &valid_loss,
                Aggregate::Mean,
                Direction::Lowest,
                Split::Valid,
            ))
            .build(),
        &plan.dir,
    );
    let dropped_checkpoints = checkpoints.pending();
    // Whatever a killed run left past the epoch this one starts from is not a checkpoint.
    if let Err(e) = checkpoint_files::clear_after(&plan.dir, first_epoch as usize) {
        eprintln!("cannot clear stale checkpoint files: {e}");
    }
    let execution = if devices.len() > 1 {
        ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice)
    } else {
        ExecutionStrategy::single(device)
    };
    let mut training = SupervisedTraining::new(&plan.dir, data.train, data.valid)
        .metric_train_numeric(LossMetric::<B>::new())
        .metric_train_numeric(PerplexityOfLoss::new())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(TokenRate::tokens_per_second())
        .metric_valid_numeric(valid_loss)
        .metric_valid_numeric(PerplexityOfLoss::new())
        .with_file_checkpointer(AtomicRecorder::default())
        .with_checkpointing_strategy(checkpoints)
        .with_training_strategy(execution.into())
        .num_epochs(plan.epochs)
        .with_metric_logger(EpochLogger::new(&plan.dir, first_epoch as usize + 1))
        .renderer(RunProgress::new(
            plan.epochs,
            plan.steps_per_epoch,
            plan.batch * plan.grad_accum * device_count,
        ))
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
    let trained = training
        .launch(Learner::new(trainee, optim, scheduler))
        .model;
    if let Err(e) = checkpoint_files::delete_released(&plan.dir, &dropped_checkpoints) {
        eprintln!("cannot delete old checkpoints: {e}");
    }
    trained
}

/// With `resume`, the newest checkpoint in `dir` that verifies; `None` (with a notice) when there
/// is none yet, so that a requeued job that never reached its first checkpoint starts over.
/// Without `resume`, `None`: a fresh run.
pub fn resume_epoch(dir: &Path, resume: bool) -> Option<usize> {
    if !resume {
        return None;
    }
    let newest = newest_checkpoint(dir);
    if newest.is_none() {
        eprintln!(
            "--resume: no complete checkpoint in {} yet: starting from step 0",
            dir.join("checkpoint").display()
        );
    }
    newest
}

/// Peak bf16 FLOP/s of GPU 0 as `nvidia-smi` names it, from the table of known devices; `None`
/// (with a notice when a GPU was found) otherwise.
pub fn detected_peak_flops() -> Option<f64> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "--id=0"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout);
    let peak = known_peak_bf16_flops(name.trim());
    if peak.is_none() {
        eprintln!("no peak FLOP/s known for {name:?}: pass the peak for MFU");
    }
    peak
}

/// Writes a trained model in Hugging Face format (f32 safetensors, config.json) with its
/// tokenizer.json into `dir`, which transformers and phi-zoo then load as any checkpoint.
pub fn export_model<B: Backend>(
    phi: &Phi<B>,
    tokenizer: &PhiTokenizer,
    dir: &Path,
) -> phi_zoo_common::Result<()> {
    save_hf(phi, dir, StoredDType::F32)?;
    let json = tokenizer.to_json()?;
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).map_err(|source| PhiError::Io { path, source })
}

/// Token-weighted mean loss of `phi` over every example of `set` (completion tokens only for
/// prompt-completion data), in batches of eight.
pub fn mean_loss<B: Backend>(phi: &Phi<B>, set: &FinetuneSet, device: &B::Device) -> f64 {
    let (mut total, mut tokens) = (0.0, 0usize);
    let n = set.len() as u64;
    for start in (0..n).step_by(8) {
        let batch = set.batch::<B>(start..(start + 8).min(n), device);
        let out = phi.lm_step(batch);
        total += out.loss.into_scalar().elem::<f64>() * out.tokens as f64;
        tokens += out.tokens;
    }
    total / tokens.max(1) as f64
}

/// The mean of a metric over each epoch's training log, epoch by epoch from the first.
pub fn logged_means(dir: &Path, metric: &str) -> Vec<f64> {
    (1..)
        .map_while(|epoch| logged_metric(dir, "train", epoch, metric))
        .filter(|values| !values.is_empty())
        .map(|values| values.iter().sum::<f64>() / values.len() as f64)
        .collect()
}
