//! Converts a checkpoint phi-zoo loads into llama.cpp's GGUF (`phi2`) or Hugging Face safetensors.
//!
//! cargo run --release --example convert -- --model <SRC> --out phi-2.q8_0.gguf --dtype q8_0
//! cargo run --release --example convert -- --model phi-2.Q4_0.gguf --out phi-2-hf --dtype f16
//!
//! `--model` is anything the other examples take: a model folder in any supported layout and
//! format, a GGUF file, a variant name or hub id (with `--features hub`). An `--out` ending in
//! `.gguf` gets a GGUF file with the matrices in `--dtype` (f32, f16, bf16, q8_0 or q4_0; norms
//! and biases f32) and the tokenizer, which llama.cpp runs; any other `--out` is a folder with
//! `model.safetensors` and `config.json` in `--dtype` f32, f16 or bf16 that transformers loads.
//! Quantizing loads each layer and packs it as it is read; a layer already stored in the
//! requested type (a GGUF tensor) is copied as it is. Both outputs are written under temporary
//! names and renamed when complete.

mod cli;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use phi_zoo::backend::Cpu;
use phi_zoo::{Phi, StoredDType, WeightFormat, save_gguf, save_hf};

#[derive(Parser)]
#[command(about = "Convert a Phi checkpoint to GGUF or Hugging Face safetensors")]
struct Args {
    #[command(flatten)]
    model: cli::ModelArgs,
    /// The output: a `.gguf` file, or a folder for safetensors.
    #[arg(long)]
    out: PathBuf,
    /// The weights' type in the output: f32, f16, bf16, q8_0 or q4_0 (GGUF only).
    #[arg(long, default_value = "f32")]
    dtype: WeightFormat,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let checkpoint = args.model.open()?;
    let gguf = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let stored = match (gguf, args.dtype) {
        (true, _) => None,
        (false, WeightFormat::F32) => Some(StoredDType::F32),
        (false, WeightFormat::F16) => Some(StoredDType::F16),
        (false, WeightFormat::Bf16) => Some(StoredDType::BF16),
        (false, format) => bail!(
            "{format} is a GGUF type: give an --out ending in .gguf, or f32, f16 or bf16 for \
             safetensors"
        ),
    };
    let started = std::time::Instant::now();
    let device = Default::default();
    let model: Phi<Cpu> = match stored {
        None => checkpoint.load_as(&device, args.dtype)?,
        Some(_) => checkpoint.load(&device)?,
    };
    match stored {
        None => {
            let tokenizer = args.model.tokenizer(&checkpoint)?;
            if tokenizer.is_none() {
                eprintln!(
                    "no tokenizer for this model: the GGUF file has none (llama.cpp needs one)"
                );
            }
            save_gguf(&model, &args.out, args.dtype, tokenizer.as_ref())?;
        }
        Some(dtype) => save_hf(&model, &args.out, dtype)?,
    }
    eprintln!(
        "wrote {} ({}) in {:.1} s",
        args.out.display(),
        args.dtype,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
