//! Phi-2's recipe. Microsoft published none beyond the data (250B tokens of synthetic and filtered
//! web text, 1.4T tokens seen, 96 A100s for 14 days), so these are our defaults, chosen as a
//! conventional recipe for a 2.7B model trained on that data.

use phi_zoo_common::train::{Decay, OptimizerKind, OptimizerSpec, Recipe, Schedule};

/// AdamW (0.9, 0.95), ε 1e-7, weight decay 0.1; 2000 warmup steps to 2e-4, cosine to 10% over
/// 1.4T tokens in 4M-token steps; residual dropout 0.1 (as in the published config); the
/// phi-1.5-web mixture.
pub fn recipe() -> Recipe {
    Recipe {
        name: "phi-2".into(),
        optimizer: OptimizerSpec {
            kind: OptimizerKind::AdamW,
            beta_1: 0.9,
            beta_2: 0.95,
            epsilon: 1e-7,
            weight_decay: 0.1,
        },
        schedule: Schedule {
            peak: 2e-4,
            warmup_steps: 2_000,
            decay: Decay::Cosine,
            total_steps: 1_400_000_000_000 / (2048 * 2048),
            final_fraction: 0.1,
        },
        grad_clip_norm: Some(1.0),
        attention_dropout: 0.0,
        resid_dropout: 0.1,
        embd_dropout: 0.0,
        mixture: "phi-1.5-web".into(),
        global_batch_tokens: 2048 * 2048,
        seq_len: 2048,
        source: "unpublished: phi-zoo's defaults (see phi2::recipe)".into(),
    }
}
