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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phi_zoo::backend::BackendJob;
use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::eval::choice::{ChoiceSummary, encode_items, score_items};
use phi_zoo::eval::code::{
    CodeProblem, CodeSettings, HUMANEVAL_STOPS, MBPP_STOPS, check_completions,
    generate_completions, humaneval, pass_at, read_mbpp,
};
use phi_zoo::eval::perplexity::perplexity;
use phi_zoo::eval::sandbox::Sandbox;
use phi_zoo::eval::tasks::ChoiceTask;
use phi_zoo::{Checkpoint, GenerationConfig, Phi, PhiTokenizer, Sampling, Variant};
use serde_json::{Value, json};

/// The embedded multiple-choice sample (assets/eval/SOURCE.md).
const CHOICE_SAMPLE: &str = include_str!("../assets/eval/choice_sample.jsonl");

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
    /// Evaluate only the first N items of each task.
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
    out: Option<PathBuf>,
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

/// A task and its data.
#[derive(Clone)]
enum Task {
    Perplexity(Option<PathBuf>),
    Choice(Option<PathBuf>),
    HumanEval,
    Mbpp(PathBuf),
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
            Some(checkpoint) => checkpoint.load(&device)?,
            None => {
                B::seed(&device, args.seed);
                Phi::new(&Variant::Tiny.config(), &device)
            }
        };
        let mut summary = BTreeMap::new();
        for task in tasks {
            let started = Instant::now();
            let (name, mut figures, items) = match task {
                Task::Perplexity(data) => perplexity_task(&args, &phi, &tokenizer, data, &device)?,
                Task::Choice(data) => choice_task(&args, &phi, &tokenizer, data, &device)?,
                Task::HumanEval => {
                    let problems = humaneval().map_err(anyhow::Error::msg)?;
                    code_task(
                        &args,
                        "humaneval",
                        &phi,
                        &tokenizer,
                        problems,
                        &HUMANEVAL_STOPS,
                        &device,
                    )?
                }
                Task::Mbpp(path) => {
                    let problems = read_mbpp(&path).map_err(anyhow::Error::msg)?;
                    code_task(
                        &args,
                        "mbpp",
                        &phi,
                        &tokenizer,
                        problems,
                        &MBPP_STOPS,
                        &device,
                    )?
                }
            };
            figures["seconds"] = json!(started.elapsed().as_secs_f64());
            if let Some(out) = &args.out {
                write_jsonl(&out.join(format!("{name}.jsonl")), &items)?;
            }
            if !args.json {
                eprintln!("{name}: {figures}");
            }
            summary.insert(name, figures);
        }
        let summary = json!({
            "model": args.model.model,
            "tasks": summary,
        });
        if let Some(out) = &args.out {
            write_jsonl(&out.join("summary.json"), std::slice::from_ref(&summary))?;
        }
        Ok(summary)
    }
}

/// A bar on a terminal (hidden otherwise) over `total` items.
fn bar(name: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {pos}/{len} [{wide_bar}] {per_sec} · ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    bar
}

type TaskOutput = (String, Value, Vec<Value>);

fn perplexity_task<B: Backend>(
    args: &Args,
    phi: &Phi<B>,
    tokenizer: &PhiTokenizer,
    data: Option<PathBuf>,
    device: &B::Device,
) -> Result<TaskOutput> {
    let (mut ids, bytes, source) = match &data {
        Some(path) => {
            let (ids, bytes) = phi_zoo::eval::corpus_tokens(path, "text", tokenizer)?;
            (ids, bytes, path.display().to_string())
        }
        None => {
            // What pretraining validated on: the last documents of each corpus of its mixture.
            let eos = tokenizer.eos_id().context("no <|endoftext|>")?;
            let (mut ids, mut bytes) = (vec![], 0u64);
            for corpus in [EmbeddedCorpus::Code, EmbeddedCorpus::Synthetic] {
                for text in corpus.held_out_texts(phi_zoo::datasets::corpora::HELD_OUT_DOCUMENTS)? {
                    if !ids.is_empty() {
                        ids.push(eos);
                    }
                    bytes += text.len() as u64;
                    ids.extend(tokenizer.encode(&text)?);
                }
            }
            (
                ids,
                bytes,
                "the embedded corpora's held-out documents".into(),
            )
        }
    };
    if let Some(limit) = args.limit {
        ids.truncate(limit);
    }
    let context = args.context.unwrap_or(phi.config().max_position_embeddings);
    let stride = args.stride.unwrap_or(context / 2).max(1);
    let progress = bar("perplexity", 0);
    let report = perplexity(
        phi,
        &ids,
        context,
        stride,
        args.batch,
        (args.limit.is_none()).then_some(bytes),
        device,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )?;
    progress.finish_and_clear();
    let figures = json!({
        "perplexity": report.perplexity,
        "mean_nll": report.mean_nll,
        "bits_per_byte": report.bits_per_byte,
        "tokens": report.tokens,
        "context": context,
        "stride": stride,
        "data": source,
    });
    Ok((
        "perplexity".into(),
        figures,
        vec![serde_json::to_value(&report)?],
    ))
}

