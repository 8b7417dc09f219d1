//! The training step: the loss, its mask, and that optimizer steps through burn-train's
//! `TrainStep` lower it.

use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::train::TrainStep;
use phi_zoo::backend::Cpu;
use phi_zoo::common::train::regularize::{
    clip_grad_global_norm, decay_weight_matrices, grad_global_norm,
};
use phi_zoo::common::train::{LmBatch, StepSettings, Trainee, lm_loss};

use crate::fixtures::{
    Reference, Train, examples, fixture, layout_dir, logged, patterned_adapters, store,
    tiny_trainee, to_vec,
};

/// Mean NLL computed on the host in f64, for comparison.
fn host_loss(logits: &[f32], targets: &[i64], vocab: usize, keep: &[bool]) -> f64 {
    let mut total = 0.0;
    let mut count = 0;
    for (row, (&t, &k)) in targets.iter().zip(keep).enumerate() {
        if !k {
            continue;
        }
        let l = &logits[row * vocab..(row + 1) * vocab];
        let max = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let log_sum = l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        total += log_sum - l[t as usize] as f64;
        count += 1;
    }
    total / count as f64
}

#[test]
fn the_loss_is_the_mean_nll_over_kept_positions() {
    let device = Default::default();
    let (batch, seq, vocab) = (2, 5, 11);
    let values: Vec<f32> = (0..batch * seq * vocab)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
        .collect();
    let targets: Vec<i64> = (0..batch * seq).map(|i| (i * 7 % vocab) as i64).collect();
    let keep: Vec<bool> = (0..batch * seq).map(|i| i % 5 >= 2).collect();
    let logits = Tensor::<Cpu, 3>::from_data(
        TensorData::new(values.clone(), [batch, seq, vocab]),
        &device,
    );
    let target =
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(targets.clone(), [batch, seq]), &device);
    let mask =
        Tensor::<Cpu, 2, Bool>::from_data(TensorData::new(keep.clone(), [batch, seq]), &device);

    let all = lm_loss(logits.clone(), target.clone(), None).into_scalar() as f64;
    assert!((all - host_loss(&values, &targets, vocab, &[true; 10])).abs() < 1e-5);
    let masked = lm_loss(logits, target.clone(), Some(mask.clone())).into_scalar() as f64;
    assert!((masked - host_loss(&values, &targets, vocab, &keep)).abs() < 1e-5);

    // Whatever the model says at masked positions, the loss does not move.
    let mut changed = values.clone();
    for (row, &k) in keep.iter().enumerate() {
        if !k {
            changed[row * vocab..(row + 1) * vocab]
                .iter_mut()
                .for_each(|x| *x = 40.0 * *x + 3.0);
        }
    }
    let logits =
        Tensor::<Cpu, 3>::from_data(TensorData::new(changed, [batch, seq, vocab]), &device);
    let again = lm_loss(logits, target, Some(mask)).into_scalar() as f64;
    assert!((again - masked).abs() < 1e-6, "{again} vs {masked}");
}

