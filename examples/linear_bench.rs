//! Times Phi's linear layers on the CPU: `PhiLinear::forward_2d` (the path the model takes)
//! against the plain product `x·W + b` on the same weights, for the row counts of decoding and
//! prefill.
//!
//! `cargo run --release --example linear_bench [-- --d-in 2048 --d-out 8192 --dtype q8_0]`
//! (default: phi-1.5's fc1 in f32). With `--dtype` the layer's weight is packed in that format
//! and the plain product runs on the f32 weight it dequantizes to (what a prompt's product did
//! before the integer kernels). Figures are ratios within one run; the machine is noisy.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::linear;
use clap::Parser;
use phi_zoo::backend::Cpu;
use phi_zoo::{PhiLinear, WeightFormat};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2048)]
    d_in: usize,
    #[arg(long, default_value_t = 8192)]
    d_out: usize,
    /// Row counts to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8,32,512")]
    rows: Vec<usize>,
    /// The layer's weight format: f32, f16, bf16, q8_0, q4_0.
    #[arg(long, default_value = "f32")]
    dtype: WeightFormat,
}

/// Mean seconds per call, after one untimed call.
fn seconds(reps: usize, mut f: impl FnMut() -> Tensor<Cpu, 2>) -> f64 {
    let _ = f().into_data();
    let start = Instant::now();
    for _ in 0..reps {
        let _ = f().into_data();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let args = Args::parse();
    let device = Default::default();
    let weight = Tensor::<Cpu, 2>::random([args.d_out, args.d_in], Distribution::Default, &device);
    let bias = Tensor::<Cpu, 1>::random([args.d_out], Distribution::Default, &device);
    let layer = PhiLinear::from_out_in(weight, bias)
        .into_format(args.dtype)
        .expect("a shape of whole blocks");
    // The plain product's f32 weight: the packed one dequantized.
    let plain_layer = layer.clone().into_format(WeightFormat::F32).expect("f32");
    let weight_gb = (args.dtype.row_bytes(args.d_in) * args.d_out) as f64 / 1e9;
    println!(
        "{:>6} {:>12} {:>12} {:>8} {:>14}",
        "rows", "plain ms", "phi-zoo ms", "speedup", "phi-zoo GB/s"
    );
    for &rows in &args.rows {
        let x = Tensor::<Cpu, 2>::random([rows, args.d_in], Distribution::Default, &device);
        let reps = if rows >= 256 { 3 } else { 30 };
        let plain = seconds(reps, || {
            linear(
                x.clone(),
                plain_layer.weight.val(),
                Some(plain_layer.bias.val()),
            )
        });
        let ours = seconds(reps, || layer.forward_2d(x.clone()));
        println!(
            "{rows:>6} {:>12.2} {:>12.2} {:>7.2}x {:>14.1}",
            plain * 1e3,
            ours * 1e3,
            plain / ours,
            weight_gb / ours
        );
    }
}
