//! `PhiLinear`: a linear layer with bias, `y = x·W + b`, and the one place that knows how its
//! weight is laid out in memory.
//!
//! On CPU backends the weight stays in transformers' `[out, in]` memory order and burn sees the
//! `[in, out]` transposed view it expects: loading needs no transpose, export reads the memory as
//! it is, and the few-row products of decoding run as `W·xᵀ` over blocks of the weight's rows
//! (`forward_2d`). GPU backends hold burn's own `[in, out]` order, transposed on the host at load:
//! with burn 0.21's fusion on wgpu, a one-row matmul against a transposed weight view is wrong,
//! and GPU matmuls gain nothing from the view.
//!
//! For inference on the CPU a weight can instead be packed (f16, bf16, `Q8_0`, `Q4_0`:
//! `model::packed`): decode steps then read the packed bytes in place, and longer inputs
//! multiply `Q8_0` and `Q4_0` weights in integers and f16 and bf16 ones converted a tile of rows
//! at a time (`ops::packed_linear`).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;
use burn::tensor::{DType, Distribution, FloatDType};

use std::sync::Arc;

use super::ops;
use super::packed::{PackedWeight, WeightFormat};
use crate::error::{PhiError, Result};

/// At most this many rows (batch × new tokens) count as "few": a decode step, a small batch.
const FEW_ROWS: usize = 32;
/// Rows up to which the CPU's few-row kernel beats the blocked matmul (phi-1.5, 2 cores: 1.5×
/// faster at 4 rows, as fast at 1; a 16-row decode step 0.88 s against 0.68 s,
/// `examples/linear_bench.rs`).
const KERNEL_ROWS: usize = 8;
/// The weight is cut into this many row blocks for few-row products on the CPU.
const WEIGHT_BLOCKS: usize = 4;

/// A linear layer with bias, as every projection of Phi is.
#[derive(Module, Debug)]
pub struct PhiLinear<B: Backend> {
    /// `W` as burn's `[in, out]` (a view of `[out, in]` memory on CPU backends); empty when the
    /// weight is `packed`.
    pub weight: Param<Tensor<B, 2>>,
    /// `b`, `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// The weight packed for CPU inference, when it is (not saved in burn records, not trained).
    #[module(skip)]
    pub packed: Option<Arc<PackedWeight>>,
}

impl<B: Backend> PhiLinear<B> {
    /// From transformers' `[out, in]` weight values and a bias.
    pub fn from_hf(
        weight: Vec<f32>,
        [d_out, d_in]: [usize; 2],
        bias: Tensor<B, 1>,
        device: &B::Device,
    ) -> Self {
        let weight = if ops::is_cpu::<B>() {
            Tensor::from_data(TensorData::new(weight, [d_out, d_in]), device).transpose()
        } else {
            let weight = transpose(&weight, d_out, d_in);
            Tensor::from_data(TensorData::new(weight, [d_in, d_out]), device)
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            packed: None,
        }
    }