#[test]
fn train_steps_lower_the_loss_of_a_fixture_model() {
    let device = Default::default();
    let reference = Reference::load("tiny_p05");
    let phi = phi_zoo::Checkpoint::open(layout_dir("tiny_p05", "v3"))
        .and_then(|c| c.load::<Train>(&device))
        .unwrap();
    let settings = StepSettings {
        grad_clip_norm: Some(1.0),
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut model = Trainee::new(phi, settings);
    let rows = &reference.ids;
    let (batch, seq) = (rows.len(), rows[0].len() - 1);
    let ids = |shift: usize| -> Tensor<Train, 2, Int> {
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| r[shift..shift + seq].iter().map(|&t| t as i64))
            .collect();
        Tensor::from_data(TensorData::new(flat, [batch, seq]), &device)
    };
    let batch_of = || LmBatch {
        inputs: ids(0),
        targets: ids(1),
        loss_mask: None,
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<Train, Trainee<Train>>();
    let mut losses = vec![];
    for _ in 0..15 {
        let output = TrainStep::step(&model, batch_of());
        losses.push(output.item.loss.clone().into_scalar() as f64);
        model = TrainStep::optimize(model, &mut optim, 1e-2, output.grads);
    }
    eprintln!("losses: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[14] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn clipping_uses_the_global_norm_and_decay_spares_biases_and_norms() {
    let device = Default::default();
    let reference = Reference::load("tiny_gqa");
    let phi = phi_zoo::Checkpoint::open(layout_dir("tiny_gqa", "v3"))
        .and_then(|c| c.load::<Train>(&device))
        .unwrap();
    let seq = reference.ids[0].len() - 1;
    let row = |shift: usize| -> Tensor<Train, 2, Int> {
        let ids: Vec<i64> = reference.ids[0][shift..shift + seq]
            .iter()
            .map(|&t| t as i64)
            .collect();
        Tensor::from_data(TensorData::new(ids, [1, seq]), &device)
    };
    let output = phi.lm_step(LmBatch {
        inputs: row(0),
        targets: row(1),
        loss_mask: None,
    });
    let mut grads = burn::optim::GradientsParams::from_grads(output.loss.backward(), &phi);

    // The global norm is the norm of all gradients concatenated.
    let mut host = 0.0f64;
    let head_grad = grads
        .get::<Cpu, 2>(phi.lm_head.weight.id)
        .unwrap()
        .into_data()
        .iter::<f32>()
        .collect::<Vec<f32>>();
    for layer in &phi.model.layers {
        for g in [&layer.mlp.fc1.weight, &layer.self_attn.q_proj.weight] {
            let v: Vec<f32> = grads
                .get::<Cpu, 2>(g.id)
                .unwrap()
                .into_data()
                .iter::<f32>()
                .collect();
            host += v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        }
    }
    host += head_grad.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
    let norm = grad_global_norm(&phi, &grads);
    assert!(
        norm > host.sqrt(),
        "the global norm covers more than these tensors"
    );

    let max_norm = norm / 4.0;
    let before = clip_grad_global_norm(&phi, &mut grads, max_norm);
    assert!((before - norm).abs() < 1e-9);
    let after = grad_global_norm(&phi, &grads);
    assert!(
        (after - max_norm).abs() < 1e-4 * max_norm,
        "{after} vs {max_norm}"
    );
    // One factor for every tensor: the direction is kept.
    let clipped_head: Vec<f32> = grads
        .get::<Cpu, 2>(phi.lm_head.weight.id)
        .unwrap()
        .into_data()
        .iter::<f32>()
        .collect();
    for (c, h) in clipped_head.iter().zip(&head_grad) {
        assert!(
            (c * 4.0 - h).abs() <= 1e-4 * h.abs().max(1e-3),
            "{c} vs {h}"
        );
    }

    // fc1's weight, fc1's bias, the final LayerNorm's gamma.
    let parts = |phi: &phi_zoo::Phi<Train>| {
        let fc1 = &phi.model.layers[0].mlp.fc1;
        (
            to_vec(fc1.weight.val()),
            to_vec(fc1.bias.val()),
            to_vec(phi.model.final_layernorm.gamma.val()),
        )
    };
    let (weight_before, bias_before, norm_before) = parts(&phi);
    let decayed = decay_weight_matrices(phi, 0.5, 0.1);
    let (weight_after, bias_after, norm_after) = parts(&decayed);
    for (a, b) in weight_after.iter().zip(&weight_before) {
        assert!((a - b * 0.95).abs() < 1e-6);
    }
    assert_eq!(bias_after, bias_before);
    assert_eq!(norm_after, norm_before);
}

#[test]
fn training_n_steps_then_resuming_for_n_more_equals_2n_in_one_go() {
    use phi_zoo::common::train::{Decay, Schedule};
    use phi_zoo::datasets::{Mixture, MixtureSource};
    use phi_zoo::training::{RunPlan, run};

    let device = Default::default();
    let data = tempfile::tempdir().unwrap();
    let source = |name: &str, stride| MixtureSource {
        name: name.into(),
        store: store(data.path(), name, 4000, stride),
        weight: if name == "code" { 0.2 } else { 0.8 },
    };
    let train = std::sync::Arc::new(
        Mixture::new(vec![source("code", 7), source("synthetic", 13)], 16, 1).unwrap(),
    );
    let valid = std::sync::Arc::new(Mixture::new(vec![source("held_out", 3)], 16, 2).unwrap());
    let schedule = Schedule {
        peak: 3e-3,
        warmup_steps: 2,
        decay: Decay::Linear,
        total_steps: 8,
        final_fraction: 0.1,
    };
    let optim = || {
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .init::<Train, Trainee<Train>>()
    };
    let plan = |dir: &std::path::Path, epochs, resume_epoch| RunPlan {
        dir: dir.to_path_buf(),
        batch: 2,
        grad_accum: 2,
        steps_per_epoch: 2,
        epochs,
        keep: 3,
        valid_batches: 1,
        resume_epoch,
        peak_flops: Some(1e12),
    };
    let start = tiny_trainee(&device);

    let whole = tempfile::tempdir().unwrap();
    let straight = run(
        start.clone(),
        optim(),
        schedule.scheduler(2),
        train.clone(),
        valid.clone(),
        &plan(whole.path(), 4, None),
        &[],
    );

    let split = tempfile::tempdir().unwrap();
    let first_half = run(
        start.clone(),
        optim(),
        schedule.scheduler(2),
        train.clone(),
        valid.clone(),
        &plan(split.path(), 2, None),
        &[],
    );
    let resumed = run(
        start.clone(),
        optim(),
        schedule.scheduler(2),
        train,
        valid,
        &plan(split.path(), 4, Some(2)),
        &[],
    );

    let initial = tracked_weights(&start.phi);
    let (a, b) = (
        tracked_weights(&straight.phi),
        tracked_weights(&resumed.phi),
    );
    let moved = a
        .iter()
        .zip(&initial)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-3, "training did not move the weights");
    assert_ne!(
        tracked_weights(&first_half.phi),
        a,
        "the first half alone should differ from the whole run"
    );
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        d <= 1e-6,
        "resumed run differs from the straight run by {d}"
    );

    // Every micro-batch's loss, as the learner logged it, is the same in both runs.
    let losses = |dir: &std::path::Path, part: &str| -> Vec<f64> {
        (1..=4)
            .flat_map(|epoch| logged(dir, part, epoch, "Loss"))
            .collect()
    };
    for part in ["train", "valid"] {
        let (a, b) = (losses(whole.path(), part), losses(split.path(), part));
        assert_eq!(
            a.len(),
            if part == "train" { 16 } else { 4 },
            "{part} losses"
        );
        assert_eq!(a.len(), b.len());
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-6, "{part} loss {step}: {x} vs {y}");
        }
    }
    // The other metrics are logged too (file names have `_` for spaces), MFU included when a
    // peak is given.
    for metric in ["Perplexity", "Learning_Rate", "Tokens_per_second", "MFU"] {
        let values = logged(whole.path(), "train", 1, metric);
        assert_eq!(values.len(), 4, "{metric}");
    }
    let lr = logged(whole.path(), "train", 1, "Learning_Rate");
    assert!(lr[0] > 0.0 && lr[0] <= 3e-3, "learning rate {lr:?}");
    // The last 3 checkpoints are kept, and the best validation epoch besides.
    let kept: Vec<String> = std::fs::read_dir(whole.path().join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model-"))
        .collect();
    assert!(kept.contains(&"model-4.mpk".to_string()), "{kept:?}");
    assert!(!kept.is_empty() && kept.len() <= 4, "{kept:?}");
}

