//! Training recipes as data: one TOML file per recipe (the repository's `recipes/` folder holds the
//! papers' and the demo's), read here and applied one way. A recipe builds its own optimizer,
//! learning-rate schedule and clipping/decay settings, fitted to the length of a run; programs that
//! train never do recipe arithmetic themselves.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{PhiError, Result};
use crate::model::Phi;
use crate::train::schedule::{PhiLrScheduler, Schedule};
use crate::train::trainee::StepSettings;

/// Recipe files larger than this are refused before parsing (the papers' recipes are ~1 KB).
const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// How the paper applies weight decay. Both kinds run as AdamW with the decay applied by the
/// training step (to weight matrices and embeddings only, never to biases or LayerNorm parameters),
/// so the kind records the paper's wording and changes nothing in the update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam, as the paper names it.
    Adam,
    /// AdamW, as the paper names it.
    AdamW,
}

/// Adam-family settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Adam or AdamW (see [`OptimizerKind`]).
    pub kind: OptimizerKind,
    /// First-moment decay β₁.
    pub beta_1: f64,
    /// Second-moment decay β₂.
    pub beta_2: f64,
    /// The denominator's ε.
    pub epsilon: f64,
    /// Decoupled weight decay on weight matrices and embeddings.
    pub weight_decay: f64,
}

/// Dropout probabilities the recipe trains with (they go into the model's config).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// On the attention probabilities.
    #[serde(default)]
    pub attention: f64,
    /// On each block's attention and MLP outputs before the residual sum.
    #[serde(default)]
    pub resid: f64,
    /// On the token embeddings.
    #[serde(default)]
    pub embd: f64,
}

/// One source of a recipe's data mixture: a slot name (`code`, `synthetic`, `web`: the embedded
/// corpora, or the names of a run's `--data` stores) and its sampling weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureWeight {
    /// The slot this source fills.
    pub source: String,
    /// Sampling weight (the weights need not sum to 1).
    pub weight: f64,
}

/// A training recipe: optimizer, schedule, regularisation and data mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The name it is selected by.
    pub name: String,
    /// Where the numbers come from, and what was chosen where the paper is silent.
    pub source: String,
    /// Tokens per optimizer step, reached by gradient accumulation; absent: one micro-batch per
    /// step (the demo recipes).
    #[serde(default)]
    pub global_batch_tokens: Option<usize>,
    /// Positions per training sequence.
    pub seq_len: usize,
    /// Global-norm gradient clipping (over all parameters together); absent: no clipping.
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    /// The peak rate when training LoRA adapters instead of every weight; absent: `schedule.peak`.
    #[serde(default)]
    pub lora_peak: Option<f64>,
    /// The optimizer's settings.
    pub optimizer: OptimizerSpec,
    /// The learning-rate schedule, at the paper's length.
    pub schedule: Schedule,
    /// Dropout during training.
    #[serde(default)]
    pub dropout: Dropout,
    /// The data mixture, in sampling order.
    #[serde(default)]
    pub mixture: Vec<MixtureWeight>,
}

