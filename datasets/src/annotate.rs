//! Annotation: each document is shown to a language model behind an OpenAI-compatible endpoint
//! with a versioned prompt template (by default phi-1's question, "educational value for a
//! student whose goal is to learn basic coding concepts", with an additive 0–5 rubric), and its
//! score recorded. Two ways to read the score:
//! - [`ScoreMode::Generate`]: the model writes its reasons and a last line
//!   `Educational score: N`, which is parsed;
//! - [`ScoreMode::Logprobs`]: the prompt ends with `Educational score:` and the score is the
//!   expectation of the digit token's distribution, read from the top log-probabilities of the
//!   next token; when no digit is among them (small models), from the log-probability of each
//!   candidate digit scored as an echoed prompt. It works with any model that returns
//!   log-probabilities, and gives a graded score rather than a rounded one.
//!
//! The output is a [`Journal`] keyed by the document's hash and the template's version: a rerun
//! after a kill asks only for what is missing, and a document repeated in the corpus is asked
//! once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::atomic_file::write_json;
use crate::endpoint::{Endpoint, choice_text};
use crate::error::{DataError, Result};
use crate::journal::Journal;
use crate::pool::run_pool;
use crate::prepare::hex;
use crate::progress::Progress;
use crate::reader::{Corpus, OnMalformed};
use crate::shard::Shard;
use crate::template_file::TemplateFile;
use crate::text_norm::first_chars;

/// The default template, as shipped in `assets/templates/annotate-edu-v1.json`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../assets/templates/annotate-edu-v1.json");

/// A shorter wording of the default, for models with short contexts (`assets/templates/
/// annotate-edu-short-v1.json`).
pub const SHORT_TEMPLATE: &str = include_str!("../assets/templates/annotate-edu-short-v1.json");

/// Alternatives asked for per token in log-probability mode (the most phi-zoo's server gives).
const TOP_LOGPROBS: usize = 20;

/// A versioned prompt template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationTemplate {
    /// Recorded with every score; a new wording needs a new version.
    pub version: String,
    /// What the template is, for people.
    #[serde(default)]
    pub about: String,
    /// The prompt, with `{document}` where the document goes.
    pub prompt: String,
    /// The text before the score (`Educational score:`).
    pub score_prefix: String,
    /// The highest score (scores are `0..=max_score`).
    pub max_score: u32,
    /// Documents are cut to this many characters before they are shown.
    pub max_document_chars: usize,
}

impl TemplateFile for AnnotationTemplate {
    fn checked(self, origin: &str) -> Result<Self> {
        let fail = |what: &str| Err(DataError::Invalid(format!("{origin}: {what}")));
        if !self.prompt.contains("{document}") {
            return fail("the prompt has no {document} placeholder");
        }
        if self.version.trim().is_empty() {
            return fail("the version is empty");
        }
        if self.max_score == 0 || self.max_score > 100 {
            return fail("max_score must be in 1..=100");
        }
        if self.score_prefix.trim().is_empty() {
            return fail("the score prefix is empty");
        }
        if self.max_document_chars == 0 {
            return fail("max_document_chars must be at least 1");
        }
        Ok(self)
    }
}

impl AnnotationTemplate {
    /// The shipped default.
    pub fn default_template() -> Self {
        Self::parse_json(DEFAULT_TEMPLATE, "the default template")
            .expect("the shipped template parses")
    }

    /// The shipped short template, for models with short contexts.
    pub fn short_template() -> Self {
        Self::parse_json(SHORT_TEMPLATE, "the short template").expect("the shipped template parses")
    }

    /// Reads a template file (JSON with the fields of this struct).
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_json(path)
    }

    /// The prompt for `document` (cut to `max_document_chars`).
    pub fn render(&self, document: &str) -> String {
        let cut = first_chars(document, self.max_document_chars);
        self.prompt.replace("{document}", cut)
    }

    /// The score a generated reply ends with: the number after the last score prefix (case
    /// ignored), if it is in range.
    pub fn parse_score(&self, reply: &str) -> Option<u32> {
        let lower = reply.to_lowercase();
        let at = lower.rfind(&self.score_prefix.to_lowercase())?;
        let rest = reply[at + self.score_prefix.len()..].trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().filter(|s| *s <= self.max_score)
    }
}

/// How the score is read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreMode {
    /// Generate reasons and a score line; parse it.
    Generate,
    /// The expected score under the score token's distribution.
    Logprobs,
}

/// Settings of an annotation run.
#[derive(Debug, Clone)]
pub struct AnnotateOptions {
    /// The template.
    pub template: AnnotationTemplate,
    /// How scores are read.
    pub mode: ScoreMode,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Tokens generated in generate mode.
    pub max_tokens: usize,
    /// This run's part of the corpus.
    pub shard: Shard,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

impl AnnotateOptions {
    /// Defaults: the shipped template, `mode`, 8 requests at once, 256 tokens.
    pub fn new(mode: ScoreMode) -> Self {
        Self {
            template: AnnotationTemplate::default_template(),
            mode,
            concurrency: 8,
            max_tokens: 256,
            shard: Shard::WHOLE,
            progress: false,
        }
    }
}

/// What an annotation run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnnotateReport {
    /// The scores file.
    pub path: PathBuf,
    /// Documents in the shard.
    pub documents: u64,
    /// Documents scored by this run.
    pub requested: u64,
    /// Documents an earlier run (or an earlier copy in the corpus) had scored.
    pub skipped: u64,
    /// Replies without a readable score (recorded with `score: null`).
    pub unscored: u64,
    /// Requests per second of this run.
    pub requests_per_second: f64,
    /// Seconds this run took.
    pub seconds: f64,
}

