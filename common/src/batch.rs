//! The batch a training or evaluation step consumes.

use burn::prelude::*;

/// Inputs and next-token targets, `[batch, seq]` each. `loss_mask`, where given, is true at the
/// target positions that count (prompt and padding positions of fine-tuning data are false);
/// without it every position counts.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    pub inputs: Tensor<B, 2, Int>,
    pub targets: Tensor<B, 2, Int>,
    pub loss_mask: Option<Tensor<B, 2, Bool>>,
}
