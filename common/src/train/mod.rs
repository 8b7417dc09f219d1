//! Training pieces that belong with the model: the language-model batch, the loss, and burn-train's
//! `TrainStep` / `InferenceStep` for `Phi`.

pub mod batch;
pub mod loss;
pub mod step;

pub use batch::LmBatch;
pub use loss::lm_loss;
pub use step::LmStepOutput;