/// The hex SHA-256 of a document's text (its first 32 digits): the identity annotate, embed and
/// the classifier share.
pub fn document_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex(&digest[..16])
}

/// The scores file of `shard` under `out`.
pub fn scores_path(out: &Path, shard: Shard) -> PathBuf {
    out.join(format!("scores-{}.jsonl", shard.file_stem()))
}

/// Scores the documents of `options.shard` of `corpus` through `endpoint`, appending one record
/// per document to `out/scores-<shard>.jsonl`: `key` (hash:version), `document` (hash),
/// `position`, `prompt_version`, `model`, `mode`, `score` and, by mode, `reply` or
/// `probabilities`. A malformed reply stops the run with an error naming the document; what was
/// recorded before stays.
pub fn annotate(
    corpus: &Corpus,
    endpoint: &Endpoint,
    out: &Path,
    options: &AnnotateOptions,
) -> Result<AnnotateReport> {
    let start = Instant::now();
    let path = scores_path(out, options.shard);
    let mut journal = Journal::open(&path)?;
    let mut report = AnnotateReport {
        path: path.clone(),
        ..Default::default()
    };
    let progress = Progress::over_shard(options.progress, options.shard, corpus, "annotate")?;
    let mut documents = 0u64;
    let version = options.template.version.clone();
    // Keys written before this run, and those queued by it: a document repeated in the corpus
    // is asked once.
    let mut queued = journal.keys();
    let mut skipped = 0u64;
    let scorer = Scorer {
        endpoint,
        template: &options.template,
        mode: options.mode,
        max_tokens: options.max_tokens,
    };
    let result = run_pool(
        options.concurrency,
        |queue| {
            options
                .shard
                .read(corpus, OnMalformed::Fail, &mut |position, text| {
                    documents += 1;
                    let hash = document_hash(&text);
                    let key = format!("{hash}:{version}");
                    if !queued.insert(key.clone()) {
                        skipped += 1;
                        progress.advance();
                        return Ok(());
                    }
                    queue(Job {
                        key,
                        hash,
                        position,
                        text,
                    })
                })
                .map(|_| ())
        },
        |job: &Job| scorer.score(&job.text),
        |job, scored| {
            let scored = scored.map_err(|message| {
                DataError::Invalid(format!(
                    "document {} (position {} of {}): {message}",
                    job.hash,
                    job.position,
                    corpus.path.display()
                ))
            })?;
            report.requested += 1;
            report.unscored += u64::from(scored.score.is_none());
            let mut record = json!({
                "key": job.key,
                "document": job.hash,
                "position": job.position,
                "prompt_version": version,
                "model": endpoint.model,
                "mode": options.mode,
                "score": scored.score,
            });
            for (k, v) in scored.extra {
                record[k] = v;
            }
            journal.append(&record)?;
            progress.advance();
            Ok(())
        },
    );
    journal.sync()?;
    progress.finish();
    result?;
    report.documents = documents;
    report.skipped = skipped;
    report.seconds = start.elapsed().as_secs_f64();
    report.requests_per_second = report.requested as f64 / report.seconds.max(1e-9);
    write_json(
        out.join(format!(
            "annotate-{}.report.json",
            options.shard.file_stem()
        )),
        &report,
    )?;
    Ok(report)
}

struct Job {
    key: String,
    hash: String,
    position: u64,
    text: String,
}

/// A score and what to record beside it.
struct Scored {
    score: Option<f64>,
    extra: Vec<(&'static str, Value)>,
}

struct Scorer<'a> {
    endpoint: &'a Endpoint,
    template: &'a AnnotationTemplate,
    mode: ScoreMode,
    max_tokens: usize,
}

