//! Deduplication, in three steps that a scheduler can run apart:
//! 1. [`signatures`], per shard: each document's exact key (a 128-bit hash of its simplified
//!    text) and MinHash band keys, written to `signatures/<shard>.sig`;
//! 2. [`cluster`], once: documents sharing an exact key or any band key are joined
//!    (union-find); one per cluster is kept, the others are listed in `removed.txt` and the
//!    clusters in `clusters.jsonl`;
//! 3. [`write_kept`], per shard: the shard's documents minus the removed, as JSONL.
//!
//! [`dedup`] runs all three on one machine. Memory holds band keys and the duplicates' forest,
//! never text. Every file is written whole or not at all, and a step whose output exists (made
//! with the same settings) is skipped, so a killed run resumes where it stopped.

mod clusters;
mod minhash;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

pub use clusters::Clusters;
pub use minhash::{MinHashConfig, MinHasher, jaccard};

use crate::atomic_file::{AtomicFile, write_json};
use crate::error::{DataError, Result};
use crate::reader::{Corpus, OnMalformed};
use crate::shard::Shard;

/// The first line of a signature file.
const SIGNATURE_MAGIC: &[u8] = b"phi-zoo minhash signatures v1\n";

/// Documents hashed per parallel batch.
const BATCH: usize = 512;

/// What a signature file was made from; a rerun with other settings refuses to mix them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureHeader {
    /// The shingling and banding.
    pub minhash: MinHashConfig,
    /// Which shard of how many.
    pub shard: String,
    /// Documents in the shard.
    pub documents: u64,
}

/// One document's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DocumentKeys {
    position: u64,
    exact: u128,
    /// Empty for a document with fewer words than a shingle.
    bands: Vec<u64>,
}

/// What the signature step did for one shard.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    /// The file written (or found).
    pub path: PathBuf,
    /// Documents hashed.
    pub documents: u64,
    /// Whether an earlier run had already written it.
    pub reused: bool,
    /// Seconds spent.
    pub seconds: f64,
}

/// What clustering found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterReport {
    /// Documents over all shards.
    pub documents: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Documents removed (all but one per cluster).
    pub removed: u64,
    /// Of those, documents whose simplified text equals an earlier one's.
    pub exact_duplicates: u64,
    /// The largest cluster's size.
    pub largest_cluster: u64,
    /// Documents too short for a shingle (only exact matching applies to them).
    pub unshingled: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// What the last step kept of one shard.
#[derive(Debug, Clone, Serialize)]
pub struct KeptReport {
    /// The JSONL file written.
    pub path: PathBuf,
    /// Documents read.
    pub documents: u64,
    /// Documents written.
    pub kept: u64,
}

/// The whole run on one machine.
#[derive(Debug, Clone, Serialize)]
pub struct DedupReport {
    /// Step 1.
    pub signatures: SignatureReport,
    /// Step 2.
    pub clusters: ClusterReport,
    /// Step 3.
    pub kept: KeptReport,
    /// Documents per second over the whole run (reading twice included).
    pub documents_per_second: f64,
}

/// The signature file of `shard` under `out`.
pub fn signature_path(out: &Path, shard: Shard) -> PathBuf {
    out.join("signatures")
        .join(format!("{}.sig", shard.file_stem()))
}

/// The kept documents of `shard` under `out`.
pub fn kept_path(out: &Path, shard: Shard) -> PathBuf {
    out.join("kept")
        .join(format!("{}.jsonl", shard.file_stem()))
}

