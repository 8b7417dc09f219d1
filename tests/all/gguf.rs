//! GGUF in and out: files written by llama.cpp's own Python writer and quantizer (the `gguf`
//! package, `tools/make_gguf_fixtures.py`) load with the logits transformers computes from their
//! dequantized tensors; phi-zoo's files read back tensor for tensor and match that writer's
//! bytes; broken files fail naming the file and the field.

use std::path::{Path, PathBuf};

use phi_zoo::backend::Cpu;
use phi_zoo::common::checkpoint::{GgmlType, GgufFile, MetaValue};
use phi_zoo::{Checkpoint, KeyLayout, Phi, PhiError, Projection, WeightFormat, save_gguf};
use serde_json::Value;

use crate::fixtures::{TOLERANCE, layout_dir, max_abs_diff, root, to_vec};

/// The files `tools/make_gguf_fixtures.py` writes, with their matrices' format.
const FILES: [(&str, WeightFormat); 5] = [
    ("f32.gguf", WeightFormat::F32),
    ("f16.gguf", WeightFormat::F16),
    ("bf16.gguf", WeightFormat::Bf16),
    ("q8_0.gguf", WeightFormat::Q8_0),
    ("q4_0.gguf", WeightFormat::Q4_0),
];

fn gguf_dir() -> PathBuf {
    root().join("gguf")
}

