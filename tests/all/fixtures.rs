//! The test helpers, in one place: the committed fixtures (tests/fixtures, written by
//! tools/make_fixtures.py), comparisons, and the small training setups several modules share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use phi_zoo::backend::Cpu;
use phi_zoo::common::train::{LmStepOutput, LoraTrainee, StepSettings, Trainee};
use phi_zoo::datasets::{FinetuneExample, FinetuneSet, SampleStream};
use phi_zoo::training::{RunData, RunPlan};
use phi_zoo::{Checkpoint, LoraConfig, Phi, PhiAdapters};
use serde_json::Value;

/// The CPU backend under autodiff.
pub type Train = Autodiff<Cpu>;

pub const FIXTURES: [&str; 4] = ["tiny_p05", "tiny_p04", "tiny_qk_gqa", "tiny_gqa"];

/// Parity tolerance against transformers in f32 (the bar).
pub const TOLERANCE: f32 = 1e-4;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// An example's binary, which `cargo test` builds beside the test binary's folder
/// (tests run from `target/<profile>/deps/`, examples are in `target/<profile>/examples/`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run the whole suite with `cargo test` so examples are built",
        path.display()
    );
    path
}

/// A temporary copy of the files of folder `from` (to break, or to write into).
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
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

// Training and fine-tuning helpers shared by several test modules.

/// A tiny Phi over a 1001-token vocabulary, without dropout (so runs are reproducible).
pub fn tiny_trainee(device: &burn::backend::flex::FlexDevice) -> Trainee<Train> {
    let config = phi_zoo::PhiConfig {
        vocab_size: 1001,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        max_position_embeddings: 64,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attention_dropout: 0.0,
        ..Default::default()
    };
    <Train as Backend>::seed(device, 5);
    Trainee::new(
        phi_zoo::Phi::new(&config, device),
        StepSettings {
            grad_clip_norm: Some(1.0),
            weight_decay: 0.1,
            ..Default::default()
        },
    )
}

pub fn store(
    dir: &std::path::Path,
    name: &str,
    tokens: u64,
    stride: u64,
) -> std::sync::Arc<phi_zoo::datasets::TokenStore> {
    let path = dir.join(name);
    let mut writer = phi_zoo::datasets::StoreWriter::create(&path, 1001, 1000).unwrap();
    let ids: Vec<u32> = (0..tokens - 1)
        .map(|i| ((i * stride) % 997) as u32)
        .collect();
    writer.push_document(&ids).unwrap();
    writer.finish("test".into(), vec![], 0).unwrap();
    std::sync::Arc::new(phi_zoo::datasets::TokenStore::open(&path).unwrap())
}

/// The values of a metric log the learner must have written.
pub fn logged(dir: &std::path::Path, split: &str, epoch: usize, metric: &str) -> Vec<f64> {
    phi_zoo::training::logged_metric(dir, split, epoch, metric).unwrap_or_else(|| {
        panic!(
            "{}: no {split} {metric} log for epoch {epoch}",
            dir.display()
        )
    })
}

/// The tiny_p05 fixture (vocabulary 96) without dropout, so runs repeat exactly.
pub fn fixture<B: Backend>(device: &B::Device) -> Phi<B> {
    phi_zoo::Checkpoint::open(layout_dir("tiny_p05", "v3"))
        .and_then(|c| c.load::<B>(device))
        .unwrap()
        .with_dropout(0.0, 0.0, 0.0)
}

/// Prompt-completion examples over the fixture's vocabulary: the completion counts down from
/// the prompt's last token, something a model can learn.
pub fn examples(n: usize) -> Vec<FinetuneExample> {
    (0..n)
        .map(|i| {
            let prompt_len = 2 + i % 4;
            let start = 10 + (i * 7) % 80;
            let mut ids: Vec<u32> = (0..prompt_len)
                .map(|j| ((start + j * 3) % 96) as u32)
                .collect();
            let last = *ids.last().unwrap();
            ids.extend((1..=3 + i % 3).map(|k| (last + 96 - k as u32) % 96));
            FinetuneExample::new(ids, prompt_len)
        })
        .collect()
}

pub fn plan(dir: &Path, epochs: usize, resume_epoch: Option<usize>) -> RunPlan {
    RunPlan {
        dir: dir.to_path_buf(),
        batch: 4,
        grad_accum: 1,
        steps_per_epoch: 5,
        epochs,
        keep: 2,
        valid_batches: 1,
        resume_epoch,
        peak_flops: None,
    }
}

