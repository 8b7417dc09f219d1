//! How good is a model? Perplexity, multiple choice by log-likelihood (lm-evaluation-harness'
//! definitions) and code generation scored by running it (HumanEval, MBPP; pass@k).
//!
//! With no flags it evaluates what `examples/pretrain` wrote (or a freshly initialised tiny model
//! when there is none) on the perplexity of the embedded corpora's held-out documents, the
//! embedded multiple-choice sample and all of HumanEval, offline.
//!
//! ```sh
//! cargo run --release --example eval
//! cargo run --release --example eval -- --model runs/pretrain/final --task humaneval --samples 10 \
//!     --temperature 0.8 --k 1,10 --out runs/eval
//! cargo run --release --features hub --example eval -- --model phi-1.5 --task mc --format hellaswag \
//!     --data hellaswag_val.jsonl --json
//! cargo run --release --example eval -- --model DIR --task perplexity --data wiki.txt --stride 512
//! cargo run --release --example eval -- --model DIR --task mbpp --data mbpp.jsonl --limit 100
//! ```
//!
//! Linux only: the code tasks run in `eval::sandbox`, which needs Linux's namespaces and rlimits.

mod cli;

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phi_zoo::backend::BackendJob;
use phi_zoo::eval::run::{EvalSettings, Task, run_task};
use phi_zoo::eval::tasks::ChoiceTask;
use phi_zoo::{Checkpoint, Phi, PhiTokenizer, Variant};
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(
    about = "Evaluate a Phi: perplexity, multiple choice, HumanEval / MBPP pass@k",
    mut_arg("model", |a| a.default_value("runs/pretrain/final").required(false)),
)]
struct Args {
    /// perplexity, mc, humaneval or mbpp (repeatable; default: perplexity, mc, humaneval).
    #[arg(long)]
    task: Vec<String>,
    /// Data of a task, as `task=PATH` or just `PATH` when one task takes data: a text, JSONL or
    /// Parquet corpus or a token store (perplexity), a benchmark file (mc, in `--format`), an MBPP
    /// JSONL (mbpp). Default: the embedded data (MBPP has none).
    #[arg(long)]
    data: Vec<String>,
    /// The multiple-choice file's format: jsonl, hellaswag, piqa, arc, winogrande, boolq,
    /// openbookqa, siqa, mmlu.
    #[arg(long, default_value = "jsonl")]
    format: ChoiceTask,
    /// Solved examples before each MMLU question.
    #[arg(long, default_value_t = 5)]
    shots: usize,
    /// Evaluate only the first N items of each task (tokens, for perplexity).
    #[arg(long)]
    limit: Option<usize>,
    /// Completions per code problem.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// pass@k for these k (comma-separated; those above --samples are left out).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    k: Vec<usize>,
    /// Sampling temperature for code; 0: greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Completions generated together; perplexity windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Perplexity window (default: the model's context).
    #[arg(long)]
    context: Option<usize>,
    /// Perplexity stride (default: half the window).
    #[arg(long)]
    stride: Option<usize>,
    /// Score every multiple-choice request alone instead of sharing each context's cache.
    #[arg(long)]
    no_prefix_sharing: bool,
    /// Per-item results as JSONL (`<task>.jsonl`) and the summary (`summary.json`) go here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Print only the summary object on stdout.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    model: cli::ModelArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

struct Eval {
    args: Args,
    tasks: Vec<Task>,
    checkpoint: Option<Checkpoint>,
    tokenizer: PhiTokenizer,
}

impl BackendJob for Eval {
    type Output = Result<Value>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Value> {
        let Eval {
            args,
            tasks,
            checkpoint,
            tokenizer,
        } = self;
        let phi: Phi<B> = match &checkpoint {
            Some(checkpoint) => checkpoint.load_as(&device, args.device.weights_for(checkpoint))?,
            None => {
                B::seed(&device, args.seed);
                Phi::new_as(&Variant::Tiny.config(), &device, args.device.weights())?
            }
        };
        let settings = EvalSettings {
            limit: args.limit,
            shots: args.shots,
            samples: args.samples,
            ks: args.k.clone(),
            temperature: args.temperature,
            top_p: args.top_p,
            max_new_tokens: args.max_new_tokens,
            batch: args.batch,
            context: args.context,
            stride: args.stride,
            share_prefix: !args.no_prefix_sharing,
            seed: args.seed,
        };
        // A bar on a terminal (indicatif draws nothing elsewhere).
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg} {pos}/{len} [{wide_bar}] {per_sec} · ETA {eta}")?
                .progress_chars("=> "),
        );
        let mut summary = serde_json::Map::new();
        for task in &tasks {
            let result = run_task(
                &phi,
                &tokenizer,
                task,
                &settings,
                &device,
                &mut |stage, done, total| {
                    bar.set_message(stage.to_string());
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            if let Some(out) = &args.out {
                write_jsonl(&out.join(format!("{}.jsonl", result.name)), &result.items)?;
            }
            if !args.json {
                eprintln!("{}: {}", result.name, result.figures);
            }
            summary.insert(result.name, result.figures);
        }
        let summary = json!({ "model": args.model.model, "tasks": summary });
        if let Some(out) = &args.out {
            write_jsonl(&out.join("summary.json"), std::slice::from_ref(&summary))?;
        }
        Ok(summary)
    }
}

/// Writes `rows` as JSON lines to `path`, through a temporary name.
fn write_jsonl(path: &Path, rows: &[Value]) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        writeln!(out)?;
    }
    out.into_inner()?.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tasks = Task::parse_all(&args.task, &args.data, args.format).map_err(anyhow::Error::msg)?;
    let default_model = args.model.model == "runs/pretrain/final";
    let (checkpoint, tokenizer) = if default_model && !Path::new(&args.model.model).exists() {
        eprintln!(
            "no model at runs/pretrain/final (run examples/pretrain first): evaluating a freshly \
             initialised tiny model"
        );
        (None, PhiTokenizer::bundled())
    } else {
        let checkpoint = args.model.open()?;
        let tokenizer = args.model.text_tokenizer(&checkpoint)?;
        (Some(checkpoint), tokenizer)
    };
    let device = args.device;
    let json = args.json;
    let summary = device.run(Eval {
        args,
        tasks,
        checkpoint,
        tokenizer,
    })??;
    if json {
        println!("{summary}");
    } else {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}