/// The weights the resume test compares: the LM head and the last block's fc2.
fn tracked_weights<B: Backend>(phi: &phi_zoo::Phi<B>) -> Vec<f32> {
    let mut values = to_vec(phi.lm_head.weight.val());
    values.extend(to_vec(phi.model.layers[1].mlp.fc2.weight.val()));
    values
}

#[test]
fn data_parallel_training_runs_through_burns_multi_device_strategy() {
    use phi_zoo::training::{RunPlan, run};

    // Two "devices" that are the same CPU: the multi-device path (split loaders, gradients
    // gathered on the first device, one optimizer step) runs as it would on two GPUs.
    let device: burn::backend::flex::FlexDevice = Default::default();
    let data = tempfile::tempdir().unwrap();
    let (train, valid) = crate::fixtures::small_mixture(data.path());
    let schedule = crate::fixtures::constant_schedule(3);
    let dir = tempfile::tempdir().unwrap();
    let start = tiny_trainee(&device);
    let trained = run(
        start.clone(),
        AdamWConfig::new()
            .with_weight_decay(0.0)
            .init::<Train, Trainee<Train>>(),
        schedule.scheduler(1),
        std::sync::Arc::new(train),
        std::sync::Arc::new(valid),
        &RunPlan {
            dir: dir.path().to_path_buf(),
            batch: 2,
            grad_accum: 1,
            steps_per_epoch: 3,
            epochs: 1,
            keep: 1,
            valid_batches: 1,
            resume_epoch: None,
            peak_flops: None,
        },
        &[device, device],
    );
    // One loss per micro-batch per device: 3 steps × 2 devices.
    assert_eq!(logged(dir.path(), "train", 1, "Loss").len(), 6);
    let before: Vec<f32> = start.phi.lm_head.weight.val().into_data().iter().collect();
    let after: Vec<f32> = trained
        .phi
        .lm_head
        .weight
        .val()
        .into_data()
        .iter()
        .collect();
    assert!(after.iter().all(|v| v.is_finite()));
    assert_ne!(before, after, "the optimizer stepped");
}

