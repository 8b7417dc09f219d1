//! Synthetic textbooks, as phi-1.5 made them: prompts built from a topic × an audience × a style,
//! sent to a language model behind an OpenAI-compatible endpoint, the outputs kept when long
//! enough. Styles are textbook sub-units (after the seed prompt shape: a course unit on a topic
//! for an audience, the chapter and sub-unit being written, and a closing sentence for that
//! audience) and exercises (a function's signature and docstring, then its body: phi-1's
//! CodeExercises). Web extracts, when given, are added to prompts for diversity, one per
//! prompt. Templates are files ([`SynthesisTemplates`]), topics are the embedded seed list and
//! a user's file.
//!
//! The plan of prompts is a fixed order, so `--shard i/N` takes every N-th prompt; every
//! generation is a [`Journal`] record keyed by its prompt's hash (prompt, model, settings), so a
//! rerun generates only what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::atomic_file::{AtomicFile, write_json};
use crate::endpoint::{Endpoint, choice_text};
use crate::error::{DataError, Result};
use crate::journal::Journal;
use crate::pool::run_pool;
use crate::prepare::hex;
use crate::progress::Progress;
use crate::shard::Shard;
use crate::template_file::TemplateFile;
use crate::text_norm::first_chars;

/// The shipped templates (`assets/templates/synthesize-v1.json`).
pub const DEFAULT_TEMPLATES: &str = include_str!("../assets/templates/synthesize-v1.json");

/// The embedded seed topics (`assets/topics.txt`).
pub const SEED_TOPICS: &str = include_str!("../assets/topics.txt");

/// The longest web extract put in a prompt, in characters.
pub const MAX_EXTRACT_CHARS: usize = 1000;

/// The audiences of the seed prompts, in plan order.
pub const AUDIENCES: [&str; 4] = [
    "young children",
    "high school students",
    "college students",
    "professionals and researchers",
];

/// What kind of text a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// A textbook sub-unit.
    Textbook,
    /// A function exercise with docstring and solution.
    Exercises,
}

/// Prompt templates: `{topic}`, `{audience}`, `{chapter}`, `{subunit}`, `{extract}` and
/// `{closing}` are filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesisTemplates {
    /// Recorded with every sample.
    pub version: String,
    /// What the templates are, for people.
    #[serde(default)]
    pub about: String,
    /// The chapter title (`{topic}` filled in).
    pub chapter: String,
    /// Sub-unit titles of the chapter; one textbook prompt each.
    pub subunits: Vec<String>,
    /// The textbook prompt.
    pub textbook: String,
    /// The exercise prompt.
    pub exercises: String,
    /// The paragraph that carries a web extract (`{extract}`), or nothing without one.
    pub extract: String,
    /// The closing sentence for each audience.
    pub closings: BTreeMap<String, String>,
}

impl TemplateFile for SynthesisTemplates {
    fn checked(self, origin: &str) -> Result<Self> {
        let fail = |what: String| Err(DataError::Invalid(format!("{origin}: {what}")));
        for audience in AUDIENCES {
            if !self.closings.contains_key(audience) {
                return fail(format!("no closing for the audience {audience:?}"));
            }
        }
        if self.subunits.is_empty() {
            return fail("no sub-units".into());
        }
        for (name, prompt) in [("textbook", &self.textbook), ("exercises", &self.exercises)] {
            if !prompt.contains("{topic}") {
                return fail(format!("the {name} prompt has no {{topic}}"));
            }
        }
        Ok(self)
    }
}

impl SynthesisTemplates {
    /// The shipped templates.
    pub fn default_templates() -> Self {
        Self::parse_json(DEFAULT_TEMPLATES, "the default templates")
            .expect("shipped templates parse")
    }

    /// Reads a templates file (JSON with this struct's fields).
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_json(path)
    }
}

/// Topics from text: one per line, blank lines and `#` comments skipped.
pub fn parse_topics(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// One planned prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPrompt {
    /// Its place in the plan.
    pub index: u64,
    /// The topic.
    pub topic: String,
    /// The audience.
    pub audience: String,
    /// The style.
    pub style: Style,
    /// The sub-unit, for textbook prompts.
    pub subunit: Option<String>,
    /// The prompt text.
    pub prompt: String,
}

