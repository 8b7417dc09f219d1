//! What does the model say here? Prints the logits of every position as one JSON object.
//!
//! cargo run --release --example logits -- --model <DIR> --ids "1,2,3;4,5,6"
//!
//! `--model` is a folder with config.json and weights in any supported layout, format and config
//! dialect (or a hub id with `--features hub`). Commas separate ids within a row, `;` separates
//! rows of equal length. stdout gets exactly `{"logits": [[[f32; vocab]; seq]; batch]}`; logs go
//! to stderr.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use phi_zoo::{Checkpoint, backend::Cpu};

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
    let device = Default::default();
    let checkpoint = Checkpoint::open_source(&args.model, args.revision.as_deref())?;
    eprintln!(
        "loaded {} ({} layout, {} files)",
        args.model,
        checkpoint.layout().name(),
        checkpoint.files().len()
    );
    let model = checkpoint.load::<Cpu>(&device)?;
    let logits = model.forward_ids(&rows, &device)?;
    let [batch, seq, vocab] = logits.dims();
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    let nested: Vec<Vec<&[f32]>> = values
        .chunks(seq * vocab)
        .map(|row| row.chunks(vocab).collect())
        .collect();
    debug_assert_eq!(nested.len(), batch);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &serde_json::json!({ "logits": nested }))?;
    writeln!(out)?;
    Ok(())
}
