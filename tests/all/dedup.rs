//! Deduplication on the embedded corpora with planted duplicates: MinHash LSH's clusters are
//! measured against the exact Jaccard similarity computed by brute force, sharded runs agree
//! with a whole run, and a rerun reuses what the first one wrote.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::datasets::dedup::{self, MinHashConfig, MinHasher, jaccard};
use phi_zoo::datasets::{Corpus, Shard};

/// A deterministic generator for the edits (xorshift).
struct Edits(u64);

impl Edits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `text` with about one word in `every` replaced by another.
fn near_copy(text: &str, every: u64, edits: &mut Edits) -> String {
    text.split(' ')
        .map(|w| {
            if edits.next().is_multiple_of(every) {
                format!("edited{}", edits.next() % 1000)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The embedded code and synthetic corpora, then near copies (one word in 40 changed) of every
/// 25th document and reformatted exact copies (upper case, extra spaces) of every 60th.
fn planted_corpus() -> Vec<String> {
    let mut docs = EmbeddedCorpus::Code.texts().unwrap();
    docs.extend(EmbeddedCorpus::Synthetic.texts().unwrap());
    let originals = docs.len();
    let mut edits = Edits(0x9e37_79b9_7f4a_7c15);
    for i in (0..originals).step_by(25) {
        let copy = near_copy(&docs[i], 40, &mut edits);
        docs.push(copy);
    }
    for i in (0..originals).step_by(60) {
        let copy = docs[i].to_uppercase().replace(' ', "  ");
        docs.push(copy);
    }
    docs
}

fn write_jsonl(path: &Path, docs: &[String]) {
    let lines: Vec<String> = docs
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// For each document, the kept document of its cluster (itself when in none); and the edges
/// (document, its first match) that built the clusters.
fn clusters_of(out: &Path, documents: usize) -> (Vec<u64>, Vec<(usize, usize)>) {
    let mut root: Vec<u64> = (0..documents as u64).collect();
    let mut edges = Vec::new();
    let text = std::fs::read_to_string(out.join("clusters.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kept = v["kept"].as_u64().unwrap();
        for d in v["duplicates"].as_array().unwrap() {
            root[d.as_u64().unwrap() as usize] = kept;
        }
        for e in v["edges"].as_array().unwrap() {
            edges.push((
                e["id"].as_u64().unwrap() as usize,
                e["matched"].as_u64().unwrap() as usize,
            ));
        }
    }
    (root, edges)
}

#[test]
fn minhash_clusters_match_brute_force_jaccard_on_a_sample() {
    let docs = planted_corpus();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("corpus.jsonl");
    write_jsonl(&source, &docs);
    let out = dir.path().join("dedup");
    let config = MinHashConfig::default();
    let report = dedup::dedup(&Corpus::jsonl(&source, "text"), &out, config).unwrap();
    assert_eq!(report.clusters.documents, docs.len() as u64);
    assert_eq!(
        report.kept.kept + report.clusters.removed,
        docs.len() as u64
    );
    let (root, edges) = clusters_of(&out, docs.len());

    // A sample holding every planted copy, its original, and a spread of other documents.
    let originals = EmbeddedCorpus::Code.texts().unwrap().len()
        + EmbeddedCorpus::Synthetic.texts().unwrap().len();
    let mut sample: Vec<usize> = (0..originals).step_by(7).collect();
    sample.extend((0..originals).step_by(25));
    sample.extend((0..originals).step_by(60));
    sample.extend(originals..docs.len());
    sample.sort_unstable();
    sample.dedup();
    let hasher = MinHasher::new(config).unwrap();
    let sets: HashMap<usize, HashSet<u64>> = sample
        .iter()
        .map(|&i| (i, hasher.shingle_set(&docs[i])))
        .collect();
    // Recall: of the sample's pairs with Jaccard ≥ 0.8, the share put in one cluster.
    let (mut similar, mut similar_found) = (0, 0);
    for (x, &i) in sample.iter().enumerate() {
        for &j in &sample[x + 1..] {
            if jaccard(&sets[&i], &sets[&j]) >= 0.8 {
                similar += 1;
                similar_found += usize::from(root[i] == root[j]);
            }
        }
    }
    // Precision: of the matches that joined documents into clusters (a shared band or an equal
    // simplified text), the share between documents of Jaccard ≥ 0.5. Clusters themselves chain
    // (a ~ b ~ c with a and c apart), as union-find over LSH matches does in datatrove too.
    let edge_similar = edges
        .iter()
        .filter(|&&(a, b)| {
            jaccard(&hasher.shingle_set(&docs[a]), &hasher.shingle_set(&docs[b])) >= 0.5
        })
        .count();
    let recall = similar_found as f64 / similar as f64;
    let precision = edge_similar as f64 / edges.len() as f64;
    println!(
        "sample of {}: {similar} pairs with Jaccard ≥ 0.8, recall {recall:.3}; {} matches, \
         precision (Jaccard ≥ 0.5) {precision:.3}; report {:?}",
        sample.len(),
        edges.len(),
        report.clusters
    );
    assert!(
        similar >= 100,
        "the planted copies give pairs to find: {similar}"
    );
    assert!(recall >= 0.9, "recall {recall}");
    assert!(precision >= 0.95, "precision {precision}");
    // Every planted exact copy is removed and its original kept.
    for (k, i) in (0..originals).step_by(60).enumerate() {
        let copy = originals + originals.div_ceil(25) + k;
        assert_eq!(root[copy], root[i], "exact copy {copy} of {i}");
    }
    assert!(report.clusters.exact_duplicates >= originals.div_ceil(60) as u64);
}

#[test]
fn sharded_steps_agree_with_a_whole_run_and_reruns_reuse_outputs() {
    let mut docs = EmbeddedCorpus::Web.texts().unwrap();
    docs.truncate(600);
    let mut edits = Edits(7);
    for i in (0..600).step_by(30) {
        let copy = near_copy(&docs[i], 50, &mut edits);
        docs.push(copy);
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("web.jsonl");
    write_jsonl(&source, &docs);
    let corpus = Corpus::jsonl(&source, "text");
    let config = MinHashConfig::default();

    let whole = dir.path().join("whole");
    let first = dedup::dedup(&corpus, &whole, config).unwrap();
    assert!(!first.signatures.reused);
    let again = dedup::dedup(&corpus, &whole, config).unwrap();
    assert!(again.signatures.reused, "the rerun hashes nothing");
    assert_eq!(first.clusters, again.clusters);

    let sharded = dir.path().join("sharded");
    for i in 0..3 {
        dedup::signatures(&corpus, &sharded, Shard::new(i, 3).unwrap(), config).unwrap();
    }
    let clusters = dedup::cluster(&sharded, 3).unwrap();
    assert_eq!(clusters.removed, first.clusters.removed);
    assert_eq!(
        std::fs::read_to_string(sharded.join("removed.txt")).unwrap(),
        std::fs::read_to_string(whole.join("removed.txt")).unwrap()
    );
    let mut kept = 0;
    for i in 0..3 {
        kept += dedup::write_kept(&corpus, &sharded, Shard::new(i, 3).unwrap())
            .unwrap()
            .kept;
    }
    assert_eq!(kept, first.kept.kept);

    // Settings that differ from the files' are refused, naming the file.
    let other = MinHashConfig {
        bands: 10,
        ..config
    };
    let error = dedup::signatures(&corpus, &whole, Shard::WHOLE, other)
        .unwrap_err()
        .to_string();
    assert!(error.contains("shard-00000-of-00001.sig"), "{error}");
    // A missing shard is named.
    let error = dedup::cluster(&dir.path().join("none"), 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("shard-00000-of-00002.sig"), "{error}");
}

#[test]
fn truncated_signature_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("c.jsonl");
    write_jsonl(&source, &EmbeddedCorpus::Web.texts().unwrap()[..50]);
    let out = dir.path().join("out");
    let config = MinHashConfig::default();
    let report =
        dedup::signatures(&Corpus::jsonl(&source, "text"), &out, Shard::WHOLE, config).unwrap();
    let bytes = std::fs::read(&report.path).unwrap();
    std::fs::write(&report.path, &bytes[..bytes.len() - 5]).unwrap();
    let error = dedup::cluster(&out, 1).unwrap_err().to_string();
    assert!(error.contains("promises 50 documents"), "{error}");
}
