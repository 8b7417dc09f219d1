//! Linear layers over `[batch, seq, features]` activations, run as one 2-D matmul.

use burn::nn::Linear;
use burn::prelude::*;

/// `layer` applied to every row of `x: [batch, seq, d_in]` → `[batch, seq, d_out]`.
///
/// burn's `Linear` on a 3-D input broadcasts the weight over a batched matmul. With burn 0.21's
/// fusion on wgpu, that batched matmul reading a fused input is wrong when `seq` is 1 and `batch`
/// is above 1 (a batch of single tokens: every step of batched decoding), while the same product
/// as `[batch * seq, d_in]` is right. Rows are independent, so flattening changes nothing else, and
/// a plain 2-D GEMM is the shape every backend's matmul is best at anyway.
pub fn forward_rows<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let y = layer.forward(x.reshape([batch * seq, d_in]));
    let d_out = y.dims()[1];
    y.reshape([batch, seq, d_out])
}