fn choice_task<B: Backend>(
    args: &Args,
    phi: &Phi<B>,
    tokenizer: &PhiTokenizer,
    data: Option<PathBuf>,
    device: &B::Device,
) -> Result<TaskOutput> {
    let mut items = match &data {
        Some(path) => args
            .format
            .read(path, args.shots)
            .map_err(anyhow::Error::msg)?,
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("choice_sample.jsonl");
            std::fs::write(&path, CHOICE_SAMPLE)?;
            ChoiceTask::Jsonl
                .read(&path, 0)
                .map_err(anyhow::Error::msg)?
        }
    };
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    let encoded = encode_items(tokenizer, &items)?;
    let progress = bar("multiple choice", items.len());
    let share = !args.no_prefix_sharing;
    let (scores, counts) = score_items(phi, &encoded, share, device, |done, _| {
        progress.set_position(done as u64)
    })?;
    progress.finish_and_clear();
    let summary = ChoiceSummary::of(&scores);
    let name = match data {
        Some(_) => args.format.name().to_string(),
        None => "mc".into(),
    };
    let figures = json!({
        "acc": summary.acc,
        "acc_stderr": summary.acc_stderr,
        "acc_norm": summary.acc_norm,
        "acc_norm_stderr": summary.acc_norm_stderr,
        "items": summary.items,
        "tokens_computed": counts.computed,
        "tokens_naive": counts.naive,
        "prefix_sharing": share,
    });
    let rows = scores
        .iter()
        .map(serde_json::to_value)
        .collect::<serde_json::Result<_>>()?;
    Ok((name, figures, rows))
}

fn code_task<B: Backend>(
    args: &Args,
    name: &str,
    phi: &Phi<B>,
    tokenizer: &PhiTokenizer,
    mut problems: Vec<CodeProblem>,
    stops: &[&str],
    device: &B::Device,
) -> Result<TaskOutput> {
    if let Some(limit) = args.limit {
        problems.truncate(limit);
    }
    let settings = CodeSettings {
        samples: args.samples.max(1),
        generation: GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling: (args.temperature > 0.0).then_some(Sampling {
                temperature: args.temperature,
                top_k: None,
                top_p: Some(args.top_p),
                min_p: None,
            }),
            seed: args.seed,
            ..GenerationConfig::for_model(phi.config(), Some(tokenizer))
        },
        stops: stops.iter().map(|s| s.to_string()).collect(),
        batch: args.batch,
    };
    let progress = bar(
        &format!("{name}: generating"),
        problems.len() * settings.samples,
    );
    let started = Instant::now();
    let completions =
        generate_completions(phi, tokenizer, &problems, &settings, device, |done, _| {
            progress.set_position(done as u64)
        })?;
    let generation_s = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let sandbox = Sandbox::new().map_err(anyhow::Error::msg)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let results = check_completions(&sandbox, &problems, &completions, threads);
    let execution_s = started.elapsed().as_secs_f64();
    let mut figures = json!({
        "problems": problems.len(),
        "samples": settings.samples,
        "generation_s": generation_s,
        "execution_s": execution_s,
        "isolation": sandbox.isolation(),
    });
    for (k, value) in pass_at(&results, &args.k) {
        figures[format!("pass@{k}")] = json!(value);
    }
    let rows = results
        .iter()
        .map(serde_json::to_value)
        .collect::<serde_json::Result<_>>()?;
    Ok((name.into(), figures, rows))
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

/// The tasks and their data from `--task` and `--data`.
fn tasks(args: &Args) -> Result<Vec<Task>> {
    let names: Vec<String> = if args.task.is_empty() {
        vec!["perplexity".into(), "mc".into(), "humaneval".into()]
    } else {
        args.task.clone()
    };
    let takes_data = |n: &str| matches!(n, "perplexity" | "mc" | "mbpp");
    let mut data: BTreeMap<String, PathBuf> = BTreeMap::new();
    for spec in &args.data {
        match spec.split_once('=') {
            Some((task, path)) if takes_data(task) => {
                data.insert(task.into(), path.into());
            }
            _ => {
                let data_tasks: Vec<&String> = names.iter().filter(|n| takes_data(n)).collect();
                let [task] = data_tasks[..] else {
                    bail!("--data {spec}: give it as task=PATH (tasks with data: {data_tasks:?})");
                };
                data.insert(task.clone(), spec.into());
            }
        }
    }
    names
        .iter()
        .map(|name| {
            Ok(match name.as_str() {
                "perplexity" => Task::Perplexity(data.get(name).cloned()),
                "mc" => Task::Choice(data.get(name).cloned()),
                "humaneval" => Task::HumanEval,
                "mbpp" => Task::Mbpp(
                    data.get(name)
                        .cloned()
                        .context("mbpp needs --data: the MBPP JSONL (it is not shipped)")?,
                ),
                other => bail!("unknown task {other:?}: perplexity, mc, humaneval, mbpp"),
            })
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tasks = tasks(&args)?;
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