/// Builds the plan: every topic × audience × (each sub-unit as a textbook prompt, and an
/// exercise when `exercises`); with `extracts`, prompt `i` carries extract `i mod len`, cut to
/// [`MAX_EXTRACT_CHARS`].
pub fn plan(
    templates: &SynthesisTemplates,
    topics: &[String],
    styles: &[Style],
    extracts: &[String],
) -> Vec<PlannedPrompt> {
    let mut plan = Vec::new();
    for topic in topics {
        for audience in AUDIENCES {
            for &style in styles {
                let subunits: Vec<Option<&String>> = match style {
                    Style::Textbook => templates.subunits.iter().map(Some).collect(),
                    Style::Exercises => vec![None],
                };
                for subunit in subunits {
                    let index = plan.len() as u64;
                    let extract = if extracts.is_empty() {
                        String::new()
                    } else {
                        let text = &extracts[index as usize % extracts.len()];
                        templates
                            .extract
                            .replace("{extract}", first_chars(text, MAX_EXTRACT_CHARS))
                    };
                    let chapter = templates.chapter.replace("{topic}", topic);
                    let body = match style {
                        Style::Textbook => &templates.textbook,
                        Style::Exercises => &templates.exercises,
                    };
                    let subunit = subunit.map(|s| s.replace("{topic}", topic));
                    let prompt = body
                        .replace("{extract}", &extract)
                        .replace("{chapter}", &chapter)
                        .replace("{subunit}", subunit.as_deref().unwrap_or(""))
                        .replace("{audience}", audience)
                        .replace("{closing}", &templates.closings[audience])
                        .replace("{topic}", topic);
                    plan.push(PlannedPrompt {
                        index,
                        topic: topic.clone(),
                        audience: audience.to_string(),
                        style,
                        subunit,
                        prompt,
                    });
                }
            }
        }
    }
    plan
}

/// Sampling settings, recorded with every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingSettings {
    /// Softmax temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Tokens generated at most.
    pub max_tokens: usize,
    /// The seed of prompt 0; prompt `i` uses `seed + i`.
    pub seed: u64,
}

impl Default for SamplingSettings {
    /// Temperature 0.7, top-p 0.95, 1,024 tokens, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.95,
            max_tokens: 1024,
            seed: 0,
        }
    }
}

/// Settings of a synthesis run.
#[derive(Debug, Clone)]
pub struct SynthesizeOptions {
    /// Sampling.
    pub sampling: SamplingSettings,
    /// Outputs shorter than this many tokens (the server's count) are dropped.
    pub min_tokens: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// This run's part of the plan.
    pub shard: Shard,
    /// The templates' version, recorded with each sample.
    pub template_version: String,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

impl SynthesizeOptions {
    /// Defaults: [`SamplingSettings::default`], outputs of 150 tokens or more (the length
    /// phi-1.5's pipeline kept), 8 requests at once.
    pub fn new(template_version: impl Into<String>) -> Self {
        Self {
            sampling: SamplingSettings::default(),
            min_tokens: 150,
            concurrency: 8,
            shard: Shard::WHOLE,
            template_version: template_version.into(),
            progress: false,
        }
    }
}

/// What a synthesis run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SynthesizeReport {
    /// The journal of every generation.
    pub samples_path: PathBuf,
    /// The kept texts (JSONL: `text`, `topic`, `audience`, `style`), rewritten at the end.
    pub kept_path: PathBuf,
    /// Prompts in this shard.
    pub prompts: u64,
    /// Generated by this run.
    pub requested: u64,
    /// Generated by an earlier run.
    pub skipped: u64,
    /// Kept, over the whole journal.
    pub kept: u64,
    /// Dropped as shorter than `min_tokens`, over the whole journal.
    pub dropped_short: u64,
    /// Requests per second of this run.
    pub requests_per_second: f64,
    /// Seconds this run took.
    pub seconds: f64,
}

