//! Training pieces that belong with the model (the `train` feature): the loss, and burn-train's
//! `TrainStep` / `InferenceStep` for `Phi`.

pub mod frozen;
pub mod gradient_sync;
pub mod head_loss;
pub mod lora_trainee;
pub mod loss;
pub mod metrics;
pub mod recipe;
pub mod regularize;
pub mod schedule;
pub mod step;
pub mod trainee;

pub use crate::batch::LmBatch;
pub use frozen::Frozen;
pub use gradient_sync::{GradientSync, SharedSync, sum_gradients};
pub use head_loss::{HeadLoss, head_loss};
pub use lora_trainee::LoraTrainee;
pub use loss::lm_loss;
pub use metrics::{PerplexityOfLoss, TokenRate, known_peak_bf16_flops};
pub use recipe::{Dropout, MixtureWeight, OptimizerKind, OptimizerSpec, Recipe};
pub use schedule::{Decay, PhiLrScheduler, Schedule};
pub use step::{LmStepFigures, LmStepOutput};
pub use trainee::{LmTrainee, StepSettings, Trainee, optimizer_step};