impl Recipe {
    /// Parses a recipe from TOML; `origin` (a file name or a recipe name) is named in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| PhiError::Config {
            origin: format!("recipe {origin}"),
            field: e
                .span()
                .map(|at| describe_span(text, at))
                .unwrap_or_default(),
            message: e.message().to_string(),
        })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    /// Reads a recipe file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let io = |source| PhiError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_RECIPE_BYTES {
            return Err(PhiError::Config {
                origin: format!("recipe {origin}"),
                field: "(file)".into(),
                message: format!("{size} bytes is not a recipe (at most {MAX_RECIPE_BYTES})"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_toml(&text, &origin)
    }

    /// The recipe as TOML, as `from_toml` reads it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe is plain data")
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, why: &str| {
            Err(PhiError::Config {
                origin: format!("recipe {origin}"),
                field: field.into(),
                message: why.into(),
            })
        };
        let o = &self.optimizer;
        for (field, beta) in [
            ("optimizer.beta_1", o.beta_1),
            ("optimizer.beta_2", o.beta_2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, "must be in [0, 1)");
            }
        }
        if !(o.epsilon > 0.0 && o.epsilon.is_finite()) {
            return bad("optimizer.epsilon", "must be positive");
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return bad("optimizer.weight_decay", "must be 0 or more");
        }
        let s = &self.schedule;
        if !(s.peak > 0.0 && s.peak.is_finite()) {
            return bad("schedule.peak", "must be a positive rate");
        }
        if !(0.0..=1.0).contains(&s.final_fraction) {
            return bad("schedule.final_fraction", "must be in [0, 1]");
        }
        if let Some(peak) = self.lora_peak
            && !(peak > 0.0 && peak.is_finite())
        {
            return bad("lora_peak", "must be a positive rate");
        }
        if let Some(norm) = self.grad_clip_norm
            && !(norm > 0.0 && norm.is_finite())
        {
            return bad("grad_clip_norm", "must be positive");
        }
        if self.seq_len == 0 {
            return bad("seq_len", "must be at least 1");
        }
        if self.global_batch_tokens == Some(0) {
            return bad("global_batch_tokens", "must be at least 1");
        }
        let d = &self.dropout;
        for (field, p) in [
            ("dropout.attention", d.attention),
            ("dropout.resid", d.resid),
            ("dropout.embd", d.embd),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(field, "must be in [0, 1)");
            }
        }
        for (i, m) in self.mixture.iter().enumerate() {
            if !(m.weight > 0.0 && m.weight.is_finite()) {
                return bad(&format!("mixture[{i}].weight"), "must be positive");
            }
        }
        Ok(())
    }

    /// Sequences per optimizer step (the paper's global batch), if the recipe sets one.
    pub fn global_batch_sequences(&self) -> Option<usize> {
        self.global_batch_tokens
            .map(|tokens| (tokens / self.seq_len).max(1))
    }

    /// Micro-batches per optimizer step that reach the recipe's global batch with `batch`
    /// sequences of `seq_len` tokens on each of `devices`; 1 when the recipe sets no global batch.
    pub fn grad_accum(&self, batch: usize, seq_len: usize, devices: usize) -> usize {
        match self.global_batch_tokens {
            Some(tokens) => tokens
                .div_ceil(batch.max(1) * seq_len.max(1) * devices.max(1))
                .max(1),
            None => 1,
        }
    }

    /// The recipe for a run of `steps` optimizer steps: the decay spans the run and the warmup is
    /// at most a tenth of it (the papers' runs are far longer than any run here).
    pub fn fitted_to(&self, steps: usize) -> Self {
        Self {
            schedule: Schedule {
                warmup_steps: self.schedule.warmup_steps.min(steps / 10),
                total_steps: steps,
                ..self.schedule
            },
            ..self.clone()
        }
    }

    /// The recipe with its peak rate replaced (a `--lr` flag).
    pub fn with_peak(&self, peak: f64) -> Self {
        Self {
            schedule: Schedule {
                peak,
                ..self.schedule
            },
            ..self.clone()
        }
    }

    /// The recipe for training LoRA adapters: its `lora_peak` as the peak, where it sets one.
    pub fn for_lora(&self) -> Self {
        match self.lora_peak {
            Some(peak) => self.with_peak(peak),
            None => self.clone(),
        }
    }

    /// `phi` with the recipe's dropout (in its layers and its config), fresh or loaded.
    pub fn apply_dropout<B: Backend>(&self, phi: Phi<B>) -> Phi<B> {
        let d = self.dropout;
        phi.with_dropout(d.attention, d.resid, d.embd)
    }

    /// Clipping and weight decay, as the training step applies them.
    pub fn step_settings(&self) -> StepSettings {
        StepSettings {
            grad_clip_norm: self.grad_clip_norm,
            weight_decay: self.optimizer.weight_decay,
            ..Default::default()
        }
    }

    /// The optimizer: AdamW with the recipe's β₁, β₂ and ε, and no decay of its own (the step
    /// decays weight matrices only; see [`OptimizerKind`]).
    pub fn optimizer<B, M>(&self) -> OptimizerAdaptor<AdamW, M, B>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
    {
        AdamWConfig::new()
            .with_beta_1(self.optimizer.beta_1 as f32)
            .with_beta_2(self.optimizer.beta_2 as f32)
            .with_epsilon(self.optimizer.epsilon as f32)
            .with_weight_decay(0.0)
            .init()
    }

    /// The learning-rate scheduler, stepped once per micro-batch (`grad_accum` per optimizer step).
    pub fn scheduler(&self, grad_accum: usize) -> PhiLrScheduler {
        self.schedule.scheduler(grad_accum)
    }
}

/// "line L" of a byte span in `text`, for parse errors that name no key.
fn describe_span(text: &str, span: std::ops::Range<usize>) -> String {
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}
