//! Broken checkpoints and configs: each is an error naming the file and the key or field, never a panic.

use std::path::{Path, PathBuf};

use phi_zoo::{Checkpoint, PhiError};
use safetensors::tensor::{Dtype, TensorView};
use tempfile::TempDir;

use crate::fixtures::{copy_dir, layout_dir};

/// A copy of a fixture folder to break.
fn copy_of(fixture: &str, layout: &str) -> TempDir {
    copy_dir(&layout_dir(fixture, layout))
}

fn open_err(path: &Path) -> PhiError {
    match Checkpoint::open(path) {
        Ok(_) => panic!("{} opened but is broken", path.display()),
        Err(e) => {
            eprintln!("{e}");
            e
        }
    }
}

/// Rewrites a safetensors file through the reference implementation after `edit` changes its tensors.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn weights_file(dir: &TempDir) -> PathBuf {
    dir.path().join("model.safetensors")
}

#[test]
fn truncated_safetensors_names_file_and_tensor() {
    let dir = copy_of("tiny_p05", "v3");
    let path = weights_file(&dir);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    match open_err(dir.path()) {
        PhiError::Weights { file, key, message } => {
            assert_eq!(file, path);
            assert!(key.is_some(), "names the tensor whose data is cut off");
            assert!(message.contains("truncated"), "{message}");
        }
        e => panic!("wrong error: {e}"),
    }
    for keep in [3, 8, 40] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        assert!(matches!(open_err(dir.path()), PhiError::Weights { file, .. } if file == path));
    }
}

