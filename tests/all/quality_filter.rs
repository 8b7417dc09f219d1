//! The quality filter's chain on the embedded code corpus: embeddings that do not depend on the
//! batch, a forest that learns a planted labelling (documented vs undocumented functions) to
//! F1 ≥ 0.9 on held-out documents, a filter that keeps what the forest predicts, resumes after
//! a cut journal, and refuses a classifier made on another model's embeddings.

use std::path::Path;

use phi_zoo::backend::Cpu;
use phi_zoo::datasets::Corpus;
use phi_zoo::datasets::classifier::{ForestMode, ForestSettings, QualityClassifier};
use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::datasets::embed::{Embedder, Embeddings, embed_corpus};
use phi_zoo::datasets::filter::{FilterOptions, filter};
use phi_zoo::{Phi, PhiTokenizer, Variant};

/// Tokens pooled: the signature and docstring are at the start of each function.
const MAX_TOKENS: usize = 48;

/// Distinct functions of the code corpus; every other one loses its docstring. Score 5 for
/// documented, 0 for undocumented.
fn planted() -> Vec<(String, f64)> {
    let mut texts = EmbeddedCorpus::Code.texts().unwrap();
    texts.sort();
    texts.dedup();
    texts
        .into_iter()
        .filter(|t| t.contains("\"\"\""))
        .take(400)
        .enumerate()
        .map(|(i, t)| {
            if i % 2 == 0 {
                (t, 5.0)
            } else {
                let kept: Vec<&str> = t.lines().filter(|l| !l.contains("\"\"\"")).collect();
                (kept.join("\n"), 0.0)
            }
        })
        .collect()
}

fn write_corpus(path: &Path, docs: &[(String, f64)]) -> Corpus {
    let lines: Vec<String> = docs
        .iter()
        .map(|(t, _)| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    Corpus::jsonl(path, "text")
}

fn model(seed: u64) -> Phi<Cpu> {
    use burn::prelude::Backend;
    Cpu::seed(&Default::default(), seed);
    Phi::new(&Variant::Tiny.config(), &Default::default())
}

#[test]
fn embeddings_do_not_depend_on_the_batch() {
    let phi = model(1);
    let tokenizer = PhiTokenizer::bundled();
    let embedder =
        Embedder::new(&phi, &tokenizer, "tiny", MAX_TOKENS, &Default::default()).unwrap();
    let texts: Vec<String> = planted().into_iter().take(5).map(|(t, _)| t).collect();
    let together = embedder.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let alone = embedder.embed(std::slice::from_ref(text)).unwrap();
        let d = alone[0]
            .iter()
            .zip(&together[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-5, "document {i}: {d}");
    }
    assert!(Embedder::new(&phi, &tokenizer, "tiny", 100_000, &Default::default()).is_err());
}

#[test]
fn the_forest_learns_a_planted_labelling_and_the_filter_keeps_its_predictions() {
    let docs = planted();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(&dir.path().join("code.jsonl"), &docs);
    let phi = model(1);
    let tokenizer = PhiTokenizer::bundled();
    let device = Default::default();
    let embedder = Embedder::new(&phi, &tokenizer, "tiny seed 1", MAX_TOKENS, &device).unwrap();
    let report = embed_corpus(&embedder, &corpus, dir.path(), Default::default(), 32).unwrap();
    assert_eq!(report.documents, docs.len() as u64);
    let embeddings = Embeddings::read(&report.path).unwrap();
    let rows: Vec<&[f32]> = (0..docs.len()).map(|i| embeddings.row(i)).collect();
    let scores: Vec<f64> = docs.iter().map(|(_, s)| *s).collect();
    let settings = ForestSettings {
        trees: 40,
        ..Default::default()
    };
    let classifier = QualityClassifier::train(
        &rows,
        &scores,
        embedder.identity().clone(),
        ForestMode::Classify,
        3.0,
        settings,
    )
    .unwrap();
    let e = &classifier.evaluation;
    println!("held-out evaluation: {e:?}");
    assert_eq!(e.held_out, docs.len() / 5);
    assert!(e.f1 >= 0.9, "F1 {} on held-out documents: {e:?}", e.f1);

    let saved = dir.path().join("classifier.json");
    classifier.save(&saved).unwrap();
    let classifier = QualityClassifier::load(&saved).unwrap();
    let out = dir.path().join("filtered");
    let options = FilterOptions {
        batch: 32,
        ..Default::default()
    };
    let first = filter(&embedder, &classifier, &corpus, &out, &options).unwrap();
    let predicted = classifier.score(&rows).unwrap();
    let expected_kept = predicted.iter().filter(|&&p| classifier.keeps(p)).count();
    assert_eq!(first.kept as usize, expected_kept);
    assert!(
        (first.kept as f64 / docs.len() as f64 - 0.5).abs() < 0.1,
        "{first:?}"
    );
    let kept_text = std::fs::read_to_string(&first.kept_path).unwrap();
    assert!(
        std::fs::read_to_string(&first.histogram_path)
            .unwrap()
            .starts_with("<svg")
    );

    // A kill mid-run, simulated: the journal loses its last records and ends in half a line.
    let journal = std::fs::read_to_string(&first.scores_path).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    let cut = lines[..lines.len() / 3].join("\n") + "\n{\"key\": \"9";
    std::fs::write(&first.scores_path, cut).unwrap();
    let resumed = filter(&embedder, &classifier, &corpus, &out, &options).unwrap();
    assert_eq!(resumed.scored as usize, docs.len() - lines.len() / 3);
    assert_eq!(
        std::fs::read_to_string(&resumed.kept_path).unwrap(),
        kept_text
    );
    let journal = std::fs::read_to_string(&resumed.scores_path).unwrap();
    assert_eq!(
        journal.lines().count(),
        docs.len(),
        "each document scored once"
    );

    // Another model's embeddings are refused.
    let other = model(2);
    let wrong = Embedder::new(&other, &tokenizer, "tiny seed 2", MAX_TOKENS, &device).unwrap();
    let error = filter(
        &wrong,
        &classifier,
        &corpus,
        &dir.path().join("x"),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("the classifier was made with the embedder tiny seed 1"),
        "{error}"
    );
}