/// The loss curve has axes and labels, a log-scale variant, and a PNG that needs no system
/// libraries; a run's logs read back by step.
#[test]
fn the_loss_curve_is_drawn_with_axes_in_svg_and_png() {
    use phi_zoo::training::RunReport;
    let dir = tempfile::tempdir().unwrap();
    for epoch in 1..=2 {
        for (split, values) in [("train", "5.0\n4.0\n"), ("valid", "4.5\n")] {
            let logs = dir.path().join(format!("{split}/epoch-{epoch}"));
            std::fs::create_dir_all(&logs).unwrap();
            std::fs::write(logs.join("Loss.log"), values).unwrap();
        }
    }
    // Two epochs of one step, each of two micro-batches.
    let report = RunReport::read(dir.path(), 2, 1, 2);
    assert_eq!(
        report.train,
        [(0.5, 5.0), (1.0, 4.0), (1.5, 5.0), (2.0, 4.0)]
    );
    assert_eq!(report.valid, [(1, 4.5), (2, 4.5)]);
    for log_scale in [false, true] {
        let svg = dir.path().join("loss.svg");
        report.write_svg(&svg, log_scale).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for label in [
            "optimizer step",
            "training loss",
            "validation (after each epoch)",
        ] {
            assert!(text.contains(label), "{label} missing");
        }
        assert_eq!(text.contains("loss (log scale)"), log_scale);
        let png = dir.path().join("loss.png");
        report.write_png(&png, log_scale).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}

/// Every float parameter's gradient in `grads`, in the module's order (empty where none).
fn all_grads<AB, M>(module: &M, grads: &burn::optim::GradientsParams) -> Vec<Vec<f32>>
where
    AB: burn::tensor::backend::AutodiffBackend<InnerBackend = Cpu>,
    M: burn::module::Module<AB>,
{
    use burn::module::{ModuleVisitor, Param};
    struct Collect<'a>(&'a burn::optim::GradientsParams, Vec<Vec<f32>>);
    impl<AB: burn::tensor::backend::AutodiffBackend<InnerBackend = Cpu>> ModuleVisitor<AB>
        for Collect<'_>
    {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let grad = self
                .0
                .get::<Cpu, D>(param.id)
                .map(to_vec)
                .unwrap_or_default();
            self.1.push(grad);
        }
    }
    let mut collect = Collect(grads, vec![]);
    module.visit(&mut collect);
    collect.1
}

