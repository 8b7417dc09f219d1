//! Linear layers as Phi runs them: weights held in transformers' `[out, in]` memory order, and
//! every product computed as a 2-D matmul, with a CPU path for the few-row products of decoding.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

/// At most this many rows (batch × new tokens) count as "few": a decode step, a small batch.
const FEW_ROWS: usize = 32;
/// The weight is cut into this many row blocks for few-row products on the CPU.
const WEIGHT_BLOCKS: usize = 4;

/// A `Linear` whose weight lives in memory as transformers' `[out, in]`; burn sees the `[in, out]`
/// transposed view it expects. Loading needs no transpose, and export reads the memory as is.
/// For CPU backends only (see `linear_from_hf`).
pub fn linear_from_out_in<B: Backend>(
    weight_out_in: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(weight_out_in.transpose()),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// A `Linear` from transformers' `[out, in]` weight values. CPU backends keep that memory order
/// (`linear_from_out_in`). GPU backends get burn's own `[in, out]` order, transposed here on the
/// host: with burn 0.21's fusion on wgpu, a one-row matmul against a transposed weight view is
/// wrong (a cached decode step of one sequence), and GPU matmuls gain nothing from the view.
pub fn linear_from_hf<B: Backend>(
    weight: Vec<f32>,
    [d_out, d_in]: [usize; 2],
    bias: Tensor<B, 1>,
    device: &B::Device,
) -> Linear<B> {
    if is_cpu::<B>(device) {
        let weight = Tensor::from_data(TensorData::new(weight, [d_out, d_in]), device);
        return linear_from_out_in(weight, bias);
    }
    let weight = transpose(&weight, d_out, d_in);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(weight, [d_in, d_out]),
            device,
        )),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// `values` (`rows × cols`, row-major) transposed, in square tiles so both sides stay in cache.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// `layer` applied to every row of `x: [batch, seq, d_in]` → `[batch, seq, d_out]`.
///
/// burn's `Linear` on a 3-D input broadcasts the weight over a batched matmul. With burn 0.21's
/// fusion on wgpu, that batched matmul reading a fused input is wrong when `seq` is 1 and `batch`
/// is above 1 (a batch of single tokens: every step of batched decoding), while the same product
/// as `[batch * seq, d_in]` is right. Rows are independent, so flattening changes nothing else.
pub fn forward_rows<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, seq, d_in] = x.dims();
    let y = forward_2d(layer, x.reshape([batch * seq, d_in]));
    let d_out = y.dims()[1];
    y.reshape([batch, seq, d_out])
}

/// `layer` applied to `x: [rows, d_in]` → `[rows, d_out]`.
pub fn forward_2d<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, _] = x.dims();
    let d_out = layer.weight.shape().dims::<2>()[1];
    if rows > FEW_ROWS || d_out % WEIGHT_BLOCKS != 0 || !is_cpu::<B>(&x.device()) {
        return layer.forward(x);
    }
    // On the CPU backend, `x · W` with few rows runs on one thread at about half the memory
    // bandwidth (the matmul library parallelises neither one row nor a few), and decoding is all
    // such products. `W_out_in · xᵀ`, with the weight's rows cut into blocks that burn's CPU
    // matmul runs as a parallel batch, reads the weight at full bandwidth: 1.8× faster for one
    // row of phi-1.5's MLP on 2 cores, 2× for 2..32 rows (`examples/linear_bench.rs`).
    let [_, d_in] = x.dims();
    let w_out_in = layer.weight.val().transpose();
    let y = w_out_in
        .reshape([WEIGHT_BLOCKS, d_out / WEIGHT_BLOCKS, d_in])
        .matmul(x.transpose().unsqueeze::<3>())
        .reshape([d_out, rows])
        .transpose();
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    }
}

/// burn's CPU backends, which the few-row path helps; GPU matmuls handle few rows well already.
pub(crate) fn is_cpu<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device);
    name.contains("flex") || name.contains("ndarray")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    #[test]
    fn the_few_row_path_equals_burns_linear() {
        let device = Default::default();
        for (d_in, d_out) in [(24, 64), (24, 30)] {
            let weight = Tensor::<B, 2>::random([d_out, d_in], Distribution::Default, &device);
            let bias = Tensor::<B, 1>::random([d_out], Distribution::Default, &device);
            let layer = linear_from_out_in(weight, bias);
            for rows in [1, 3, FEW_ROWS, FEW_ROWS + 1] {
                let x = Tensor::<B, 2>::random([rows, d_in], Distribution::Default, &device);
                let ours: Vec<f32> = forward_2d(&layer, x.clone()).into_data().to_vec().unwrap();
                let plain: Vec<f32> = layer.forward(x).into_data().to_vec().unwrap();
                let d = ours
                    .iter()
                    .zip(&plain)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(d < 1e-5, "{rows} rows, {d_in}→{d_out}: {d}");
            }
        }
    }
}
