//! Training killed at any moment resumes to the weights of an uninterrupted run.
//!
//! Each run is a child process (this test binary again, running `sweep_child`), so a kill is a
//! real SIGKILL of a real training process. Two sweeps per kind of run (pretraining a tiny Phi,
//! LoRA fine-tuning a fixture): SIGKILL after a sweep of delays across the whole run, and an abort
//! at each crash point of the checkpoint writer (`PHI_ZOO_CHECKPOINT_CRASH`: mid-file, before and
//! after the rename, after the manifest), which a delay would only hit by luck. After every kill
//! the run is resumed from its newest verified checkpoint to the end, and its final weights must
//! equal the uninterrupted run's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Instant;

use burn::optim::AdamWConfig;
use phi_zoo::backend::Cpu;
use phi_zoo::common::train::{Decay, LoraTrainee, Schedule, Trainee};
use phi_zoo::datasets::{Mixture, MixtureSource, TokenStore};
use phi_zoo::training::{RunPlan, resume_epoch, run, run_with};
use phi_zoo::{LoraConfig, Phi};

use crate::fixtures::{max_abs_diff, to_vec};

/// Which run the child performs: `pretrain` or `lora`.
const KIND: &str = "PHI_ZOO_SWEEP_KIND";
/// The run's folder (checkpoints, and `weights.f32` at the end).
const RUN_DIR: &str = "PHI_ZOO_SWEEP_DIR";
/// The token stores the pretraining child reads.
const DATA_DIR: &str = "PHI_ZOO_SWEEP_DATA";
const CRASH: &str = "PHI_ZOO_CHECKPOINT_CRASH";

const PRETRAIN_EPOCHS: usize = 4;
const LORA_EPOCHS: usize = 3;

