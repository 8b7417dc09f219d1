//! What does the model say here? Prints the logits of every position as one JSON object.
//!
//! cargo run --release --example logits -- --model <DIR> --ids "1,2,3;4,5,6"
//!
//! `--model` is a folder with config.json and weights in any supported layout, format and config
//! dialect (or a hub id with `--features hub`). Commas separate ids within a row, `;` separates
//! rows of equal length. stdout gets exactly `{"logits": [[[f32; vocab]; seq]; batch]}`; logs go
//! to stderr.
//!
//! `--backend flex|wgpu|cuda` (the GPU ones need `--features wgpu` / `cuda`) and
//! `--dtype f32|f16|bf16` pick where and in what float type the model runs; logits are f32 always.

use std::io::Write;

mod cli;

use anyhow::{Context, Result};
use burn::prelude::Backend;
use clap::Parser;
use phi_zoo::Checkpoint;
use phi_zoo::backend::BackendJob;

#[derive(Parser)]
#[command(about = "Print a Phi model's logits for given token ids as JSON")]
struct Args {
    /// Token ids: commas within a row, `;` between rows, e.g. "1,2,3;4,5,6".
    #[arg(long)]
    ids: String,
    #[command(flatten)]
    model: cli::ModelArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
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

/// Loads the model on the chosen backend and returns `[batch][seq][vocab]` logits.
struct Logits<'a> {
    checkpoint: &'a Checkpoint,
    rows: &'a [Vec<u32>],
    weights: phi_zoo::WeightFormat,
}

impl BackendJob for Logits<'_> {
    type Output = Result<Vec<Vec<Vec<f32>>>>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let model = self.checkpoint.load_as::<B>(&device, self.weights)?;
        let logits = model.forward_ids(self.rows, &device)?;
        let [_, seq, vocab] = logits.dims();
        let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
        Ok(values
            .chunks(seq * vocab)
            .map(|row| row.chunks(vocab).map(<[f32]>::to_vec).collect())
            .collect())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rows = parse_ids(&args.ids)?;
    let checkpoint = args.model.open()?;
    eprintln!(
        "loaded {} ({} layout, {} files) on {:?} in {:?}",
        args.model.model,
        checkpoint.layout().name(),
        checkpoint.files().len(),
        args.device.backend,
        args.device.weights_for(&checkpoint)
    );
    let logits = args.device.run(Logits {
        checkpoint: &checkpoint,
        rows: &rows,
        weights: args.device.weights_for(&checkpoint),
    })??;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &serde_json::json!({ "logits": logits }))?;
    writeln!(out)?;
    Ok(())
}