fn reference() -> Value {
    let path = gguf_dir().join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each file loads (config, layout, tokenizer from the file) and, dequantized to f32, gives
/// transformers' logits on the same dequantized tensors; loaded in its own format, the weights
/// are the file's bytes unchanged and the logits stay within the packed kernels' rounding.
#[test]
fn llama_cpp_written_files_give_the_logits_of_their_dequantized_tensors() {
    let device = Default::default();
    let reference = reference();
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    for (name, format) in FILES {
        let path = gguf_dir().join(name);
        let entry = &reference["files"][name];
        let expected = flatten(&entry["logits"]);
        let checkpoint = open(&path);
        let fused_qkv = entry["fused_qkv"].as_bool().unwrap();
        assert_eq!(checkpoint.layout(), KeyLayout::Gguf { fused_qkv }, "{name}");
        let config = checkpoint.config();
        assert_eq!(
            (
                config.vocab_size,
                config.hidden_size,
                config.num_hidden_layers
            ),
            (96, 32, 2)
        );
        assert_eq!(config.partial_rotary_factor, 0.5);
        assert_eq!(config.eos_token_id, Some(95));

        let model: Phi<Cpu> = checkpoint.load(&device).unwrap();
        let logits = to_vec(model.forward_ids(&ids, &device).unwrap());
        let diff = max_abs_diff(&logits, &expected);
        eprintln!("{name}: dequantized to f32 {diff:.2e}");
        assert!(diff < TOLERANCE, "{name}: {diff}");

        let packed: Phi<Cpu> = checkpoint.load_as(&device, format).unwrap();
        assert_eq!(packed.weight_format(), format);
        let file = GgufFile::open(&path).unwrap();
        let (ty, stored) = file.read_stored("blk.1.ffn_down.weight", None).unwrap();
        assert_eq!(ty, GgmlType::of_format(format));
        if format.is_packed() {
            let layer = packed.model.layers[1].projection(Projection::Fc2);
            assert_eq!(
                layer.packed.as_ref().unwrap().bytes(),
                &stored[..],
                "{name}: used as stored"
            );
        }
        let packed_logits = to_vec(packed.forward_ids(&ids, &device).unwrap());
        let diff = max_abs_diff(&packed_logits, &expected);
        eprintln!("{name}: in its own format {diff:.2e}");
        // Q8_0 and Q4_0 products quantize their inputs to 16 bits per block (ops/cpu/quant_dot).
        // Measured 3.4e-4 (Q8_0) and 3.2e-4 (Q4_0).
        let bound = if format.block_values() > 1 {
            1e-3
        } else {
            TOLERANCE
        };
        assert!(diff < bound, "{name} as {format}: {diff}");
    }
}

/// The file's tokenizer: its vocabulary, merges, and control token, as llama.cpp stores them.
#[test]
fn the_tokenizer_comes_from_the_file() {
    let checkpoint = open(&gguf_dir().join("q8_0.gguf"));
    let tokenizer = checkpoint.tokenizer().unwrap().expect("the file has one");
    assert_eq!(tokenizer.len(), 96);
    // `!`..`|` are ids 0..91, `Ġ` 92, `Ġt` 93, `he` 94, `<|endoftext|>` 95.
    let id = |c: char| c as u32 - '!' as u32;
    assert_eq!(
        tokenizer.encode("the tea<|endoftext|>").unwrap(),
        [id('t'), 94, 93, id('e'), id('a'), 95]
    );
    assert_eq!(tokenizer.decode(&[id('t'), 94, 93]).unwrap(), "the t");
    assert_eq!(tokenizer.eos_id(), Some(95));
}

/// `Q6_K` (llama.cpp's type for a Q4_0 model's LM head) dequantizes as gguf's reference does,
/// bit for bit.
#[test]
fn q6_k_blocks_dequantize_as_llama_cpp_does() {
    let reference = reference();
    let bytes: Vec<u8> = serde_json::from_value(reference["q6_k"]["bytes"].clone()).unwrap();
    let expected: Vec<f32> = flatten(&reference["q6_k"]["values"]);
    let values = GgmlType::Q6K.to_f32(&bytes, 256);
    assert_eq!(values.len(), expected.len());
    for (i, (v, e)) in values.iter().zip(&expected).enumerate() {
        assert_eq!(v.to_bits(), e.to_bits(), "value {i}: {v} against {e}");
    }
}

/// phi-zoo's export of the fixture in each format: read back by phi-zoo, every tensor is the
/// model's (packed in the file's type); its bytes equal those of llama.cpp's writer and
/// quantizer from the same weights; the model loaded from it computes the same logits.
#[test]
fn exported_files_read_back_and_match_llama_cpps_writer() {
    let device = Default::default();
    let source = open(&layout_dir("tiny_p05", "v3"));
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference()["input_ids"].clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in FILES {
        let model: Phi<Cpu> = source.load_as(&device, format).unwrap();
        let tokenizer = open(&gguf_dir().join(name)).tokenizer().unwrap();
        let path = dir.path().join(name);
        save_gguf(&model, &path, format, tokenizer.as_ref()).unwrap();

        let ours = GgufFile::open(&path).unwrap();
        let theirs = GgufFile::open(&gguf_dir().join(name)).unwrap();
        let mut compared = 0;
        for (key, shape) in ours.shapes() {
            let (ty, bytes) = ours.read_stored(key, None).unwrap();
            let expected_ty = if shape.len() == 2 {
                GgmlType::of_format(format)
            } else {
                GgmlType::F32
            };
            assert_eq!(ty, expected_ty, "{name}: {key}");
            // The fused file stores q, k, v as one tensor; compare the rest.
            if theirs.tensor_type(key).is_some() {
                let (their_ty, their_bytes) = theirs.read_stored(key, None).unwrap();
                assert_eq!(ty, their_ty, "{name}: {key}");
                assert!(
                    bytes == their_bytes,
                    "{name}: {key} differs from gguf's writer"
                );
                compared += 1;
            }
        }
        assert!(compared >= 19, "{name}: {compared} tensors compared");
        for key in [
            "general.architecture",
            "tokenizer.ggml.tokens",
            "phi2.block_count",
        ] {
            assert_eq!(
                ours.metadata().get(key),
                theirs.metadata().get(key),
                "{name}: {key}"
            );
        }

        let reloaded = open(&path);
        // Dropout is training-only and not stored; the special ids are the tokenizer's.
        let expected = phi_zoo::PhiConfig {
            resid_pdrop: 0.0,
            bos_token_id: Some(95),
            eos_token_id: Some(95),
            ..source.config().clone()
        };
        assert_eq!(reloaded.config(), &expected, "{name}");
        // The embedding is stored in the file's type too (as llama.cpp's converter stores it),
        // so the reloaded model is the model of the gguf writer's file, not the source.
        let again: Phi<Cpu> = reloaded.load_as(&device, format).unwrap();
        let theirs: Phi<Cpu> = open(&gguf_dir().join(name))
            .load_as(&device, format)
            .unwrap();
        let a = to_vec(again.forward_ids(&ids, &device).unwrap());
        let b = to_vec(theirs.forward_ids(&ids, &device).unwrap());
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}: reloaded logits");
    }
}