#[test]
fn header_that_lies_about_sizes_names_the_tensor() {
    let dir = copy_of("tiny_p05", "v3");
    let path = weights_file(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(header).unwrap();
    value["model.final_layernorm.bias"]["shape"] = serde_json::json!([33]);
    let mut new_header = serde_json::to_vec(&value).unwrap();
    while !new_header.len().is_multiple_of(8) {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    match open_err(dir.path()) {
        PhiError::Weights { key, message, .. } => {
            assert_eq!(key.as_deref(), Some("model.final_layernorm.bias"));
            assert!(message.contains("needs 132"), "{message}");
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn missing_extra_and_misshapen_tensors_are_all_named() {
    let dir = copy_of("tiny_p05", "v3");
    rewrite(&weights_file(&dir), |tensors| {
        tensors.retain(|(n, ..)| n != "model.layers.1.mlp.fc2.weight" && n != "lm_head.bias");
        tensors.push((
            "model.layers.7.mlp.fc9.weight".into(),
            Dtype::F32,
            vec![2],
            vec![0; 8],
        ));
        let bias = tensors
            .iter_mut()
            .find(|(n, ..)| n == "model.layers.0.self_attn.q_proj.bias")
            .unwrap();
        bias.2 = vec![33];
        bias.3 = vec![0; 33 * 4];
    });
    match open_err(dir.path()) {
        PhiError::Mismatch {
            missing,
            unexpected,
            wrong_shape,
            ..
        } => {
            assert_eq!(missing, ["model.layers.1.mlp.fc2.weight", "lm_head.bias"]);
            assert_eq!(unexpected, ["model.layers.7.mlp.fc9.weight"]);
            assert_eq!(wrong_shape.len(), 1);
            assert_eq!(wrong_shape[0].key, "model.layers.0.self_attn.q_proj.bias");
            assert_eq!(
                (
                    wrong_shape[0].expected.clone(),
                    wrong_shape[0].found.clone()
                ),
                (vec![32], vec![33])
            );
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn fused_layouts_report_their_own_key_names() {
    let dir = copy_of("tiny_gqa", "v2");
    rewrite(&weights_file(&dir), |tensors| {
        tensors.retain(|(n, ..)| n != "transformer.h.2.mixer.Wqkv.bias");
    });
    match open_err(dir.path()) {
        PhiError::Mismatch { missing, .. } => {
            assert_eq!(missing, ["transformer.h.2.mixer.Wqkv.bias"])
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn a_config_that_disagrees_with_the_weights_names_the_field() {
    let dir = copy_of("tiny_p04", "v3");
    let path = dir.path().join("config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    for (from, to, field, stored) in [
        (
            "\"intermediate_size\": 80",
            "\"intermediate_size\": 96",
            "intermediate_size",
            "model.layers.0.mlp.fc1.weight has shape [80, 40]",
        ),
        (
            "\"vocab_size\": 100",
            "\"vocab_size\": 128",
            "vocab_size",
            "model.embed_tokens.weight has shape [100, 40]",
        ),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 3",
            "num_hidden_layers",
            "the weights hold 2 decoder layers",
        ),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1",
            "num_hidden_layers",
            "the weights hold 2 decoder layers",
        ),
    ] {
        assert!(original.contains(from), "{from}");
        std::fs::write(&path, original.replace(from, to)).unwrap();
        match open_err(dir.path()) {
            PhiError::Config {
                field: f, message, ..
            } => {
                assert_eq!(f, field);
                assert!(message.contains(stored), "{message}");
            }
            e => panic!("wrong error for {field}: {e}"),
        }
    }
}

#[test]
fn malformed_configs_name_file_and_field() {
    let dir = copy_of("tiny_p05", "v3");
    let path = dir.path().join("config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    for (text, field) in [
        (
            original.replace("\"hidden_size\": 32", "\"hidden_size\": \"32\""),
            "hidden_size",
        ),
        (
            original.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
            "num_attention_heads",
        ),
        (original.replace("\"vocab_size\": 96,", ""), "vocab_size"),
        (original[..original.len() / 2].to_owned(), "(file)"),
    ] {
        std::fs::write(&path, text).unwrap();
        match open_err(dir.path()) {
            PhiError::Config {
                origin, field: f, ..
            } => {
                assert_eq!(f, field);
                assert_eq!(origin, path.display().to_string());
            }
            e => panic!("wrong error for {field}: {e}"),
        }
    }
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(open_err(dir.path()), PhiError::Io { path: p, .. } if p == path));
}

#[test]
fn broken_pytorch_files_are_errors() {
    let dir = copy_of("tiny_p04", "v3_bin");
    let path = dir.path().join("pytorch_model.bin");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [2, 100, bytes.len() / 2, bytes.len() - 30] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        match Checkpoint::open(dir.path())
            .and_then(|c| c.load::<phi_zoo::backend::Cpu>(&Default::default()))
        {
            Err(PhiError::Weights { file, .. }) => assert_eq!(file, path),
            Err(e) => panic!("wrong error after truncating to {keep} bytes: {e}"),
            Ok(_) => panic!("loaded a .bin truncated to {keep} bytes"),
        }
    }
}

#[test]
fn broken_shard_sets_are_errors() {
    let dir = copy_of("tiny_p05", "v3_sharded");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert!(
        matches!(open_err(dir.path()), PhiError::Io { path, .. } if path.ends_with("model-00002-of-00002.safetensors"))
    );

    let dir = copy_of("tiny_p05", "v3_sharded");
    rewrite(&dir.path().join("model-00001-of-00002.safetensors"), |t| {
        t.retain(|(n, ..)| n != "model.embed_tokens.weight")
    });
    match open_err(dir.path()) {
        PhiError::Weights { key, file, .. } => {
            assert_eq!(key.as_deref(), Some("model.embed_tokens.weight"));
            assert!(file.ends_with("model-00001-of-00002.safetensors"));
        }
        e => panic!("wrong error: {e}"),
    }

    let dir = copy_of("tiny_p05", "v3_sharded");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    assert!(matches!(open_err(dir.path()), PhiError::Weights { .. }));
}

#[test]
fn folders_without_weights_or_layout_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        layout_dir("tiny_p05", "v3").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    assert!(matches!(open_err(dir.path()), PhiError::Weights { .. }));

    let dir = copy_of("tiny_p05", "v3");
    rewrite(&weights_file(&dir), |t| {
        t.iter_mut().for_each(|(n, ..)| *n = format!("foo.{n}"))
    });
    match open_err(dir.path()) {
        PhiError::Weights { message, .. } => assert!(message.contains("key layout"), "{message}"),
        e => panic!("wrong error: {e}"),
    }
}
