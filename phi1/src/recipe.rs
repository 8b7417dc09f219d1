//! The phi-1 paper's training recipes (ARCHITECTURE.md §7).

use phi_zoo_common::train::{Decay, OptimizerKind, OptimizerSpec, Recipe, Schedule};

/// Adam's β and ε are not in the phi-1 paper; these are phi-1.5's, from the same team.
fn adamw(weight_decay: f64) -> OptimizerSpec {
    OptimizerSpec {
        kind: OptimizerKind::AdamW,
        beta_1: 0.9,
        beta_2: 0.98,
        epsilon: 1e-7,
        weight_decay,
    }
}

/// Pretraining on CodeTextbook: AdamW, weight decay 0.1, 1e-3 peak after 750 warmup steps with
/// linear decay over the 36k scheduled steps, attention and residual dropout 0.1, 1024 sequences
/// of 2048 tokens per step.
pub fn pretrain_recipe() -> Recipe {
    Recipe {
        name: "phi-1".into(),
        optimizer: adamw(0.1),
        schedule: Schedule {
            peak: 1e-3,
            warmup_steps: 750,
            decay: Decay::Linear,
            total_steps: 36_000,
            final_fraction: 0.0,
        },
        grad_clip_norm: Some(1.0),
        attention_dropout: 0.1,
        resid_dropout: 0.1,
        embd_dropout: 0.0,
        mixture: "phi-1".into(),
        global_batch_tokens: 1024 * 2048,
        seq_len: 2048,
        source: "phi-1 paper (Textbooks Are All You Need) §2; β, ε and clipping at 1.0 are not \
                 stated there: phi-1.5's values and common practice"
            .into(),
    }
}

/// Fine-tuning on CodeExercises: AdamW, weight decay 0.01, 1e-4 after 50 warmup steps with linear
/// decay over 6k steps, 256 sequences per step.
pub fn finetune_recipe() -> Recipe {
    Recipe {
        name: "phi-1-finetune".into(),
        optimizer: adamw(0.01),
        schedule: Schedule {
            peak: 1e-4,
            warmup_steps: 50,
            decay: Decay::Linear,
            total_steps: 6_000,
            final_fraction: 0.0,
        },
        mixture: "exercises".into(),
        global_batch_tokens: 256 * 2048,
        source: "phi-1 paper §2 (finetuning on CodeExercises); as pretraining where it is silent"
            .into(),
        ..pretrain_recipe()
    }
}