/// Training's fused head and loss (`lm_train_step`, the head's gradients computed with the loss
/// and registered after the backward pass) gives the loss and every gradient of the plain path
/// (logits through autodiff into `lm_loss`): full batches and masked ones, with LoRA adapters,
/// and a batch that keeps nothing.
#[test]
fn the_fused_head_and_loss_give_the_plain_loss_and_gradients() {
    use burn::optim::GradientsParams;
    use phi_zoo::common::model::Adapters;
    use phi_zoo::common::train::LmStepOutput;
    use phi_zoo::datasets::{FinetuneSet, SampleStream};

    let device = Default::default();
    let phi = fixture::<Train>(&device);
    let set = FinetuneSet::new(examples(16), 16, 0, 5).unwrap();
    let masked = set.batch::<Train>(0..8, &device);
    assert!(masked.loss_mask.is_some());
    let unmasked = LmBatch {
        loss_mask: None,
        ..masked.clone()
    };
    let nothing = LmBatch {
        loss_mask: masked
            .loss_mask
            .clone()
            .map(|m| m.clone().bool_and(m.bool_not())),
        ..masked.clone()
    };
    let adapters = patterned_adapters(&phi, &device);
    let check = |what: &str, batch: LmBatch<Train>, with_adapters: bool| {
        let lora = with_adapters.then_some(&adapters);
        let dyn_lora = lora.map(|a| a as &dyn Adapters<Train>);
        let plain: LmStepOutput<Train> = phi.lm_step_adapted(batch.clone(), dyn_lora);
        let plain_loss = plain.loss.clone().into_scalar() as f64;
        let plain_back = plain.loss.backward();
        let (fused, fused_back) = phi.lm_train_step(batch, dyn_lora);
        let fused_loss = fused.loss.into_scalar() as f64;
        assert_eq!(fused.tokens, plain.tokens, "{what}");
        assert!(
            (fused_loss - plain_loss).abs() <= 1e-6 * plain_loss.abs().max(1.0),
            "{what}: loss {fused_loss} vs {plain_loss}"
        );
        // A LoRA run trains the adapters; a full run every parameter.
        let (fused_grads, plain_grads) = match lora {
            Some(a) => (
                all_grads(a, &GradientsParams::from_grads(fused_back, a)),
                all_grads(a, &GradientsParams::from_grads(plain_back, a)),
            ),
            None => (
                all_grads(&phi, &GradientsParams::from_grads(fused_back, &phi)),
                all_grads(&phi, &GradientsParams::from_grads(plain_back, &phi)),
            ),
        };
        assert!(!fused_grads.is_empty());
        assert_grads_match(what, &fused_grads, &plain_grads);
        fused_loss
    };
    check("unmasked", unmasked, false);
    check("masked", masked.clone(), false);
    check("LoRA, masked", masked, true);
    assert_eq!(check("nothing kept", nothing, false), 0.0);
}

/// Every parameter's gradient in `got` within 1e-5 of that parameter's largest in `expected`.
fn assert_grads_match(what: &str, got: &[Vec<f32>], expected: &[Vec<f32>]) {
    assert_eq!(got.len(), expected.len(), "{what}: parameters");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g.len(), e.len(), "{what}: parameter {i}");
        let scale = e.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let d = g
            .iter()
            .zip(e)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            d <= 1e-5 * scale,
            "{what}: parameter {i}: {d} (largest {scale})"
        );
    }
}

/// One training step's loss and every gradient on backend `AB` (the fixture, a masked batch).
fn step_loss_and_grads<AB>() -> (f64, Vec<Vec<f32>>)
where
    AB: burn::tensor::backend::AutodiffBackend<InnerBackend = Cpu>,
{
    use burn::optim::GradientsParams;
    use phi_zoo::datasets::{FinetuneSet, SampleStream};
    let device = Default::default();
    let phi = fixture::<AB>(&device);
    let set = FinetuneSet::new(examples(16), 16, 0, 5).unwrap();
    let (out, grads) = phi.lm_train_step(set.batch::<AB>(0..8, &device), None);
    let loss = out.loss.into_scalar().elem::<f64>();
    (
        loss,
        all_grads(&phi, &GradientsParams::from_grads(grads, &phi)),
    )
}

/// Activation checkpointing (burn's balanced strategy, `pretrain --checkpointing`) recomputes
/// what the backward pass needs instead of keeping it, with the same loss and gradients.
#[test]
fn checkpointed_activations_give_the_same_loss_and_gradients() {
    use burn::backend::Autodiff;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let (kept_loss, kept) = step_loss_and_grads::<Train>();
    let (loss, grads) = step_loss_and_grads::<Autodiff<Cpu, BalancedCheckpointing>>();
    assert!(
        (loss - kept_loss).abs() <= 1e-6 * kept_loss,
        "{loss} vs {kept_loss}"
    );
    assert_grads_match("checkpointed", &grads, &kept);
}
