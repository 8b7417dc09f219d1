//! The phi-1.5 report's training recipes (ARCHITECTURE.md §7).

use phi_zoo_common::train::{OptimizerKind, OptimizerSpec, Recipe, Schedule};

/// Adam with β (0.9, 0.98), ε 1e-7, weight decay 0.1, a constant 2e-4 with no warmup, 2048
/// sequences of 2048 tokens per step over 150B tokens (about 35.8k steps), no dropout, data 20%
/// code / 80% synthetic textbooks.
pub fn recipe() -> Recipe {
    Recipe {
        name: "phi-1.5".into(),
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            beta_1: 0.9,
            beta_2: 0.98,
            epsilon: 1e-7,
            weight_decay: 0.1,
        },
        schedule: Schedule {
            total_steps: 150_000_000_000 / (2048 * 2048),
            ..Schedule::constant(2e-4)
        },
        grad_clip_norm: Some(1.0),
        attention_dropout: 0.0,
        resid_dropout: 0.0,
        embd_dropout: 0.0,
        mixture: "phi-1.5".into(),
        global_batch_tokens: 2048 * 2048,
        seq_len: 2048,
        source: "phi-1.5 report (Textbooks Are All You Need II) §2; clipping at 1.0 is not \
                 stated there: common practice"
            .into(),
    }
}

/// phi-1.5-web: as phi-1.5 over 300B tokens, data 20% code / 40% filtered web / 40% synthetic.
pub fn web_recipe() -> Recipe {
    let base = recipe();
    Recipe {
        name: "phi-1.5-web".into(),
        schedule: Schedule {
            total_steps: 300_000_000_000 / (2048 * 2048),
            ..base.schedule
        },
        mixture: "phi-1.5-web".into(),
        ..base
    }
}