/// The SHA-256 (first 32 hex digits) of what determines a generation.
pub fn prompt_hash(prompt: &str, model: &str, sampling: &SamplingSettings, index: u64) -> String {
    let mut hasher = Sha256::new();
    for part in [
        prompt,
        model,
        &serde_json::to_string(sampling).unwrap_or_default(),
        &index.to_string(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex(&hasher.finalize()[..16])
}

/// Generates the prompts of `options.shard` of `plan` through `endpoint`, journaling each to
/// `out/samples-<shard>.jsonl` (`key` = prompt hash, `text`, `topic`, `audience`, `style`,
/// `subunit`, `template_version`, `prompt_hash`, `model`, `settings`, `completion_tokens`,
/// `kept`), then writes the kept ones to `out/kept-<shard>.jsonl`.
pub fn synthesize(
    plan: &[PlannedPrompt],
    endpoint: &Endpoint,
    out: &Path,
    options: &SynthesizeOptions,
) -> Result<SynthesizeReport> {
    let start = Instant::now();
    let stem = options.shard.file_stem();
    let samples_path = out.join(format!("samples-{stem}.jsonl"));
    let mut journal = Journal::open(&samples_path)?;
    let done = journal.keys();
    let mine: Vec<&PlannedPrompt> = plan
        .iter()
        .filter(|p| options.shard.contains(p.index))
        .collect();
    let mut report = SynthesizeReport {
        samples_path: samples_path.clone(),
        kept_path: out.join(format!("kept-{stem}.jsonl")),
        prompts: mine.len() as u64,
        ..Default::default()
    };
    let progress = Progress::new(options.progress, mine.len() as u64, "synthesize");
    let mut skipped = 0;
    let sampling = &options.sampling;
    let result = run_pool(
        options.concurrency,
        |queue| {
            for p in &mine {
                let hash = prompt_hash(&p.prompt, &endpoint.model, sampling, p.index);
                if done.contains(&hash) {
                    skipped += 1;
                    progress.advance();
                    continue;
                }
                queue((*p, hash))?;
            }
            Ok(())
        },
        |(p, _): &(&PlannedPrompt, String)| {
            endpoint
                .completions(&json!({
                    "prompt": p.prompt,
                    "max_tokens": sampling.max_tokens,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "seed": sampling.seed + p.index,
                }))
                .map_err(|e| e.to_string())
                .and_then(|reply| {
                    let text = choice_text(&reply, 0)?.to_string();
                    let tokens = reply["usage"]["completion_tokens"]
                        .as_u64()
                        .ok_or("the reply has no usage.completion_tokens")?;
                    Ok((text, tokens))
                })
        },
        |(p, hash), generated| {
            let (text, tokens) = generated.map_err(|message| {
                DataError::Invalid(format!(
                    "prompt {} ({}, {}, {:?}): {message}",
                    p.index, p.topic, p.audience, p.style
                ))
            })?;
            report.requested += 1;
            journal.append(&json!({
                "key": hash,
                "text": text,
                "topic": p.topic,
                "audience": p.audience,
                "style": p.style,
                "subunit": p.subunit,
                "template_version": options.template_version,
                "prompt_hash": hash,
                "model": endpoint.model,
                "settings": sampling,
                "completion_tokens": tokens,
                "kept": tokens as usize >= options.min_tokens,
            }))?;
            progress.advance();
            Ok(())
        },
    );
    journal.sync()?;
    progress.finish();
    result?;
    report.skipped = skipped;
    let kept_path = report.kept_path.clone();
    write_kept(&samples_path, &kept_path, &mut report)?;
    report.seconds = start.elapsed().as_secs_f64();
    report.requests_per_second = report.requested as f64 / report.seconds.max(1e-9);
    write_json(out.join(format!("synthesize-{stem}.report.json")), &report)?;
    Ok(report)
}

/// Rewrites the kept texts from the journal.
fn write_kept(samples: &Path, kept: &Path, report: &mut SynthesizeReport) -> Result<()> {
    let text = std::fs::read_to_string(samples).map_err(|e| DataError::io(samples, e))?;
    let mut file = AtomicFile::create(kept)?;
    for (i, line) in text.lines().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| DataError::malformed(samples, i + 1, e.to_string()))?;
        if record["kept"].as_bool() == Some(true) {
            report.kept += 1;
            file.write_json_line(&json!({
                "text": record["text"],
                "topic": record["topic"],
                "audience": record["audience"],
                "style": record["style"],
            }))?;
        } else {
            report.dropped_short += 1;
        }
    }
    file.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_crosses_topics_audiences_and_styles() {
        let t = SynthesisTemplates::default_templates();
        let topics = vec!["recursion".to_string(), "binary search".to_string()];
        let extracts = vec!["x".repeat(3000)];
        let plan = plan(&t, &topics, &[Style::Textbook, Style::Exercises], &extracts);
        assert_eq!(plan.len(), 2 * 4 * (t.subunits.len() + 1));
        let first = &plan[0];
        assert!(first.prompt.starts_with(
            "Write a long and very detailed course unit for a textbook on \"recursion\" \
             intended for young children."
        ));
        assert!(
            first
                .prompt
                .contains("sub-unit titled \"1.1. What recursion is\"")
        );
        assert!(first.prompt.ends_with(&t.closings["young children"]));
        assert!(first.prompt.contains(&"x".repeat(MAX_EXTRACT_CHARS)));
        assert!(!first.prompt.contains(&"x".repeat(MAX_EXTRACT_CHARS + 1)));
        assert!(plan.iter().any(|p| p.style == Style::Exercises
            && p.audience == "college students"
            && p.prompt.contains("docstring")));
        assert!(parse_topics(SEED_TOPICS).len() >= 100);
    }

    #[test]
    fn templates_missing_an_audience_are_refused() {
        let bad = DEFAULT_TEMPLATES.replace("\"young children\":", "\"children\":");
        let error = SynthesisTemplates::parse_json(&bad, "s.json")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("s.json") && error.contains("young children"),
            "{error}"
        );
    }
}