/// What has no place in `phi2` GGUF is refused by name: q/k LayerNorms, rows that are not
/// whole blocks.
#[test]
fn export_refuses_what_gguf_cannot_hold() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let qk: Phi<Cpu> = open(&layout_dir("tiny_qk_gqa", "v3"))
        .load(&device)
        .unwrap();
    let err = save_gguf(&qk, dir.path().join("qk.gguf"), WeightFormat::F32, None).unwrap_err();
    assert!(err.to_string().contains("qk_layernorm"), "{err}");
    let p04: Phi<Cpu> = open(&layout_dir("tiny_p04", "v3")).load(&device).unwrap();
    let err = save_gguf(&p04, dir.path().join("p04.gguf"), WeightFormat::Q8_0, None).unwrap_err();
    assert!(err.to_string().contains("whole Q8_0 blocks"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// A copy of `q8_0.gguf` with `edit` applied to its bytes, opened.
fn open_edited(edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf, PhiError) {
    let mut bytes = std::fs::read(gguf_dir().join("q8_0.gguf")).unwrap();
    edit(&mut bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = match Checkpoint::open(&path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    };
    (dir, path, err)
}

fn find(bytes: &[u8], what: &[u8]) -> usize {
    bytes
        .windows(what.len())
        .position(|w| w == what)
        .unwrap_or_else(|| panic!("{} not in the file", String::from_utf8_lossy(what)))
}

/// A change to a file's bytes.
type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

/// Truncations, an unknown or unsupported tensor type, another architecture, counts that lie:
/// each an error naming the file and what is wrong, without a panic or a huge allocation.
#[test]
fn broken_gguf_files_are_refused_by_name() {
    let whole = std::fs::read(gguf_dir().join("q8_0.gguf")).unwrap();
    let header_end = find(&whole, b"output_norm.bias") + 40;
    for cut in [
        0,
        3,
        7,
        20,
        100,
        600,
        header_end,
        whole.len() - 1000,
        whole.len() - 1,
    ] {
        let (_dir, path, err) = open_edited(|b| b.truncate(cut));
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("truncated"),
            "cut at {cut}: {message}"
        );
    }
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "a tensor type phi-zoo does not read",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"blk.0.ffn_up.weight") + 19;
                let dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
                let ty = at + 4 + 8 * dims;
                b[ty..ty + 4].copy_from_slice(&12u32.to_le_bytes());
            }),
            &["blk.0.ffn_up.weight", "Q4_K"],
        ),
        (
            "an unknown tensor type",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"output.weight") + 13;
                let ty = at + 4 + 16;
                b[ty..ty + 4].copy_from_slice(&77u32.to_le_bytes());
            }),
            &["output.weight", "unknown tensor type 77"],
        ),
        (
            "another architecture",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"phi2");
                b[at..at + 4].copy_from_slice(b"phi3");
            }),
            &["general.architecture", "phi3"],
        ),
        (
            "a metadata count that lies",
            Box::new(|b: &mut Vec<u8>| b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes())),
            &["metadata entries"],
        ),
        (
            "a tensor count that lies",
            Box::new(|b: &mut Vec<u8>| b[8..16].copy_from_slice(&u64::MAX.to_le_bytes())),
            &["tensors"],
        ),
        (
            "an array count that lies",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"tokenizer.ggml.tokens") + 21 + 8;
                b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            }),
            &["tokenizer.ggml.tokens", "items"],
        ),
        (
            "a string length that lies",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"general.architecture") + 20 + 4;
                b[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
            }),
            &["general.architecture", "more than the file has left"],
        ),
        (
            "a tensor whose data lies past the end",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"output.weight") + 13;
                let offset = at + 4 + 16 + 4;
                b[offset..offset + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
            }),
            &["output.weight", "truncated"],
        ),
        (
            "a size too large for any model",
            Box::new(|b: &mut Vec<u8>| {
                let at = find(b, b"phi2.block_count") + 16 + 4;
                b[at..at + 4].copy_from_slice(&4000u32.to_le_bytes());
            }),
            &["phi2.block_count", "4000"],
        ),
    ];
    for (what, edit, needles) in cases {
        let (_dir, path, err) = open_edited(edit);
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{what}: {message}"
        );
        for needle in needles {
            assert!(message.contains(needle), "{what}: {message}");
        }
    }
}

/// The reader's metadata values, as the `gguf` package wrote them.
#[test]
fn metadata_reads_as_written() {
    let file = GgufFile::open(&gguf_dir().join("f32.gguf")).unwrap();
    let meta = file.metadata();
    assert_eq!(file.version(), 3);
    assert_eq!(meta["general.architecture"], MetaValue::Str("phi2".into()));
    assert_eq!(meta["phi2.embedding_length"].as_u64(), Some(32));
    assert_eq!(
        meta["phi2.attention.layer_norm_epsilon"].as_f64(),
        Some(1e-5)
    );
    assert_eq!(meta["tokenizer.ggml.merges"].as_array().unwrap().len(), 2);
}