    /// A fresh layer as transformers initialises one: normal(0, `std`) weights, zero bias.
    /// Drawn now, not lazily: a lazily drawn parameter is drawn again by every clone of the
    /// model, so two clones of one fresh model would differ.
    pub fn fresh(d_in: usize, d_out: usize, std: f64, device: &B::Device) -> Self {
        let normal = Distribution::Normal(0.0, std);
        let weight = if ops::is_cpu::<B>() {
            Tensor::<B, 2>::random([d_out, d_in], normal, device).transpose()
        } else {
            Tensor::<B, 2>::random([d_in, d_out], normal, device)
        };
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
            packed: None,
        }
    }

    /// A layer around an `[out, in]` weight tensor (the CPU layout; for tools that time it).
    pub fn from_out_in(weight_out_in: Tensor<B, 2>, bias: Tensor<B, 1>) -> Self {
        Self {
            weight: Param::from_tensor(weight_out_in.transpose()),
            bias: Param::from_tensor(bias),
            packed: None,
        }
    }

    /// A layer whose weight is packed (for inference on the CPU backend).
    pub fn from_packed(weight: PackedWeight, bias: Tensor<B, 1>, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::empty([0, 0], device)),
            bias: Param::from_tensor(bias),
            packed: Some(Arc::new(weight)),
        }
    }

    /// From transformers' `[out, in]` weight values, packed in `format` (CPU backend).
    pub fn packed_from_hf(
        weight: &[f32],
        [d_out, d_in]: [usize; 2],
        format: WeightFormat,
        bias: Tensor<B, 1>,
        device: &B::Device,
    ) -> Result<Self> {
        if !ops::is_cpu::<B>() {
            return Err(PhiError::Input(format!(
                "{format} weights run on the CPU backend (flex), not on a GPU backend"
            )));
        }
        let packed = PackedWeight::pack(weight, [d_out, d_in], format)?;
        Ok(Self::from_packed(packed, bias, device))
    }

    /// The same layer with its weight in `format` (f32: a plain tensor again).
    pub fn into_format(self, format: WeightFormat) -> Result<Self> {
        if format == self.format() {
            return Ok(self);
        }
        let device = self.bias.val().device();
        let [d_in, d_out] = self.dims();
        let values: Vec<f32> = self
            .weight_out_in()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("converted to f32 just above");
        let bias = self.bias.val();
        if format == WeightFormat::F32 {
            return Ok(Self::from_hf(values, [d_out, d_in], bias, &device));
        }
        Self::packed_from_hf(&values, [d_out, d_in], format, bias, &device)
    }

    /// How the weight is stored.
    pub fn format(&self) -> WeightFormat {
        self.packed
            .as_ref()
            .map_or(WeightFormat::F32, |p| p.format())
    }

    /// `[in, out]`: the widths of its input and output.
    pub fn dims(&self) -> [usize; 2] {
        match &self.packed {
            Some(packed) => {
                let [d_out, d_in] = packed.dims();
                [d_in, d_out]
            }
            None => self.weight.shape().dims::<2>(),
        }
    }

    /// The weight as transformers stores it, `[out, in]` (dequantized when packed).
    pub fn weight_out_in(&self) -> Tensor<B, 2> {
        match &self.packed {
            Some(packed) => self.unpacked(packed).weight.val().transpose(),
            None => self.weight.val().transpose(),
        }
    }

    /// The f32 layer a packed weight stands for (the weight dequantized, in the backend's
    /// layout), for products the packed kernel does not cover.
    fn unpacked(&self, packed: &PackedWeight) -> Self {
        Self::from_hf(
            packed.dequantize(),
            packed.dims(),
            self.bias.val(),
            &self.bias.val().device(),
        )
    }

    /// The same layer with `delta` (`[in, out]`) added to its weight, keeping the layout (a
    /// packed weight is dequantized first, and stays f32).
    pub fn with_weight_delta(self, delta: Tensor<B, 2>) -> Self {
        let this = match &self.packed {
            Some(packed) => self.unpacked(packed),
            None => self,
        };
        this.with_weight_delta_f32(delta)
    }

    fn with_weight_delta_f32(self, delta: Tensor<B, 2>) -> Self {
        let weight = self.weight.val();
        let delta = delta.cast(weight.dtype());
        let merged = if ops::is_cpu::<B>() {
            // Added in `[out, in]` order so the memory stays in that order.
            (weight.transpose() + delta.transpose()).transpose()
        } else {
            weight + delta
        };
        Self {
            weight: Param::from_tensor(merged),
            bias: self.bias,
            packed: None,
        }
    }

    /// `x: [batch, seq, in]` → `[batch, seq, out]`, every row as one 2-D product.
    ///
    /// burn's own linear broadcasts the weight over a batched matmul for 3-D inputs. With burn
    /// 0.21's fusion on wgpu that batched matmul is wrong when `seq` is 1 and `batch` above 1 (a
    /// step of batched decoding), while the same product as `[batch·seq, in]` is right.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, d_in] = x.dims();
        let y = self.forward_2d(x.reshape([batch * seq, d_in]));
        let d_out = y.dims()[1];
        y.reshape([batch, seq, d_out])
    }

    /// `forward` with the product computed in `matmul` (mixed precision: input, weight and bias
    /// cast to it, the output cast back to the input's type, so autodiff keeps the parameters'
    /// type for their gradients). `None`: `forward`.
    pub fn forward_in(&self, x: Tensor<B, 3>, matmul: Option<FloatDType>) -> Tensor<B, 3> {
        let [batch, seq, d_in] = x.dims();
        let y = self.forward_2d_in(x.reshape([batch * seq, d_in]), matmul);
        let d_out = y.dims()[1];
        y.reshape([batch, seq, d_out])
    }

    /// `forward_2d` with the product computed in `matmul`, as [`forward_in`](Self::forward_in).
    pub fn forward_2d_in(&self, x: Tensor<B, 2>, matmul: Option<FloatDType>) -> Tensor<B, 2> {
        let Some(dtype) = matmul.filter(|&d| DType::from(d) != x.dtype()) else {
            return self.forward_2d(x);
        };
        let out = x.dtype();
        let (w, b) = (self.weight.val().cast(dtype), self.bias.val().cast(dtype));
        linear(x.cast(dtype), w, Some(b)).cast(out)
    }

    /// `x: [rows, in]` → `[rows, out]`.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, d_in] = x.dims();
        if let Some(packed) = &self.packed {
            // Up to 32 rows (decode steps, batches of them) read the packed weight in place;
            // a prompt's kernel converts it by tiles; elsewhere (GPU backends, autodiff) the
            // dequantized f32 weight lives for this call.
            return ops::packed_linear(&x, packed, self.bias.val(), rows > FEW_ROWS)
                .unwrap_or_else(|| self.unpacked(packed).forward_2d(x));
        }
        let d_out = self.weight.shape().dims::<2>()[1];
        // Inference in f32 on a prompt: AVX-512 where the CPU has it (burn's matmul runs AVX2).
        if rows > FEW_ROWS
            && let Some(y) = ops::many_rows_linear(&x, self.weight.val(), self.bias.val())
        {
            return y;
        }
        if rows > FEW_ROWS || !d_out.is_multiple_of(WEIGHT_BLOCKS) || !ops::is_cpu::<B>() {
            return linear(x, self.weight.val(), Some(self.bias.val()));
        }
        // Inference in f32 on up to 8 rows: the few-row kernel, which reads the weight in place
        // and computes every row alone, so a decode step of up to 8 rows gives each row the same
        // bits in any batch (continuous batching's promise). From 9 rows its inputs leave the
        // cache and the blocked matmul below is faster, at the price of a rounding that depends
        // on the row count.
        if rows <= KERNEL_ROWS
            && let Some(y) = ops::few_rows_linear(&x, self.weight.val(), self.bias.val())
        {
            return y;
        }
        // Under autodiff (or in half precision): on the CPU backend `x·W` with few rows runs on one thread at about half the memory
        // bandwidth (the matmul library parallelises neither one row nor a few), and decoding
        // is all such products. `W_out_in·xᵀ`, the weight's rows cut into blocks that burn's CPU
        // matmul runs as a parallel batch, reads the weight at full bandwidth: 1.8× faster for
        // one row of phi-1.5's MLP on 2 cores, 2× for 2..32 rows (`examples/linear_bench.rs`).
        let y = self
            .weight_out_in()
            .reshape([WEIGHT_BLOCKS, d_out / WEIGHT_BLOCKS, d_in])
            .matmul(x.transpose().unsqueeze::<3>())
            .reshape([d_out, rows])
            .transpose();
        y + self.bias.val().unsqueeze()
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

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::Flex;

    #[test]
    fn every_path_equals_the_plain_product() {
        let device = Default::default();
        for (d_in, d_out) in [(24, 64), (24, 30)] {
            let values: Vec<f32> = (0..d_in * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
            let bias = Tensor::<B, 1>::random([d_out], Distribution::Default, &device);
            let layer = PhiLinear::from_hf(values.clone(), [d_out, d_in], bias.clone(), &device);
            let w_in_out =
                Tensor::<B, 2>::from_data(TensorData::new(values, [d_out, d_in]), &device)
                    .transpose();
            for rows in [1, 3, FEW_ROWS, FEW_ROWS + 1] {
                let x = Tensor::<B, 2>::random([rows, d_in], Distribution::Default, &device);
                let ours: Vec<f32> = layer.forward_2d(x.clone()).into_data().to_vec().unwrap();
                let plain: Vec<f32> = (x.matmul(w_in_out.clone()) + bias.clone().unsqueeze())
                    .into_data()
                    .to_vec()
                    .unwrap();
                let d = ours
                    .iter()
                    .zip(&plain)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(d < 1e-5, "{rows} rows, {d_in}→{d_out}: {d}");
            }
        }
    }

    /// A prompt's product (more than `FEW_ROWS` rows) over an f16 or bf16 weight is the f32
    /// layer's over the converted weight, bit for bit; over `Q8_0` and `Q4_0` it is close to it
    /// (integers over quantized inputs); a row gives the same bits alone in a prompt-sized call.
    #[test]
    fn prompt_products_over_packed_weights() {
        let device = Default::default();
        let (d_in, d_out, rows) = (64, 45, FEW_ROWS + 9);
        let values: Vec<f32> = (0..d_in * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
        let bias = Tensor::<B, 1>::random([d_out], Distribution::Default, &device);
        let x = Tensor::<B, 2>::random([rows, d_in], Distribution::Default, &device);
        let twice = Tensor::cat(vec![x.clone(), x.clone()], 0);
        for format in WeightFormat::ALL {
            let packed = PhiLinear::<B>::packed_from_hf(
                &values,
                [d_out, d_in],
                format,
                bias.clone(),
                &device,
            )
            .unwrap();
            let converted = packed.clone().into_format(WeightFormat::F32).unwrap();
            let ours: Vec<f32> = packed.forward_2d(x.clone()).into_data().to_vec().unwrap();
            let f32_layer: Vec<f32> = converted
                .forward_2d(x.clone())
                .into_data()
                .to_vec()
                .unwrap();
            if matches!(format, WeightFormat::Q8_0 | WeightFormat::Q4_0) {
                let d = ours
                    .iter()
                    .zip(&f32_layer)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(d < 1e-3, "{format}: {d}");
            } else {
                assert_eq!(ours, f32_layer, "{format}");
            }
            // Each row of a doubled prompt gives what it gave in the prompt.
            let doubled: Vec<f32> = packed
                .forward_2d(twice.clone())
                .into_data()
                .to_vec()
                .unwrap();
            assert_eq!(doubled[..rows * d_out], ours[..], "{format}: first copy");
            assert_eq!(doubled[rows * d_out..], ours[..], "{format}: second copy");
        }
    }
}
