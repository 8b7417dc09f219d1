//! Decontamination: a training document that shares a word n-gram (13 words by default, the
//! check phi-1 ran against HumanEval) with a benchmark item is removed, and reported with the
//! n-gram and the item, so that evaluation scores measure what the model learned rather than
//! what it saw. Texts are compared simplified (case, punctuation and spacing folded,
//! [`crate::text_norm`], numbers kept as written), so a reformatted copy still matches. Items'
//! test code is not indexed: test lists are runs of literal values and calls, whose n-grams
//! turn up in any code with assertions.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::atomic_file::{AtomicFile, write_json};
use crate::error::{DataError, Result};
use crate::reader::{Corpus, OnMalformed};
use crate::shard::Shard;
use crate::text_norm::{ngram_hashes, simplify_with, words};

/// phi-1's n-gram length for its HumanEval overlap check.
pub const DEFAULT_NGRAM: usize = 13;

/// One benchmark item's text, as it could leak into a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BenchmarkItem {
    /// The benchmark (its file's name).
    pub benchmark: String,
    /// The item's id in the benchmark (`task_id`, `id`), or its line number.
    pub id: String,
    /// What a leak would copy: prompt and solution, question and choices.
    pub text: String,
}

/// Reads a benchmark file: JSONL, gzipped or not, in one of the shapes the project's evaluation
/// reads: HumanEval (`prompt`, `canonical_solution`), MBPP (`text`, `code`), or multiple
/// choice (`context` or `question`, and `choices`).
pub fn read_benchmark(path: &Path) -> Result<Vec<BenchmarkItem>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("benchmark");
    let text = if name.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_string(&mut text)
            .map_err(|e| DataError::corpus(path, format!("not gzipped UTF-8 JSONL: {e}")))?;
        text
    } else {
        String::from_utf8(raw).map_err(|_| DataError::corpus(path, "not UTF-8"))?
    };
    let benchmark = name.trim_end_matches(".gz").trim_end_matches(".jsonl");
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(line)
            .map_err(|e| DataError::malformed(path, i + 1, format!("not JSON: {e}")))?;
        let text = item_text(&row).ok_or_else(|| {
            DataError::malformed(
                path,
                i + 1,
                "no benchmark fields: expected HumanEval's prompt, MBPP's text and code, or a \
                 multiple-choice context/question with choices",
            )
        })?;
        let id = ["task_id", "id"]
            .iter()
            .find_map(|k| row.get(k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_else(|| format!("line {}", i + 1));
        items.push(BenchmarkItem {
            benchmark: benchmark.to_string(),
            id,
            text,
        });
    }
    if items.is_empty() {
        return Err(DataError::corpus(path, "no benchmark items"));
    }
    Ok(items)
}

/// The text of a benchmark row, by the first shape it fits.
fn item_text(row: &Value) -> Option<String> {
    let field = |k: &str| row.get(k).and_then(Value::as_str);
    let list = |k: &str| {
        row.get(k).and_then(Value::as_array).map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let parts: Vec<String> = if let Some(prompt) = field("prompt") {
        // HumanEval
        [Some(prompt), field("canonical_solution")]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect()
    } else if let (Some(text), Some(code)) = (field("text"), field("code")) {
        // MBPP
        vec![text.to_string(), code.to_string()]
    } else if let Some(question) = field("context").or(field("question")) {
        [Some(question.to_string()), list("choices")]
            .into_iter()
            .flatten()
            .collect()
    } else {
        return None;
    };
    Some(parts.join("\n"))
}

/// Where a document matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contamination {
    /// The benchmark.
    pub benchmark: String,
    /// The item's id.
    pub item: String,
    /// The shared n-gram, simplified (numbers kept).
    pub ngram: String,
}

/// Every n-gram of the benchmark items, hashed, with the item it came from.
#[derive(Debug)]
pub struct NgramIndex {
    ngram: usize,
    items: Vec<BenchmarkItem>,
    grams: HashMap<u64, u32>,
    /// Items with fewer words than an n-gram: they cannot be matched.
    pub too_short: usize,
}

impl NgramIndex {
    /// Indexes `items` by their `ngram`-word n-grams.
    pub fn new(items: Vec<BenchmarkItem>, ngram: usize) -> Result<Self> {
        if ngram == 0 || ngram > 256 {
            return Err(DataError::Invalid(format!(
                "decontamination n-gram length {ngram}: must be in 1..=256"
            )));
        }
        let mut grams = HashMap::new();
        let mut too_short = 0;
        for (index, item) in items.iter().enumerate() {
            let simplified = simplify_with(&item.text, false);
            let words: Vec<&str> = words(&simplified).collect();
            if words.len() < ngram {
                too_short += 1;
            }
            for (_, hash) in ngram_hashes(&words, ngram) {
                grams.entry(hash).or_insert(index as u32);
            }
        }
        Ok(Self {
            ngram,
            items,
            grams,
            too_short,
        })
    }

    /// Items indexed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is indexed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first n-gram of `text` that a benchmark item shares, if any.
    pub fn find(&self, text: &str) -> Option<Contamination> {
        let simplified = simplify_with(text, false);
        let words: Vec<&str> = words(&simplified).collect();
        ngram_hashes(&words, self.ngram).find_map(|(gram, hash)| {
            let item = &self.items[*self.grams.get(&hash)? as usize];
            Some(Contamination {
                benchmark: item.benchmark.clone(),
                item: item.id.clone(),
                ngram: gram.join(" "),
            })
        })
    }
}

/// What decontamination did to one shard.
#[derive(Debug, Clone, Serialize)]
pub struct DecontaminationReport {
    /// Benchmark items indexed.
    pub items: usize,
    /// Items too short to match.
    pub items_too_short: usize,
    /// Documents read.
    pub documents: u64,
    /// Documents removed.
    pub removed: u64,
    /// The kept documents (JSONL, `id` and `text`).
    pub kept_path: PathBuf,
    /// The removed documents with their match (JSONL).
    pub removed_path: PathBuf,
}

/// Removes from `shard` of `corpus` the documents that share an n-gram with `index`; writes
/// `out/kept/<shard>.jsonl`, `out/contaminated/<shard>.jsonl` (`id`, `benchmark`, `item`,
/// `ngram`) and `out/<shard>.report.json`. A shard already done is not redone.
pub fn decontaminate(
    corpus: &Corpus,
    index: &NgramIndex,
    out: &Path,
    shard: Shard,
) -> Result<DecontaminationReport> {
    let stem = shard.file_stem();
    let report_path = out.join(format!("{stem}.report.json"));
    let kept_path = out.join("kept").join(format!("{stem}.jsonl"));
    let removed_path = out.join("contaminated").join(format!("{stem}.jsonl"));
    let mut kept = AtomicFile::create(&kept_path)?;
    let mut removed = AtomicFile::create(&removed_path)?;
    let (mut documents, mut removed_count) = (0, 0);
    shard.read(corpus, OnMalformed::Fail, &mut |position, text| {
        documents += 1;
        match index.find(&text) {
            Some(hit) => {
                removed_count += 1;
                removed.write_json_line(&serde_json::json!({
                    "id": position,
                    "benchmark": hit.benchmark,
                    "item": hit.item,
                    "ngram": hit.ngram,
                }))
            }
            None => kept.write_json_line(&serde_json::json!({ "id": position, "text": text })),
        }
    })?;
    removed.commit()?;
    kept.commit()?;
    let report = DecontaminationReport {
        items: index.len(),
        items_too_short: index.too_short,
        documents,
        removed: removed_count,
        kept_path,
        removed_path,
    };
    write_json(report_path, &report)?;
    Ok(report)
}
