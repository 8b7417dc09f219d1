//! Training recipes as data: which optimizer, schedule, regularisation and data mixture a run
//! uses. Each variant crate defines the papers' recipes with these types (`phi1::pretrain_recipe()`
//! and so on); the trainer reads them and flags override single fields.

use serde::{Deserialize, Serialize};

use crate::train::schedule::Schedule;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    AdamW,
}

/// Adam-family settings. Weight decay is decoupled (AdamW style) for both kinds and applied to
/// weight matrices and embeddings only, never to biases or LayerNorm parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub optimizer: OptimizerSpec,
    pub schedule: Schedule,
    /// Global-norm gradient clipping (over all parameters together); `None`: no clipping.
    pub grad_clip_norm: Option<f64>,
    pub attention_dropout: f64,
    pub resid_dropout: f64,
    pub embd_dropout: f64,
    /// A named data mixture (`phi_zoo_datasets::named_mixture`).
    pub mixture: String,
    /// Tokens per optimizer step, reached by gradient accumulation.
    pub global_batch_tokens: usize,
    pub seq_len: usize,
    /// Where the numbers come from, and what was chosen where the paper is silent.
    pub source: String,
}

impl Recipe {
    /// Sequences per optimizer step.
    pub fn global_batch_sequences(&self) -> usize {
        (self.global_batch_tokens / self.seq_len).max(1)
    }
}
