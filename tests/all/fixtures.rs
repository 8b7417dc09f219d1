//! The committed fixtures (tests/fixtures, written by tools/make_fixtures.py) and comparison helpers.

use std::path::{Path, PathBuf};

use phi_zoo::backend::Cpu;
use phi_zoo::{Checkpoint, Phi};
use serde_json::Value;

pub const FIXTURES: [&str; 4] = ["tiny_p05", "tiny_p04", "tiny_qk_gqa", "tiny_gqa"];

/// Parity tolerance against transformers in f32 (the bar).
pub const TOLERANCE: f32 = 1e-4;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn layout_dir(fixture: &str, layout: &str) -> PathBuf {
    root().join(fixture).join(layout)
}

/// transformers' outputs for one fixture.
pub struct Reference {
    pub layouts: Vec<String>,
    pub ids: Vec<Vec<u32>>,
    /// `[batch, seq, vocab]`, flattened.
    pub logits: Vec<f32>,
    /// Final hidden states `[batch, seq, hidden]`, flattened.
    pub hidden: Vec<f32>,
    pub vocab: usize,
    /// One row as long as the context, and the logits of its last four positions.
    pub long_ids: Vec<Vec<u32>>,
    pub long_last4: Vec<f32>,
    /// transformers' greedy continuation of each row of `ids`.
    pub greedy: Vec<Vec<u32>>,
}

fn flatten(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        v => out.push(v.as_f64().expect("a number") as f32),
    }
}

impl Reference {
    pub fn load(fixture: &str) -> Self {
        let path = root().join(fixture).join("reference.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value: Value = serde_json::from_str(&text).unwrap();
        let (mut logits, mut hidden, mut long_last4) = (Vec::new(), Vec::new(), Vec::new());
        flatten(&value["logits"], &mut logits);
        flatten(&value["hidden"], &mut hidden);
        flatten(&value["long_logits_last4"], &mut long_last4);
        let ids: Vec<Vec<u32>> = serde_json::from_value(value["input_ids"].clone()).unwrap();
        let vocab = value["logits"][0][0].as_array().unwrap().len();
        Reference {
            layouts: serde_json::from_value(value["layouts"].clone()).unwrap(),
            ids,
            logits,
            hidden,
            vocab,
            long_ids: serde_json::from_value(value["long_input_ids"].clone()).unwrap(),
            long_last4,
            greedy: serde_json::from_value(value["greedy_new_tokens"].clone()).unwrap(),
        }
    }

    pub fn seq(&self) -> usize {
        self.ids[0].len()
    }
}

pub fn load(fixture: &str, layout: &str) -> Phi<Cpu> {
    Checkpoint::open(layout_dir(fixture, layout))
        .unwrap_or_else(|e| panic!("{fixture}/{layout}: {e}"))
        .load::<Cpu>(&Default::default())
        .unwrap_or_else(|e| panic!("{fixture}/{layout}: {e}"))
}

pub fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, D>,
) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}
