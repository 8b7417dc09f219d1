//! Decontamination against the HumanEval file the evaluation ships: planted leaks (reformatted
//! copies of items' prompts and solutions inside corpus documents) are removed and attributed to
//! their items, and nothing else in the embedded corpora is.

use std::io::Read;
use std::path::Path;

use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::datasets::decontaminate::{self, DEFAULT_NGRAM, NgramIndex, read_benchmark};
use phi_zoo::datasets::{Corpus, Shard};

fn humaneval_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/humaneval/HumanEval.jsonl.gz"
    ))
}

fn humaneval_rows() -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(humaneval_path()).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn planted_humaneval_leaks_are_removed_and_nothing_else() {
    let mut docs = EmbeddedCorpus::Code.texts().unwrap();
    docs.extend(EmbeddedCorpus::Synthetic.texts().unwrap());
    docs.extend(EmbeddedCorpus::Web.texts().unwrap());
    let rows = humaneval_rows();
    // Leaks: a solution pasted into a code document with other indentation; a prompt quoted in a
    // textbook page in upper case; a whole item as its own document.
    let mut planted = Vec::new();
    for (k, item) in [3usize, 41, 97, 150].into_iter().enumerate() {
        let row = &rows[item];
        let prompt = row["prompt"].as_str().unwrap();
        let solution = row["canonical_solution"].as_str().unwrap();
        let leak = match k {
            0 => format!(
                "{}\n\n{}{}",
                docs[10],
                prompt,
                solution.replace("    ", "\t")
            ),
            1 => format!("{}\nAs an exercise: {}", docs[3000], prompt.to_uppercase()),
            _ => format!("{prompt}{solution}"),
        };
        let at = [10, 3000, 4200, 6500][k];
        docs[at] = leak;
        planted.push((at as u64, row["task_id"].as_str().unwrap().to_string()));
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("corpus.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&source, lines.join("\n") + "\n").unwrap();

    let items = read_benchmark(humaneval_path()).unwrap();
    assert_eq!(items.len(), 164);
    let index = NgramIndex::new(items, DEFAULT_NGRAM).unwrap();
    let out = dir.path().join("decontaminated");
    let report =
        decontaminate::decontaminate(&Corpus::jsonl(&source, "text"), &index, &out, Shard::WHOLE)
            .unwrap();
    let removed: Vec<(u64, String)> = std::fs::read_to_string(&report.removed_path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["ngram"].as_str().unwrap().split(' ').count() == DEFAULT_NGRAM);
            (
                v["id"].as_u64().unwrap(),
                v["item"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(removed, planted);
    assert_eq!(report.documents, docs.len() as u64);
    let kept = std::fs::read_to_string(&report.kept_path).unwrap();
    assert_eq!(kept.lines().count(), docs.len() - planted.len());
}

#[test]
fn benchmark_files_of_other_shapes_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mbpp = dir.path().join("mbpp.jsonl");
    std::fs::write(
        &mbpp,
        r#"{"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character from the string.", "code": "def remove_Occ(s,ch):\n    return s", "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\""]}"#,
    )
    .unwrap();
    let items = read_benchmark(&mbpp).unwrap();
    assert_eq!(
        (items[0].benchmark.as_str(), items[0].id.as_str()),
        ("mbpp", "11")
    );
    let index = NgramIndex::new(items, 8).unwrap();
    let hit = index
        .find("Today: write a Python function to remove FIRST and last occurrence of a letter.")
        .unwrap();
    assert_eq!(hit.ngram, "write a python function to remove first and");

    let choice = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/eval/choice_sample.jsonl"
    ));
    assert!(!read_benchmark(choice).unwrap().is_empty());

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"x\"}\n{\"nothing\": 1}\n").unwrap();
    let error = read_benchmark(&bad).unwrap_err().to_string();
    assert!(error.contains("bad.jsonl:2"), "{error}");
    assert!(NgramIndex::new(Vec::new(), 0).is_err());
}