/// The child's side: trains (resuming from the newest checkpoint, if any) and writes the final
/// weights. Does nothing unless started by a sweep.
#[test]
#[ignore = "started by the kill sweeps, in a child process"]
fn sweep_child() {
    let (Ok(kind), Ok(dir)) = (std::env::var(KIND), std::env::var(RUN_DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let resume = resume_epoch(&dir, true);
    eprintln!("sweep child: resuming after epoch {}", resume.unwrap_or(0));
    let weights = match kind.as_str() {
        "pretrain" => pretrain(&dir, resume),
        "lora" => lora(&dir, resume),
        other => panic!("unknown sweep kind {other}"),
    };
    let partial = dir.join("weights.f32.partial");
    std::fs::write(&partial, bytemuck_bytes(&weights)).unwrap();
    std::fs::rename(partial, dir.join("weights.f32")).unwrap();
}

fn bytemuck_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn pretrain(dir: &Path, resume: Option<usize>) -> Vec<f32> {
    let device = Default::default();
    let data = PathBuf::from(std::env::var(DATA_DIR).unwrap());
    let source = |name: &str, weight| MixtureSource {
        name: name.into(),
        store: Arc::new(TokenStore::open(data.join(name)).unwrap()),
        weight,
    };
    let train = Mixture::new(vec![source("code", 0.2), source("synthetic", 0.8)], 16, 1).unwrap();
    let valid = Mixture::new(vec![source("held_out", 1.0)], 16, 2).unwrap();
    let schedule = Schedule {
        peak: 3e-3,
        warmup_steps: 2,
        decay: Decay::Linear,
        total_steps: 2 * PRETRAIN_EPOCHS,
        final_fraction: 0.1,
    };
    let plan = RunPlan {
        dir: dir.to_path_buf(),
        batch: 2,
        grad_accum: 1,
        steps_per_epoch: 2,
        epochs: PRETRAIN_EPOCHS,
        // One kept: every epoch drops the previous one, the riskiest case.
        keep: 1,
        valid_batches: 1,
        resume_epoch: resume,
        peak_flops: None,
    };
    let trained: Trainee<Cpu> = run(
        crate::fixtures::tiny_trainee(&device),
        AdamWConfig::new().with_weight_decay(0.0).init(),
        schedule.scheduler(1),
        Arc::new(train),
        Arc::new(valid),
        &plan,
        &[],
    );
    all_weights(&trained.phi)
}

fn lora(dir: &Path, resume: Option<usize>) -> Vec<f32> {
    let device = Default::default();
    let mut trainee = LoraTrainee::new(
        crate::fixtures::fixture(&device),
        &LoraConfig {
            dropout: 0.0,
            ..LoraConfig::new(2)
        },
        crate::fixtures::settings(),
    );
    // Fixed adapters: a run that never reaches a checkpoint starts from the same ones.
    trainee.adapters = crate::fixtures::patterned_adapters(&trainee.base.0, &device);
    let mut plan = crate::fixtures::plan(dir, LORA_EPOCHS, resume);
    plan.steps_per_epoch = 2;
    plan.keep = 1;
    let trained = run_with(
        trainee,
        AdamWConfig::new().with_weight_decay(0.0).init(),
        5e-3,
        crate::fixtures::data(&plan),
        &plan,
        &[],
    );
    trained
        .adapters
        .layers
        .iter()
        .flat_map(|layer| {
            [
                &layer.q_proj,
                &layer.k_proj,
                &layer.v_proj,
                &layer.dense,
                &layer.fc1,
                &layer.fc2,
            ]
        })
        .flatten()
        .flat_map(|adapter| {
            to_vec(adapter.a.val())
                .into_iter()
                .chain(to_vec(adapter.b.val()))
        })
        .collect()
}

/// Every weight matrix of the model, in a fixed order.
fn all_weights(phi: &Phi<Cpu>) -> Vec<f32> {
    let mut values = to_vec(phi.model.embed_tokens.weight.val());
    for layer in &phi.model.layers {
        for linear in [
            &layer.self_attn.q_proj,
            &layer.self_attn.k_proj,
            &layer.self_attn.v_proj,
            &layer.self_attn.dense,
            &layer.mlp.fc1,
            &layer.mlp.fc2,
        ] {
            values.extend(to_vec(linear.weight.val()));
        }
    }
    values.extend(to_vec(phi.lm_head.weight.val()));
    values
}

/// The sweeps' side: how a child is started.
struct Sweep {
    kind: &'static str,
    data: PathBuf,
}

impl Sweep {
    fn command(&self, dir: &Path) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "crash_safety::sweep_child", "--ignored"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(KIND, self.kind)
            .env(RUN_DIR, dir)
            .env(DATA_DIR, &self.data)
            .env_remove(CRASH)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// A run to the end (resuming whatever is in `dir`): its final weights, and the epoch it
    /// resumed after (0: from the start).
    fn finish(&self, dir: &Path, what: &str) -> (Vec<f32>, usize) {
        let out = self.command(dir).output().unwrap();
        check_success(&out, what);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let resumed = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("sweep child: resuming after epoch ")?
                    .parse()
                    .ok()
            })
            .expect("the child says where it resumed");
        let bytes = std::fs::read(dir.join("weights.f32")).unwrap();
        let weights = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (weights, resumed)
    }

    /// Resumes a killed run in `dir` and compares its final weights with `reference`; the
    /// epoch it resumed after.
    fn resume_and_compare(&self, dir: &Path, reference: &[f32], what: &str) -> usize {
        let (weights, resumed) = self.finish(dir, &format!("resuming after {what}"));
        let d = max_abs_diff(&weights, reference);
        assert!(
            weights.len() == reference.len() && d <= 1e-6,
            "{}: resumed after {what}, the weights differ from the uninterrupted run's by {d}",
            self.kind
        );
        resumed
    }

    /// The uninterrupted run's weights and wall time, a SIGKILL sweep of `kills` delays across
    /// that time, and an abort at each of `crash_points`.
    fn run(&self, kills: usize, crash_points: impl Iterator<Item = usize>) {
        let whole = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let (reference, _) = self.finish(whole.path(), "the uninterrupted run");
        let duration = started.elapsed();
        eprintln!("{}: uninterrupted run {duration:?}", self.kind);

        let mut resumed_after = vec![];
        for i in 1..=kills {
            let delay = duration.mul_f64(i as f64 / (kills + 1) as f64);
            let dir = tempfile::tempdir().unwrap();
            let mut child: Child = self.command(dir.path()).spawn().unwrap();
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
            let what = format!("SIGKILL at {delay:?}");
            resumed_after.push(self.resume_and_compare(dir.path(), &reference, &what));
        }
        eprintln!(
            "{}: SIGKILL sweep resumed after epochs {resumed_after:?}",
            self.kind
        );
        let mut resumed_after = vec![];

        for point in crash_points {
            let dir = tempfile::tempdir().unwrap();
            let out = self
                .command(dir.path())
                .env(CRASH, point.to_string())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("aborting at crash point"),
                "{}: crash point {point} was not reached:\n{stderr}",
                self.kind
            );
            let what = format!("crash point {point}");
            resumed_after.push(self.resume_and_compare(dir.path(), &reference, &what));
        }
        eprintln!(
            "{}: crash points resumed after epochs {resumed_after:?}",
            self.kind
        );
    }
}

fn check_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crash points per checkpoint: five for each of the model and optimizer files (mid-write,
/// written, synced, renamed, listed) and four for the scheduler's (too small for mid-write).
const POINTS_PER_CHECKPOINT: usize = 14;

#[test]
fn pretraining_killed_anywhere_resumes_to_the_same_weights() {
    let data = tempfile::tempdir().unwrap();
    for (name, stride) in [("code", 7), ("synthetic", 13), ("held_out", 3)] {
        crate::fixtures::store(data.path(), name, 4000, stride);
    }
    let sweep = Sweep {
        kind: "pretrain",
        data: data.path().to_owned(),
    };
    // Every crash point of the first two checkpoints (the second one deletes the first), and
    // of the last.
    let last = (PRETRAIN_EPOCHS - 1) * POINTS_PER_CHECKPOINT;
    sweep.run(
        8,
        (1..=2 * POINTS_PER_CHECKPOINT).chain(last + 1..=last + POINTS_PER_CHECKPOINT),
    );
}

#[test]
fn lora_fine_tuning_killed_anywhere_resumes_to_the_same_adapters() {
    let sweep = Sweep {
        kind: "lora",
        data: PathBuf::new(),
    };
    sweep.run(5, (1..=2 * POINTS_PER_CHECKPOINT).step_by(3));
}
