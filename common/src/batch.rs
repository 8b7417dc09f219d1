//! The batch a training or evaluation step consumes.

use burn::prelude::*;

/// Inputs and next-token targets, `[batch, seq]` each. `loss_mask`, where given, is true at the
/// target positions that count (prompt and padding positions of fine-tuning data are false);
/// without it every position counts.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Input token ids, `[batch, seq]`.
    pub inputs: Tensor<B, 2, Int>,
    /// The next token at each position, `[batch, seq]`.
    pub targets: Tensor<B, 2, Int>,
    /// Which targets count in the loss; `None`: all of them.
    pub loss_mask: Option<Tensor<B, 2, Bool>>,
}
