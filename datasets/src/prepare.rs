//! `prepare`: corpora → one token store. Documents are read in order, tokenized in parallel in
//! batches of bounded size, and written in their original order, so the store is the same whatever
//! the thread count, and memory stays at about one batch whatever the corpus size.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use phi_zoo_common::PhiTokenizer;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::reader::{Corpus, OnMalformed, ReadReport};
use crate::store::{StoreHeader, StoreWriter};

#[derive(Debug, Clone)]
/// How `prepare` reads and writes.
pub struct PrepareOptions {
    /// What to do with a record that cannot be read.
    pub on_malformed: OnMalformed,
    /// Text gathered before a batch is tokenized (bytes): the bound on memory.
    pub batch_bytes: usize,
    /// Tokenizer threads; `None`: rayon's default (one per core).
    pub threads: Option<usize>,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            on_malformed: OnMalformed::Fail,
            batch_bytes: 8 << 20,
            threads: None,
            progress: false,
        }
    }
}

#[derive(Debug, Clone)]
/// What `prepare` did.
pub struct PrepareReport {
    /// The header of the store written.
    pub header: StoreHeader,
    /// What was read.
    pub read: ReadReport,
    /// Wall time.
    pub elapsed: Duration,
}

/// sha256 (hex) of the tokenizer's canonical JSON: what a store records and checks.
pub fn tokenizer_sha256(tokenizer: &PhiTokenizer) -> Result<String> {
    let json = tokenizer
        .to_json()
        .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    Ok(hex(&Sha256::digest(json.as_bytes())))
}

/// Bytes as lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tokenizes every document of `corpora` (in order), appends EOS after each, and writes the store
/// at `out`.
pub fn prepare(
    corpora: &[Corpus],
    tokenizer: &PhiTokenizer,
    out: &Path,
    options: &PrepareOptions,
) -> Result<PrepareReport> {
    let started = Instant::now();
    let eos = tokenizer
        .eos_id()
        .ok_or_else(|| DataError::Tokenizer("the tokenizer has no <|endoftext|> token".into()))?;
    let sha = tokenizer_sha256(tokenizer)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.unwrap_or(0))
        .build()
        .map_err(|e| DataError::Invalid(format!("cannot start tokenizer threads: {e}")))?;
    let mut writer = StoreWriter::create(out, tokenizer.len(), eos)?;
    let progress = progress_bar(options.progress);
    let mut report = ReadReport::default();
    let mut batch: Vec<String> = Vec::new();
    let mut batch_bytes = 0;
    let mut bytes_done = 0u64;

    let mut flush = |batch: &mut Vec<String>, writer: &mut StoreWriter| -> Result<()> {
        let encoded: Vec<_> = pool.install(|| {
            batch
                .par_iter()
                .map(|text| tokenizer.encode(text))
                .collect()
        });
        for (ids, text) in encoded.into_iter().zip(batch.iter()) {
            let ids = ids.map_err(|e| DataError::Tokenizer(e.to_string()))?;
            writer.push_document(&ids)?;
            bytes_done += text.len() as u64;
        }
        batch.clear();
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!(
            "{} documents, {} tokens, {:.1} MB/s, {:.0} tokens/s",
            writer.documents(),
            writer.tokens(),
            bytes_done as f64 / seconds / 1e6,
            writer.tokens() as f64 / seconds
        ));
        Ok(())
    };

    for corpus in corpora {
        corpus.read(options.on_malformed, &mut report, &mut |text| {
            batch_bytes += text.len();
            batch.push(text);
            if batch_bytes >= options.batch_bytes {
                batch_bytes = 0;
                flush(&mut batch, &mut writer)?;
            }
            Ok(())
        })?;
    }
    flush(&mut batch, &mut writer)?;
    progress.finish_and_clear();
    let sources = report
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let header = writer.finish(sha, sources, report.skipped)?;
    Ok(PrepareReport {
        header,
        read: report,
        elapsed: started.elapsed(),
    })
}

fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
