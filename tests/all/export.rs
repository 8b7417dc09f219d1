//! Export to HF V3 safetensors + config.json, and back.

use phi_zoo::backend::Cpu;
use phi_zoo::{Checkpoint, KeyLayout, PhiConfig, StoredDType, save_hf};

use crate::fixtures::{FIXTURES, Reference, load, max_abs_diff, to_vec};

#[test]
fn export_then_load_gives_the_same_logits() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        // Start from the oldest layout the fixture has, so export also converts layouts.
        let source = reference.layouts.last().unwrap();
        let model = load(fixture, source);
        let before = to_vec(model.forward_ids(&reference.ids, &device).unwrap());

        let dir = tempfile::tempdir().unwrap();
        save_hf(&model, dir.path(), StoredDType::F32).unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(checkpoint.layout(), KeyLayout::V3);
        assert_eq!(
            checkpoint.config(),
            model.config(),
            "{fixture}: config survives the round trip"
        );
        let after = to_vec(
            checkpoint
                .load::<Cpu>(&device)
                .unwrap()
                .forward_ids(&reference.ids, &device)
                .unwrap(),
        );
        assert_eq!(
            before, after,
            "{fixture} from {source}: f32 export must be exact"
        );

        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only model.safetensors and config.json remain: {names:?}"
        );
    }
}

#[test]
fn exported_file_is_valid_safetensors_with_transformers_names() {
    let model = load("tiny_qk_gqa", "v3");
    let dir = tempfile::tempdir().unwrap();
    save_hf(&model, dir.path(), StoredDType::F32).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let exported =
        safetensors::SafeTensors::deserialize(&bytes).expect("the reference reader accepts it");
    let original_bytes =
        std::fs::read(crate::fixtures::layout_dir("tiny_qk_gqa", "v3").join("model.safetensors"))
            .unwrap();
    let original = safetensors::SafeTensors::deserialize(&original_bytes).unwrap();
    let mut names = exported.names();
    let mut expected = original.names();
    names.sort();
    expected.sort();
    assert_eq!(
        names, expected,
        "same keys as transformers' own save_pretrained"
    );
    for name in expected {
        let (a, b) = (
            exported.tensor(name).unwrap(),
            original.tensor(name).unwrap(),
        );
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert_eq!(a.data(), b.data(), "{name}: bit-identical f32 values");
    }
    let config = PhiConfig::from_file(dir.path().join("config.json")).unwrap();
    assert_eq!(&config, model.config());
}

#[test]
fn half_precision_export_loads_back_close() {
    let device = Default::default();
    let reference = Reference::load("tiny_p04");
    let model = load("tiny_p04", "v3");
    let before = to_vec(model.forward_ids(&reference.ids, &device).unwrap());
    for dtype in [StoredDType::F16, StoredDType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        save_hf(&model, dir.path(), dtype).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(
            text.contains(dtype.torch_name()),
            "config.json names the stored dtype"
        );
        let reloaded = Checkpoint::open(dir.path())
            .unwrap()
            .load::<Cpu>(&device)
            .unwrap();
        let after = to_vec(reloaded.forward_ids(&reference.ids, &device).unwrap());
        let d = max_abs_diff(&before, &after);
        // Rounding every weight to 8 (bf16) or 11 (f16) bits moves logits of magnitude ~5 by a few 1e-2.
        assert!(d < 0.15, "{dtype:?}: {d}");
        assert!(d > 0.0, "{dtype:?}: rounding must show");
    }
}