impl Scorer<'_> {
    fn score(&self, document: &str) -> std::result::Result<Scored, String> {
        let prompt = self.template.render(document);
        match self.mode {
            ScoreMode::Generate => self.generate(&prompt),
            ScoreMode::Logprobs => {
                self.expected(&format!("{prompt}\n{}", self.template.score_prefix))
            }
        }
    }

    fn generate(&self, prompt: &str) -> std::result::Result<Scored, String> {
        let reply = self
            .endpoint
            .completions(&json!({
                "prompt": prompt,
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
            }))
            .map_err(|e| e.to_string())?;
        let text = choice_text(&reply, 0)?;
        Ok(Scored {
            score: self.template.parse_score(text).map(f64::from),
            extra: vec![("reply", Value::String(text.to_string()))],
        })
    }

    /// The expected score after `prompt` (which ends with the score prefix).
    fn expected(&self, prompt: &str) -> std::result::Result<Scored, String> {
        let reply = self
            .endpoint
            .completions(&json!({
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": TOP_LOGPROBS,
            }))
            .map_err(|e| e.to_string())?;
        let top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
            .as_object()
            .ok_or_else(|| "the reply has no choices[0].logprobs.top_logprobs[0]".to_string())?;
        let mut weights = vec![0.0f64; self.template.max_score as usize + 1];
        for (token, logprob) in top {
            let logprob = logprob
                .as_f64()
                .ok_or_else(|| format!("top_logprobs[{token:?}] is not a number"))?;
            if let Some(digit) = self.score_token(token) {
                weights[digit] += logprob.exp();
            }
        }
        let source = if weights.iter().sum::<f64>() > 0.0 {
            "top_logprobs"
        } else {
            weights = self.candidate_weights(prompt)?;
            "echo"
        };
        let total: f64 = weights.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return Ok(Scored {
                score: None,
                extra: vec![("logprobs_from", json!(source))],
            });
        }
        let probabilities: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let score = probabilities
            .iter()
            .enumerate()
            .map(|(s, p)| s as f64 * p)
            .sum();
        Ok(Scored {
            score: Some(score),
            extra: vec![
                ("probabilities", json!(probabilities)),
                ("logprobs_from", json!(source)),
            ],
        })
    }

    /// The score a token names (`" 3"`, `"3"`), if in range.
    fn score_token(&self, token: &str) -> Option<usize> {
        let t = token.trim();
        (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            .then(|| t.parse::<usize>().ok())
            .flatten()
            .filter(|s| *s <= self.template.max_score as usize)
    }

    /// The probability of each candidate score after `prompt`, from the log-probability of the
    /// prompt's last token when the candidate is appended and the whole is echoed (how
    /// lm-evaluation-harness scores choices): one request with every candidate.
    fn candidate_weights(&self, prompt: &str) -> std::result::Result<Vec<f64>, String> {
        let prompts: Vec<String> = (0..=self.template.max_score)
            .map(|s| format!("{prompt} {s}"))
            .collect();
        let reply = self
            .endpoint
            .completions(&json!({
                "prompt": prompts,
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": true,
                "logprobs": 1,
            }))
            .map_err(|e| e.to_string())?;
        let choices = reply["choices"]
            .as_array()
            .filter(|c| c.len() == prompts.len())
            .ok_or_else(|| format!("the reply does not have {} choices", prompts.len()))?;
        let mut weights = vec![0.0; prompts.len()];
        for choice in choices {
            let index = choice["index"].as_u64().unwrap_or(0) as usize;
            let candidate = prompts.get(index).ok_or("a choice index out of range")?;
            let logprob = last_prompt_token_logprob(&choice["logprobs"], candidate)?;
            weights[index] = logprob.exp();
        }
        Ok(weights)
    }
}

/// The log-probability of the token that holds the last character of `prompt`, from an echoed
/// completion's `logprobs` (`text_offset` in characters, as OpenAI's API gives them).
fn last_prompt_token_logprob(logprobs: &Value, prompt: &str) -> std::result::Result<f64, String> {
    let offsets = logprobs["text_offset"]
        .as_array()
        .ok_or("an echoed choice without logprobs.text_offset")?;
    let last_char = prompt.chars().count().saturating_sub(1) as u64;
    let index = offsets
        .iter()
        .rposition(|o| o.as_u64().is_some_and(|o| o <= last_char))
        .ok_or("no echoed token covers the prompt's end")?;
    logprobs["token_logprobs"][index]
        .as_f64()
        .ok_or_else(|| format!("logprobs.token_logprobs[{index}] is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_template_renders_and_parses_scores() {
        let t = AnnotationTemplate::default_template();
        assert!(t.render("def f(): pass").contains("def f(): pass"));
        assert_eq!(t.parse_score("Clear.\nEducational score: 4"), Some(4));
        assert_eq!(
            t.parse_score("educational SCORE:3 then Educational score: 2\n"),
            Some(2)
        );
        assert_eq!(t.parse_score("Educational score: 9"), None);
        assert_eq!(t.parse_score("no score"), None);
        let long = "é".repeat(t.max_document_chars + 10);
        assert_eq!(t.render(&long).matches('é').count(), t.max_document_chars);
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let bad = DEFAULT_TEMPLATE.replace("{document}", "{doc}");
        let error = AnnotationTemplate::parse_json(&bad, "t.json")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("t.json") && error.contains("{document}"),
            "{error}"
        );
        let error = AnnotationTemplate::parse_json("{\"version\": 1}", "t.json").unwrap_err();
        assert!(error.to_string().contains("t.json"));
    }

    #[test]
    fn the_echoed_token_at_the_prompt_end_is_found() {
        let logprobs = json!({
            "tokens": ["score", ":", " 3", " the"],
            "token_logprobs": [null, -1.0, -2.5, -0.1],
            "text_offset": [0, 5, 6, 8],
        });
        assert_eq!(
            last_prompt_token_logprob(&logprobs, "score: 3").unwrap(),
            -2.5
        );
    }
}