pub fn data(plan: &RunPlan) -> RunData<Train> {
    let set = FinetuneSet::new(examples(40), 16, 0, 11).unwrap();
    let (train, valid) = set.split_held_out(0.1).unwrap();
    RunData::streams(
        Arc::new(train),
        Arc::new(valid),
        16,
        plan,
        1,
        &Default::default(),
    )
}

pub fn settings() -> StepSettings {
    StepSettings {
        grad_clip_norm: Some(1.0),
        ..Default::default()
    }
}

/// Rank-2 adapters on every projection of `phi` whose A and B follow fixed formulas (no RNG, so
/// any machine and backend builds the same ones).
pub fn patterned_adapters<B: Backend>(phi: &Phi<B>, device: &B::Device) -> PhiAdapters<B> {
    let mut adapters = LoraConfig {
        dropout: 0.0,
        ..LoraConfig::new(2)
    }
    .init(phi, device);
    let mut k = 0.0f32;
    for layer in &mut adapters.layers {
        for adapter in layer.iter_mut() {
            let mut patterned = |dims: [usize; 2]| {
                k += 1.0;
                let values: Vec<f32> = (0..dims[0] * dims[1])
                    .map(|i| 0.3 * ((i as f32 * 0.37 + k).sin()))
                    .collect();
                burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(values, dims),
                    device,
                ))
            };
            adapter.a = patterned(adapter.a.dims());
            adapter.b = patterned(adapter.b.dims());
        }
    }
    adapters
}

/// Losses of `steps` optimizer steps (AdamW, lr 1e-2, clipping) of full fine-tuning and of LoRA
/// (patterned adapters) on one batch of the tiny_p05 fixture, on any backend: the same numbers on every
/// backend say its training path is right.
pub fn fixture_training_losses<B: burn::tensor::backend::AutodiffBackend>(
    steps: usize,
    device: &B::Device,
) -> (Vec<f64>, Vec<f64>) {
    fixture_training_losses_in::<B>(steps, None, device).0
}

/// `fixture_training_losses` with the products in `matmul` (mixed precision), and the trained
/// full model.
pub fn fixture_training_losses_in<B: burn::tensor::backend::AutodiffBackend>(
    steps: usize,
    matmul: Option<burn::tensor::FloatDType>,
    device: &B::Device,
) -> ((Vec<f64>, Vec<f64>), Phi<B>) {
    use burn::train::TrainStep;
    let set = FinetuneSet::new(examples(16), 16, 0, 5).unwrap();
    // One batch, seen every step: the loss must fall.
    let batch = |_step: usize| set.batch::<B>(0..8, device);
    let loss = |out: &burn::train::TrainOutput<LmStepOutput<B>>| -> f64 {
        out.item.loss.clone().into_scalar().elem::<f64>()
    };

    let mut full = Trainee::new(fixture::<B>(device).with_matmul_dtype(matmul), settings());
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut full_losses = vec![];
    for i in 0..steps {
        let out = TrainStep::step(&full, batch(i));
        full_losses.push(loss(&out));
        full = TrainStep::optimize(full, &mut optim, 1e-2, out.grads);
    }

    let phi = fixture::<B>(device).with_matmul_dtype(matmul);
    let mut lora = LoraTrainee::new(phi, &LoraConfig::new(2), settings());
    lora.adapters = patterned_adapters(&lora.base.0, device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut lora_losses = vec![];
    for i in 0..steps {
        let out = TrainStep::step(&lora, batch(i));
        lora_losses.push(loss(&out));
        lora = TrainStep::optimize(lora, &mut optim, 1e-2, out.grads);
    }
    ((full_losses, lora_losses), full.phi)
}

/// A small store of one source, split into training and held-out mixtures of 16-token windows:
/// what the multi-device and multi-node tests train on.
pub fn small_mixture(data: &Path) -> (phi_zoo::datasets::Mixture, phi_zoo::datasets::Mixture) {
    let source = phi_zoo::datasets::MixtureSource {
        name: "code".into(),
        store: store(data, "code", 4000, 7),
        weight: 1.0,
    };
    phi_zoo::datasets::Mixture::split_held_out(vec![source], 16, 1, 0.1).unwrap()
}

/// A constant learning rate of 3e-3 over `steps` steps.
pub fn constant_schedule(steps: usize) -> phi_zoo::common::train::Schedule {
    phi_zoo::common::train::Schedule {
        peak: 3e-3,
        warmup_steps: 0,
        decay: phi_zoo::common::train::Decay::Constant,
        total_steps: steps,
        final_fraction: 1.0,
    }
}
