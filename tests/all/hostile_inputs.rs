//! Hostile inputs through every loader entry point (a folder, a weights file, a sharded index, a
//! PyTorch `.bin`), each run by `examples/logits` or `examples/generate` in a child process whose
//! address space is capped: an unbounded allocation fails the test, not the machine. Each must
//! end in a clean error (exit code 1, no panic) that names the culprit.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::fixtures::{copy_dir, example_binary, layout_dir, root};

/// The children's address-space cap. A tiny model loads in a few tens of MB; the loader's old
/// failure grew past 23 GB.
const ADDRESS_SPACE: u64 = 1 << 30;

/// The peak resident memory allowed for refusing an absurd config.
const REFUSAL_RSS_BYTES: i64 = 100 << 20;

struct Outcome {
    status: ExitStatus,
    stderr: String,
    /// Peak resident set size in bytes.
    max_rss: i64,
}

/// The example and arguments `capped_child` runs, as a JSON array.
const CAPPED_COMMAND: &str = "PHI_ZOO_CAPPED_COMMAND";

/// Runs an example under the address-space cap; its exit status, stderr and peak RSS.
///
/// A child forked from this test process would start with this process's resident pages in its
/// peak RSS (fork maps them, and exec keeps the old high-water mark), and the tests running beside
/// this one make that tens of MB. So a small process of our own (this test binary running only
/// `capped_child`) forks the example and reports what `wait4` says of it.
fn run_capped(binary: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile_inputs::capped_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CAPPED_COMMAND, json!([binary, args]).to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l.split_once("capped child: ")?.1).ok())
        .unwrap_or_else(|| {
            panic!(
                "capped_child reported nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    Outcome {
        status: ExitStatus::from_raw(report["status"].as_i64().unwrap() as i32),
        stderr: report["stderr"].as_str().unwrap().to_string(),
        max_rss: report["max_rss"].as_i64().unwrap(),
    }
}

/// The small process `run_capped` starts: runs the command in `PHI_ZOO_CAPPED_COMMAND` under
/// the cap and prints its outcome as one JSON line. Does nothing unless started by it.
#[test]
#[ignore = "started by run_capped, in a child process"]
fn capped_child() {
    let Ok(command) = std::env::var(CAPPED_COMMAND) else {
        return;
    };
    let command: Value = serde_json::from_str(&command).unwrap();
    let binary = PathBuf::from(command[0].as_str().unwrap());
    let args: Vec<&str> = command[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let outcome = fork_capped(&binary, &args);
    println!(
        "capped child: {}",
        json!({
            "status": outcome.status.into_raw(),
            "stderr": outcome.stderr,
            "max_rss": outcome.max_rss,
        })
    );
}

// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn fork_capped(binary: &Path, args: &[&str]) -> Outcome {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // wait4 rather than Child::wait: it reports this child's own peak RSS.
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain out-parameters; `usage` is fully written by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    Outcome {
        status: ExitStatus::from_raw(status),
        stderr,
        max_rss: usage.ru_maxrss * 1024,
    }
}

/// Asserts a clean refusal that mentions every one of `names`.
fn assert_refused(outcome: &Outcome, case: &str, names: &[&str]) {
    eprintln!("{case}: {}", outcome.stderr.lines().next().unwrap_or(""));
    assert_eq!(
        outcome.status.code(),
        Some(1),
        "{case}: expected a clean error exit, got {} (a signal means a crash or the memory cap):\n{}",
        outcome.status,
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("panicked"),
        "{case}: panicked:\n{}",
        outcome.stderr
    );
    for name in names {
        assert!(
            outcome.stderr.contains(name),
            "{case}: the error does not name {name}:\n{}",
            outcome.stderr
        );
    }
}

/// One way into the loader: a copy of a fixture and the `--model` argument that opens it.
struct EntryPoint {
    name: &'static str,
    dir: TempDir,
    /// The `--model` argument (the folder, or a file in it).
    model: PathBuf,
    /// The weights file the weight cases break.
    weights: PathBuf,
}

/// The decoder layers every entry point's weights hold.
const LAYERS: usize = 2;

impl EntryPoint {
    fn all() -> Vec<EntryPoint> {
        // A copy of `from`, opened as `--model` (the folder, or `file` in it), with `weights`
        // the file the weight cases break.
        let entry = |name, from: PathBuf, file: Option<&str>, weights: &str| {
            let dir = copy_dir(&from);
            EntryPoint {
                name,
                model: file.map_or(dir.path().to_owned(), |f| dir.path().join(f)),
                weights: dir.path().join(weights),
                dir,
            }
        };
        let (v3, sharded) = (
            layout_dir("tiny_p05", "v3"),
            layout_dir("tiny_p05", "v3_sharded"),
        );
        vec![
            entry("folder", v3.clone(), None, "model.safetensors"),
            entry("file", v3, Some("model.safetensors"), "model.safetensors"),
            entry(
                "sharded index",
                sharded,
                None,
                "model-00001-of-00002.safetensors",
            ),
            entry(
                ".bin",
                root().join("formats/zip_p2"),
                None,
                "pytorch_model.bin",
            ),
        ]
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn logits(&self) -> Outcome {
        run_capped(
            &example_binary("logits"),
            &["--model", self.model.to_str().unwrap(), "--ids", "1,2,3"],
        )
    }
}

/// Sets `field` to `value` wherever the config holds it (the nested dialect keeps rotary
/// fields under `rope_parameters`).
fn set_field(config: &mut Value, field: &str, value: Value) {
    if let Some(nested) = config.get_mut("rope_parameters")
        && nested.get(field).is_some()
    {
        nested[field] = value.clone();
    }
    config[field] = value;
}

#[test]
fn absurd_and_malformed_configs_are_refused_by_field_at_every_entry_point() {
    let absurd: [(&str, Value); 9] = [
        ("num_hidden_layers", json!(1_000_000_000u64)),
        ("vocab_size", json!(1_000_000_000_000u64)),
        ("hidden_size", json!(1_000_000_000u64)),
        ("intermediate_size", json!(1_000_000_000_000u64)),
        ("max_position_embeddings", json!(1_000_000_000_000u64)),
        ("hidden_size", json!(0)),
        ("num_attention_heads", json!(7)),
        ("layer_norm_eps", json!(-1e-5)),
        ("partial_rotary_factor", json!(2.0)),
    ];
    for entry in EntryPoint::all() {
        let original = std::fs::read_to_string(entry.config_path()).unwrap();
        let value: Value = serde_json::from_str(&original).unwrap();
        for (field, bad) in &absurd {
            let mut config = value.clone();
            set_field(&mut config, field, bad.clone());
            std::fs::write(entry.config_path(), config.to_string()).unwrap();
            let outcome = entry.logits();
            let case = format!("{}: {field} = {bad}", entry.name);
            assert_refused(&outcome, &case, &[&format!("`{field}`")]);
            if *field == "num_hidden_layers" {
                assert_refused(
                    &outcome,
                    &case,
                    &[&format!("the weights hold {LAYERS} decoder layers")],
                );
                assert!(
                    outcome.max_rss < REFUSAL_RSS_BYTES,
                    "{case}: peak RSS {} MB",
                    outcome.max_rss >> 20
                );
            }
        }
        for (text, what) in [
            ("[1, 2]".to_owned(), "an array"),
            (original[..original.len() / 2].to_owned(), "truncated JSON"),
        ] {
            std::fs::write(entry.config_path(), text).unwrap();
            let case = format!("{}: config.json {what}", entry.name);
            assert_refused(&entry.logits(), &case, &["config.json", "(file)"]);
        }
        std::fs::remove_file(entry.config_path()).unwrap();
        let case = format!("{}: no config.json", entry.name);
        assert_refused(&entry.logits(), &case, &["config.json"]);
        std::fs::write(entry.config_path(), &original).unwrap();
    }
}

/// A safetensors file rebuilt from `bytes` with its header JSON replaced by `edit`'s.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let json = header.to_string();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// The first tensor's name in a safetensors header, and the second's.
fn two_tensors(header: &Value) -> (String, String) {
    let mut names = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__");
    (names.next().unwrap().clone(), names.next().unwrap().clone())
}

#[test]
fn broken_weights_files_are_refused_by_file_and_tensor_at_every_entry_point() {
    for entry in EntryPoint::all() {
        let original = std::fs::read(&entry.weights).unwrap();
        let file_name = entry.weights.file_name().unwrap().to_str().unwrap();
        let mut random = vec![0u8; 4096];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for byte in &mut random {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let mut cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
            ("empty", vec![], vec![]),
            ("random bytes", random, vec![]),
            (
                "cut in half",
                original[..original.len() / 2].to_vec(),
                vec![],
            ),
        ];
        if entry.name != ".bin" {
            let mut huge = original.clone();
            huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
            cases.push(("header length 2^60", huge, vec!["implausible".into()]));
            let mut past_end = original.clone();
            past_end[..8].copy_from_slice(&(original.len() as u64).to_le_bytes());
            cases.push(("header past the end", past_end, vec!["truncated".into()]));
            let mut not_json = original.clone();
            not_json[8] = b'[';
            not_json[9] = b'?';
            cases.push(("header not JSON", not_json, vec!["not valid JSON".into()]));
            let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
            let header: Value = serde_json::from_slice(&original[8..8 + n]).unwrap();
            let (first, second) = two_tensors(&header);
            cases.push((
                "offsets past the data",
                with_header(&original, |h| {
                    let end = h[&first]["data_offsets"][1].as_u64().unwrap();
                    let len = end - h[&first]["data_offsets"][0].as_u64().unwrap();
                    h[&first]["data_offsets"] = json!([end + 1_000_000, end + 1_000_000 + len]);
                }),
                vec![format!("`{first}`")],
            ));
            cases.push((
                "overlapping offsets",
                with_header(&original, |h| {
                    let a = h[&first]["data_offsets"].clone();
                    let b = h[&second]["data_offsets"].clone();
                    let len = b[1].as_u64().unwrap() - b[0].as_u64().unwrap();
                    let start = a[0].as_u64().unwrap();
                    h[&second]["data_offsets"] = json!([start, start + len]);
                }),
                vec!["overlap".into()],
            ));
            cases.push((
                "an integer dtype",
                with_header(&original, |h| h[&first]["dtype"] = json!("I32")),
                vec![format!("`{first}`"), "I32".into()],
            ));
        }
        for (what, bytes, names) in cases {
            std::fs::write(&entry.weights, bytes).unwrap();
            let case = format!("{}: {file_name} {what}", entry.name);
            let mut expected = vec![file_name];
            expected.extend(names.iter().map(String::as_str));
            assert_refused(&entry.logits(), &case, &expected);
        }
        std::fs::write(&entry.weights, &original).unwrap();
    }
}

#[test]
fn broken_shard_indexes_are_refused_by_file() {
    let entry = EntryPoint::all()
        .into_iter()
        .find(|e| e.name == "sharded index")
        .unwrap();
    let index = entry.dir.path().join("model.safetensors.index.json");
    let original = std::fs::read_to_string(&index).unwrap();
    let value: Value = serde_json::from_str(&original).unwrap();
    let key = value["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut escaping = value.clone();
    escaping["weight_map"][&key] = json!("../model.safetensors");
    for (what, text, name) in [
        ("not JSON", "{\"weight_map\": ".to_owned(), "not valid JSON"),
        ("no map", "{\"weight_map\": 3}".to_owned(), "weight_map"),
        ("a path outside", escaping.to_string(), "not a file name"),
    ] {
        std::fs::write(&index, text).unwrap();
        let case = format!("shard index {what}");
        assert_refused(
            &entry.logits(),
            &case,
            &["model.safetensors.index.json", name],
        );
    }
}

#[test]
fn bad_ids_and_generation_options_are_refused_by_name() {
    let model = layout_dir("tiny_p05", "v3");
    let model = model.to_str().unwrap();
    let logits = example_binary("logits");
    for (ids, name) in [
        ("1,4000", "4000"),
        ("1,-1", "-1"),
        ("", "row 0"),
        ("1,2;3", "row"),
    ] {
        let case = format!("--ids {ids:?}");
        assert_refused(
            &run_capped(&logits, &["--model", model, "--ids", ids]),
            &case,
            &[name],
        );
    }
    let generate = example_binary("generate");
    let long: Vec<String> = (0..200).map(|i| (i % 90).to_string()).collect();
    let long = long.join(",");
    for (extra, name) in [
        (vec!["--prompt-ids", long.as_str()], "context"),
        (vec!["--prompt-ids", "1,2", "--top-p", "1.5"], "top_p"),
        (
            vec!["--prompt-ids", "1,2", "--temperature", "NaN"],
            "temperature",
        ),
    ] {
        let mut args = vec!["--model", model, "--max-new-tokens", "4"];
        args.extend(&extra);
        let case = extra.join(" ");
        assert_refused(&run_capped(&generate, &args), &case, &[name]);
    }
}
