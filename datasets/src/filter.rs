//! The quality filter: a corpus streamed through the embedder and the classifier, documents kept
//! when their score reaches the threshold. Scores are journaled per document as they are made
//! (`filter-scores-<shard>.jsonl`), so a killed run resumes where it stopped; the kept documents
//! (`kept-<shard>.jsonl`), the report and the score histogram (SVG) are written at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::annotate::document_hash;
use crate::atomic_file::{AtomicFile, write_json};
use crate::classifier::{ForestMode, QualityClassifier};
use crate::embed::Embedder;
use crate::error::{DataError, Result};
use crate::histogram::{bin_counts, histogram_svg};
use crate::journal::Journal;
use crate::progress::Progress;
use crate::reader::{Corpus, OnMalformed};
use crate::shard::Shard;

/// Settings of a filter run.
#[derive(Debug, Clone)]
pub struct FilterOptions {
    /// Documents embedded per forward pass.
    pub batch: usize,
    /// This run's part of the corpus.
    pub shard: Shard,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            batch: 16,
            shard: Shard::WHOLE,
            progress: false,
        }
    }
}

/// What a filter run kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterReport {
    /// Documents in the shard.
    pub documents: u64,
    /// Documents scored by this run (the rest by an earlier one).
    pub scored: u64,
    /// Documents kept.
    pub kept: u64,
    /// `kept / documents`.
    pub kept_fraction: f64,
    /// Score histogram: `bins` counts over `[low, high]`.
    pub histogram: Vec<u64>,
    /// The histogram's range.
    pub histogram_range: [f64; 2],
    /// Documents per second embedded and scored by this run.
    pub documents_per_second: f64,
    /// The kept documents (JSONL, `id` and `text`).
    pub kept_path: PathBuf,
    /// Every document's score (JSONL).
    pub scores_path: PathBuf,
    /// The histogram picture.
    pub histogram_path: PathBuf,
}

/// Filters `options.shard` of `corpus` with `classifier` on `embedder`'s embeddings into `out`.
/// The classifier must have been trained on this embedder's embeddings.
pub fn filter<B: Backend>(
    embedder: &Embedder<'_, B>,
    classifier: &QualityClassifier,
    corpus: &Corpus,
    out: &Path,
    options: &FilterOptions,
) -> Result<FilterReport> {
    embedder
        .identity()
        .check_matches(&classifier.embedder, "the classifier")?;
    let start = Instant::now();
    let stem = options.shard.file_stem();
    let scores_path = out.join(format!("filter-scores-{stem}.jsonl"));
    let mut journal = Journal::open(&scores_path)?;
    let done = journal.keys();
    let progress = Progress::over_shard(options.progress, options.shard, corpus, "filter")?;
    let mut documents = 0u64;
    // The batch waiting to be embedded: positions, and texts (lent to the embedder as they are).
    let mut pending: (Vec<u64>, Vec<String>) = (Vec::new(), Vec::new());
    let mut scored = 0u64;
    let mut flush = |pending: &mut (Vec<u64>, Vec<String>), journal: &mut Journal| -> Result<()> {
        if pending.0.is_empty() {
            return Ok(());
        }
        let embeddings = embedder.embed(&pending.1)?;
        let rows: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
        let scores = classifier.score(&rows)?;
        for ((position, text), score) in pending.0.drain(..).zip(pending.1.drain(..)).zip(scores) {
            journal.append(&json!({
                "key": position.to_string(),
                "position": position,
                "hash": document_hash(&text),
                "score": score,
                "kept": classifier.keeps(score),
            }))?;
            scored += 1;
            progress.advance();
        }
        Ok(())
    };
    options
        .shard
        .read(corpus, OnMalformed::Fail, &mut |position, text| {
            documents += 1;
            if done.contains(&position.to_string()) {
                progress.advance();
                return Ok(());
            }
            pending.0.push(position);
            pending.1.push(text);
            if pending.0.len() >= options.batch.max(1) {
                flush(&mut pending, &mut journal)?;
            }
            Ok(())
        })?;
    flush(&mut pending, &mut journal)?;
    journal.sync()?;
    progress.finish();
    let seconds = start.elapsed().as_secs_f64().max(1e-9);

    // Every score of the shard, from the journal (this run's and earlier ones').
    let text = std::fs::read_to_string(&scores_path).map_err(|e| DataError::io(&scores_path, e))?;
    let mut kept_at: HashMap<u64, bool> = HashMap::new();
    let mut scores = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| DataError::malformed(&scores_path, i + 1, e.to_string()))?;
        let (Some(position), Some(score), Some(kept)) = (
            record["position"].as_u64(),
            record["score"].as_f64(),
            record["kept"].as_bool(),
        ) else {
            return Err(DataError::malformed(
                &scores_path,
                i + 1,
                "a score record without position, score or kept",
            ));
        };
        kept_at.insert(position, kept);
        scores.push(score);
    }
    let kept_path = out.join(format!("kept-{stem}.jsonl"));
    let mut file = AtomicFile::create(&kept_path)?;
    let mut kept = 0u64;
    options
        .shard
        .read(corpus, OnMalformed::Fail, &mut |position, text| {
            if kept_at.get(&position) == Some(&true) {
                kept += 1;
                file.write_json_line(&json!({ "id": position, "text": text }))?;
            }
            Ok(())
        })?;
    file.commit()?;
    let (low, high, bins) = match classifier.mode {
        ForestMode::Classify => (0.0, 1.0, 2),
        ForestMode::Regress => {
            let high = scores
                .iter()
                .copied()
                .fold(classifier.threshold, f64::max)
                .ceil();
            (0.0, high.max(1.0), 20)
        }
    };
    let histogram = bin_counts(&scores, low, high, bins);
    let histogram_path = out.join(format!("filter-{stem}.histogram.svg"));
    let mut picture = AtomicFile::create(&histogram_path)?;
    let title = format!(
        "{} scores of {} documents; {kept} kept",
        match classifier.mode {
            ForestMode::Classify => "predicted class",
            ForestMode::Regress => "predicted",
        },
        scores.len()
    );
    let line = (classifier.mode == ForestMode::Regress).then_some(classifier.threshold);
    picture.write_all(histogram_svg(&title, &histogram, low, high, line).as_bytes())?;
    picture.commit()?;
    let report = FilterReport {
        documents,
        scored,
        kept,
        kept_fraction: kept as f64 / documents.max(1) as f64,
        histogram,
        histogram_range: [low, high],
        documents_per_second: scored as f64 / seconds,
        kept_path,
        scores_path,
        histogram_path,
    };
    write_json(out.join(format!("filter-{stem}.report.json")), &report)?;
    Ok(report)
}
