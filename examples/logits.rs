//! What does the model say here? Prints the logits of every position as one JSON object.
//!
//! cargo run --release --example logits -- --model <DIR> --ids "1,2,3;4,5,6"
//!
//! `--model` is a folder with config.json and weights in any supported layout, format and config
//! dialect (or a hub id with `--features hub`). Commas separate ids within a row, `;` separates
//! rows of equal length. stdout gets exactly `{"logits": [[[f32; vocab]; seq]; batch]}`; logs go
//! to stderr.
//!
//! `--backend cpu|wgpu|cuda` (the GPU ones need `--features wgpu` / `cuda`) and
//! `--dtype f32|f16|bf16` pick where and in what float type the model runs; logits are f32 always.

use std::io::Write;

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use clap::{Parser, ValueEnum};
use phi_zoo::Checkpoint;
use phi_zoo::backend::Cpu;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendName {
    Cpu,
    Wgpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FloatType {
    F32,
    F16,
    Bf16,
}

#[derive(Parser)]
#[command(about = "Print a Phi model's logits for given token ids as JSON")]
struct Args {
    /// Model folder (config.json + weights), a weights file, or a hub id (with `hub`).
    #[arg(long)]
    model: String,
    /// Hub revision (branch, tag or commit) when --model is a hub id.
    #[arg(long)]
    revision: Option<String>,
    /// Token ids: commas within a row, `;` between rows, e.g. "1,2,3;4,5,6".
    #[arg(long)]
    ids: String,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendName,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: FloatType,
}

fn parse_ids(text: &str) -> Result<Vec<Vec<u32>>> {
    text.split(';')
        .enumerate()
        .map(|(r, row)| {
            row.split(',')
                .map(|id| {
                    id.trim()
                        .parse::<u32>()
                        .with_context(|| format!("row {r}: {:?} is not a token id", id.trim()))
                })
                .collect()
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rows = parse_ids(&args.ids)?;
    let checkpoint = Checkpoint::open_source(&args.model, args.revision.as_deref())?;
    eprintln!(
        "loaded {} ({} layout, {} files) on {:?} in {:?}",
        args.model,
        checkpoint.layout().name(),
        checkpoint.files().len(),
        args.backend,
        args.dtype
    );
    let logits = match (args.backend, args.dtype) {
        (BackendName::Cpu, dtype) => {
            let device = Default::default();
            let float = match dtype {
                FloatType::F32 => burn::tensor::FloatDType::F32,
                FloatType::F16 => burn::tensor::FloatDType::F16,
                FloatType::Bf16 => burn::tensor::FloatDType::BF16,
            };
            // Flex computes in f16/bf16 only through the device's default dtype.
            burn::tensor::set_default_dtypes::<Cpu>(&device, float, burn::tensor::IntDType::I32)
                .map_err(|e| anyhow::anyhow!("cannot set the CPU float type: {e:?}"))?;
            logits_on::<Cpu>(&checkpoint, &rows, device)?
        }
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::F32) => {
            logits_on::<phi_zoo::backend::Cuda>(&checkpoint, &rows, Default::default())?
        }
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::F16) => {
            logits_on::<phi_zoo::backend::CudaF16>(&checkpoint, &rows, Default::default())?
        }
        #[cfg(feature = "cuda")]
        (BackendName::Cuda, FloatType::Bf16) => {
            logits_on::<phi_zoo::backend::CudaBf16>(&checkpoint, &rows, Default::default())?
        }
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::F32) => {
            logits_on::<phi_zoo::backend::Wgpu>(&checkpoint, &rows, Default::default())?
        }
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::F16) => {
            logits_on::<phi_zoo::backend::WgpuF16>(&checkpoint, &rows, Default::default())?
        }
        #[cfg(feature = "wgpu")]
        (BackendName::Wgpu, FloatType::Bf16) => {
            bail!("wgpu has no bf16 arithmetic: use f32 or f16")
        }
        #[allow(unreachable_patterns)]
        (backend, _) => {
            bail!("the {backend:?} backend is not compiled in: rebuild with --features {backend:?}")
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &serde_json::json!({ "logits": logits }))?;
    writeln!(out)?;
    Ok(())
}

/// Loads the model on backend `B` and returns `[batch][seq][vocab]` logits.
fn logits_on<B: Backend>(
    checkpoint: &Checkpoint,
    rows: &[Vec<u32>],
    device: B::Device,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let model = checkpoint.load::<B>(&device)?;
    let logits = model.forward_ids(rows, &device)?;
    let [_, seq, vocab] = logits.dims();
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    Ok(values
        .chunks(seq * vocab)
        .map(|row| row.chunks(vocab).map(<[f32]>::to_vec).collect())
        .collect())
}