/// Step 1: hashes the documents of `shard` into `out/signatures/<shard>.sig`; reuses the file
/// when an earlier run wrote it with the same settings.
pub fn signatures(
    corpus: &Corpus,
    out: &Path,
    shard: Shard,
    minhash: MinHashConfig,
) -> Result<SignatureReport> {
    let start = Instant::now();
    let hasher = MinHasher::new(minhash)?;
    let path = signature_path(out, shard);
    if path.exists() {
        let (header, _) = read_signatures(&path)?;
        if header.minhash != minhash || header.shard != shard.to_string() {
            return Err(DataError::Invalid(format!(
                "{}: written with other settings ({:?}, shard {}); remove it or the output folder",
                path.display(),
                header.minhash,
                header.shard
            )));
        }
        return Ok(SignatureReport {
            path,
            documents: header.documents,
            reused: true,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let mut keys: Vec<DocumentKeys> = Vec::new();
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(BATCH);
    let hash_batch = |batch: &mut Vec<(u64, String)>, keys: &mut Vec<DocumentKeys>| {
        let hashed: Vec<DocumentKeys> = batch
            .par_iter()
            .map(|(position, text)| document_keys(&hasher, *position, text))
            .collect();
        keys.extend(hashed);
        batch.clear();
    };
    shard.read(corpus, OnMalformed::Fail, &mut |position, text| {
        batch.push((position, text));
        if batch.len() == BATCH {
            hash_batch(&mut batch, &mut keys);
        }
        Ok(())
    })?;
    hash_batch(&mut batch, &mut keys);
    let header = SignatureHeader {
        minhash,
        shard: shard.to_string(),
        documents: keys.len() as u64,
    };
    write_signatures(&path, &header, &keys)?;
    Ok(SignatureReport {
        path,
        documents: header.documents,
        reused: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn document_keys(hasher: &MinHasher, position: u64, text: &str) -> DocumentKeys {
    let simplified = hasher.simplify(text);
    let mut shingles = Vec::new();
    hasher.shingles(&simplified, &mut shingles);
    let bands = hasher
        .signature_of_shingles(&shingles)
        .map(|s| hasher.band_keys(&s))
        .unwrap_or_default();
    DocumentKeys {
        position,
        exact: xxh3_128(simplified.as_bytes()),
        bands,
    }
}

fn write_signatures(path: &Path, header: &SignatureHeader, keys: &[DocumentKeys]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(SIGNATURE_MAGIC)?;
    file.write_json_line(header)?;
    let bands = header.minhash.bands;
    let mut record = Vec::with_capacity(record_size(bands));
    for doc in keys {
        record.clear();
        record.extend_from_slice(&doc.position.to_le_bytes());
        record.extend_from_slice(&doc.exact.to_le_bytes());
        record.push(u8::from(!doc.bands.is_empty()));
        for band in 0..bands {
            let key = doc.bands.get(band).copied().unwrap_or(0);
            record.extend_from_slice(&key.to_le_bytes());
        }
        file.write_all(&record)?;
    }
    file.commit()?;
    Ok(())
}

fn record_size(bands: usize) -> usize {
    8 + 16 + 1 + 8 * bands
}

fn read_signatures(path: &Path) -> Result<(SignatureHeader, Vec<DocumentKeys>)> {
    let bad = |message: String| DataError::corpus(path, message);
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut magic = vec![0u8; SIGNATURE_MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| bad("not a signature file (too short)".into()))?;
    if magic != SIGNATURE_MAGIC {
        return Err(bad("not a phi-zoo signature file".into()));
    }
    let mut line = String::new();
    reader
        .by_ref()
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(|e| DataError::io(path, e))?;
    let header: SignatureHeader =
        serde_json::from_str(line.trim_end()).map_err(|e| bad(format!("header: {e}")))?;
    header.minhash.check().map_err(|e| bad(e.to_string()))?;
    let size = record_size(header.minhash.bands);
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .map_err(|e| DataError::io(path, e))?;
    if rest.len() as u64 != header.documents * size as u64 {
        return Err(bad(format!(
            "{} bytes of records where the header promises {} documents of {size} bytes",
            rest.len(),
            header.documents
        )));
    }
    let u64_at = |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
    let keys = rest
        .chunks_exact(size)
        .map(|r| DocumentKeys {
            position: u64_at(r, 0),
            exact: u128::from_le_bytes(r[8..24].try_into().unwrap()),
            bands: if r[24] == 1 {
                (0..header.minhash.bands)
                    .map(|b| u64_at(r, 25 + 8 * b))
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok((header, keys))
}

/// Step 2: joins the documents of all `shards` signature files under `out` into clusters,
/// writes `removed.txt` (one position per line, sorted), `clusters.jsonl` (`kept`,
/// `duplicates`, and `edges`: each member's first match, `by` `exact` or `minhash`) and
/// `clusters.json` (the report). Reuses them when they exist.
pub fn cluster(out: &Path, shards: usize) -> Result<ClusterReport> {
    let report_path = out.join("clusters.json");
    if report_path.exists() && out.join("removed.txt").exists() {
        let text =
            std::fs::read_to_string(&report_path).map_err(|e| DataError::io(&report_path, e))?;
        return serde_json::from_str(&text)
            .map_err(|e| DataError::corpus(&report_path, e.to_string()));
    }
    let start = Instant::now();
    let mut report = ClusterReport::default();
    let mut clusters = Clusters::default();
    let mut first_exact: HashMap<u128, u64> = HashMap::new();
    let mut first_band: HashMap<u64, u64> = HashMap::new();
    // Each document's first match: the edge that put it in its cluster, kept to explain it.
    let mut matched: HashMap<u64, (u64, &'static str)> = HashMap::new();
    let mut minhash = None;
    for index in 0..shards {
        let shard = Shard::new(index, shards)?;
        let path = signature_path(out, shard);
        if !path.exists() {
            return Err(DataError::Invalid(format!(
                "{} is missing: run the signature step for shard {shard} first",
                path.display()
            )));
        }
        let (header, keys) = read_signatures(&path)?;
        if *minhash.get_or_insert(header.minhash) != header.minhash {
            return Err(DataError::corpus(
                &path,
                "made with other minhash settings than shard 0's",
            ));
        }
        for doc in keys {
            report.documents += 1;
            match first_exact.get(&doc.exact) {
                Some(&first) => {
                    clusters.join(first, doc.position);
                    matched.entry(doc.position).or_insert((first, "exact"));
                    report.exact_duplicates += 1;
                }
                None => {
                    first_exact.insert(doc.exact, doc.position);
                }
            }
            if doc.bands.is_empty() {
                report.unshingled += 1;
            }
            for key in doc.bands {
                match first_band.get(&key) {
                    Some(&first) => {
                        clusters.join(first, doc.position);
                        matched.entry(doc.position).or_insert((first, "minhash"));
                    }
                    None => {
                        first_band.insert(key, doc.position);
                    }
                }
            }
        }
    }
    let groups = clusters.groups();
    let mut removed: Vec<u64> = Vec::new();
    let mut listing = AtomicFile::create(out.join("clusters.jsonl"))?;
    for (kept, duplicates) in &groups {
        report.clusters += 1;
        report.largest_cluster = report.largest_cluster.max(1 + duplicates.len() as u64);
        removed.extend(duplicates);
        let edges: Vec<serde_json::Value> = std::iter::once(kept)
            .chain(duplicates)
            .filter_map(|doc| {
                let (other, by) = matched.get(doc)?;
                Some(serde_json::json!({ "id": doc, "matched": other, "by": by }))
            })
            .collect();
        listing.write_json_line(&serde_json::json!({
            "kept": kept,
            "duplicates": duplicates,
            "edges": edges,
        }))?;
    }
    listing.commit()?;
    removed.sort_unstable();
    report.removed = removed.len() as u64;
    let mut file = AtomicFile::create(out.join("removed.txt"))?;
    let mut text = String::new();
    for position in &removed {
        text.push_str(&position.to_string());
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.commit()?;
    report.seconds = start.elapsed().as_secs_f64();
    write_json(&report_path, &report)?;
    Ok(report)
}

/// The positions `cluster` removed.
pub fn removed_positions(out: &Path) -> Result<HashSet<u64>> {
    let path = out.join("removed.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            line.trim().parse().map_err(|_| {
                DataError::malformed(&path, i + 1, format!("not a position: {line:?}"))
            })
        })
        .collect()
}

/// Step 3: writes the documents of `shard` that `cluster` kept to `out/kept/<shard>.jsonl`, as
/// `{"id": position, "text": …}`.
pub fn write_kept(corpus: &Corpus, out: &Path, shard: Shard) -> Result<KeptReport> {
    let removed = removed_positions(out)?;
    let path = kept_path(out, shard);
    let mut file = AtomicFile::create(&path)?;
    let (mut documents, mut kept) = (0, 0);
    shard.read(corpus, OnMalformed::Fail, &mut |position, text| {
        documents += 1;
        if removed.contains(&position) {
            return Ok(());
        }
        kept += 1;
        file.write_json_line(&serde_json::json!({ "id": position, "text": text }))
    })?;
    let path = file.commit()?;
    Ok(KeptReport {
        path,
        documents,
        kept,
    })
}

/// All three steps on one machine, the corpus as one shard.
pub fn dedup(corpus: &Corpus, out: &Path, minhash: MinHashConfig) -> Result<DedupReport> {
    let start = Instant::now();
    let signatures = signatures(corpus, out, Shard::WHOLE, minhash)?;
    let clusters = cluster(out, 1)?;
    let kept = write_kept(corpus, out, Shard::WHOLE)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(DedupReport {
        documents_per_second: clusters.documents as f64 / seconds,
        signatures,
        clusters,
        kept,
    })
}
