//! Hub ids resolved offline against a folder laid out like huggingface_hub's cache.

use std::path::Path;

use phi_zoo::{Checkpoint, HubOptions, PhiError, resolve_hub};

use crate::fixtures::{Reference, TOLERANCE, layout_dir, max_abs_diff, to_vec};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `models--org--name/refs/main` → COMMIT, files under `snapshots/COMMIT/` (blobs are symlinks in
/// Python's cache; plain files resolve the same way).
fn fake_cache(source: &Path) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--microsoft--phi-tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snapshot.join(path.file_name().unwrap())).unwrap();
    }
    cache
}

#[test]
fn hub_id_resolves_from_the_cache_without_network() {
    let cache = fake_cache(&layout_dir("tiny_p05", "v3_sharded"));
    let options = HubOptions {
        cache_dir: Some(cache.path().to_owned()),
        offline: true,
    };
    let reference = Reference::load("tiny_p05");
    for revision in [None, Some("main"), Some(COMMIT)] {
        let dir = resolve_hub("microsoft/phi-tiny", revision, &options).unwrap();
        let device = Default::default();
        let model = Checkpoint::open(&dir)
            .unwrap()
            .load::<phi_zoo::backend::Cpu>(&device)
            .unwrap();
        let logits = to_vec(model.forward_ids(&reference.ids, &device).unwrap());
        assert!(max_abs_diff(&logits, &reference.logits) <= TOLERANCE);
    }
}

#[test]
fn missing_hub_files_offline_are_clear_errors() {
    let cache = fake_cache(&layout_dir("tiny_p05", "v3_sharded"));
    std::fs::remove_file(
        cache
            .path()
            .join("models--microsoft--phi-tiny/snapshots")
            .join(COMMIT)
            .join("model-00002-of-00002.safetensors"),
    )
    .unwrap();
    let options = HubOptions {
        cache_dir: Some(cache.path().to_owned()),
        offline: true,
    };
    match resolve_hub("microsoft/phi-tiny", None, &options) {
        Err(PhiError::Hub(message)) => assert!(
            message.contains("model-00002-of-00002.safetensors"),
            "{message}"
        ),
        other => panic!("expected a hub error, got {other:?}"),
    }
    assert!(matches!(
        resolve_hub("microsoft/absent", None, &options),
        Err(PhiError::Hub(_))
    ));
}
