//! The real checkpoints against transformers' integration-test numbers (tests/golden_logits.json,
//! source: transformers
//! tests/models/phi/test_modeling_phi.py, PhiIntegrationTest, float32, no mask).
//!
//! Ignored by default: run with `PHI_ZOO_CHECKPOINTS=/path/to/folder cargo test --release -- --ignored golden`,
//! where the folder holds `phi-1`, `phi-1_5` and `phi-2` subfolders (hub snapshots: config.json +
//! weights). Each needs several GB of memory in f32.

use std::path::PathBuf;

use phi_zoo::Checkpoint;
use phi_zoo::backend::Cpu;
use serde_json::Value;

use crate::fixtures::to_vec;

#[test]
#[ignore = "needs the real checkpoints: set PHI_ZOO_CHECKPOINTS"]
fn golden_logits_of_the_published_checkpoints() {
    let root = PathBuf::from(
        std::env::var_os("PHI_ZOO_CHECKPOINTS")
            .expect("set PHI_ZOO_CHECKPOINTS to a folder with phi-1, phi-1_5, phi-2"),
    );
    let golden: Value = serde_json::from_str(include_str!("../golden_logits.json")).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(golden["input_ids"].clone()).unwrap();
    let device = Default::default();
    for (hub_id, folder) in [
        ("microsoft/phi-1", "phi-1"),
        ("microsoft/phi-1_5", "phi-1_5"),
        ("microsoft/phi-2", "phi-2"),
    ] {
        let expected = &golden["models"][hub_id];
        let (atol, rtol) = (
            expected["atol"].as_f64().unwrap() as f32,
            expected["rtol"].as_f64().unwrap() as f32,
        );
        let model = Checkpoint::open(root.join(folder))
            .and_then(|c| c.load::<Cpu>(&device))
            .unwrap_or_else(|e| panic!("{folder}: {e}"));
        let logits = to_vec(model.forward_ids(&ids, &device).unwrap());
        let vocab = model.config().vocab_size;
        let mut worst = 0f32;
        for (position, row) in expected["logits_0_2_30"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (token, want) in row.as_array().unwrap().iter().enumerate() {
                let want = want.as_f64().unwrap() as f32;
                let got = logits[position * vocab + token];
                let excess = (got - want).abs() - (atol + rtol * want.abs());
                assert!(
                    excess <= 0.0,
                    "{hub_id}: logits[0, {position}, {token}] = {got}, transformers {want}"
                );
                worst = worst.max((got - want).abs());
            }
        }
        eprintln!("{hub_id}: max |Δ| {worst:.2e} (atol {atol}, rtol {rtol})");
    }
}
