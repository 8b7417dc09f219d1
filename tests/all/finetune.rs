//! Fine-tuning: prompt-completion masking and padding, LoRA (zero start, merge, adapter-only
//! checkpoints), loss falling on a fixture, exact resume, and an export transformers reads.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use phi_zoo::backend::Cpu;
use phi_zoo::common::train::{LmStepOutput, LoraTrainee, Trainee};
use phi_zoo::datasets::{FinetuneExample, FinetuneFormat, FinetuneSet, SampleStream};
use phi_zoo::training::{RunPlan, run_with};
use phi_zoo::{LoraConfig, LoraTarget, Phi, PhiTokenizer};

use crate::fixtures::{
    Train, data, examples, fixture, fixture_training_losses, max_abs_diff, patterned_adapters,
    plan, settings, to_vec,
};

/// Mean next-token NLL on the host over the kept targets of one unpadded example.
fn host_nll(phi: &Phi<Cpu>, example: &FinetuneExample) -> (f64, usize) {
    let device = Default::default();
    let logits = phi
        .forward_ids(std::slice::from_ref(&example.ids), &device)
        .unwrap();
    let vocab = logits.dims()[2];
    let logits = to_vec(logits);
    let mut total = 0.0;
    let mut count = 0;
    for (i, keep) in example.target_mask().into_iter().enumerate() {
        if !keep {
            continue;
        }
        let row = &logits[i * vocab..(i + 1) * vocab];
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let log_sum = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        total += log_sum - row[example.ids[i + 1] as usize] as f64;
        count += 1;
    }
    (total, count)
}

#[test]
fn prompt_and_padding_positions_contribute_nothing() {
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let set = FinetuneSet::new(examples(6), 16, 0, 3).unwrap();
    let batch = set.batch::<Cpu>(0..6, &device);
    let rows: Vec<&FinetuneExample> = (0..6).map(|i| set.example_at(i)).collect();
    let LmStepOutput { loss, tokens, .. } = phi.lm_step(batch);
    // The token-weighted mean over each example alone (no padding, completion targets only).
    let (mut total, mut count) = (0.0, 0);
    for example in &rows {
        let (t, c) = host_nll(&phi, example);
        total += t;
        count += c;
    }
    let completion_tokens: usize = rows.iter().map(|e| e.ids.len() - e.prompt_len()).sum();
    assert_eq!(
        tokens, completion_tokens,
        "counted tokens are completion tokens"
    );
    assert_eq!(count, completion_tokens);
    let loss = loss.into_scalar() as f64;
    assert!(
        (loss - total / count as f64).abs() < 1e-4,
        "batched loss {loss} vs per-example {}",
        total / count as f64
    );

    // Prompt targets do not matter: change every prompt token after the first of an example's
    // *targets* only (inputs fixed) and the loss stays the same.
    let mut batch = set.batch::<Cpu>(0..6, &device);
    let mask = batch.loss_mask.clone().unwrap();
    let noise = Tensor::<Cpu, 2, Int>::ones(batch.targets.dims(), &device).mul_scalar(5);
    batch.targets = batch
        .targets
        .clone()
        .mask_where(mask.bool_not(), batch.targets + noise);
    let changed = phi.lm_step(batch).loss.into_scalar() as f64;
    assert!((changed - loss).abs() < 1e-6, "{changed} vs {loss}");
}

#[test]
fn packing_joins_examples_into_full_windows_and_keeps_what_is_learned() {
    let set = FinetuneSet::new(examples(20), 16, 0, 3).unwrap();
    let (ids, learn): (Vec<u32>, Vec<bool>) = set
        .examples()
        .iter()
        .flat_map(|e| e.ids.iter().copied().zip(e.learn.iter().copied()))
        .unzip();
    let packed = set.clone().packed().unwrap();
    assert!(packed.len() < set.len());
    let windows = packed.examples();
    assert!(
        windows[..windows.len() - 1]
            .iter()
            .all(|w| w.ids.len() == 17)
    );
    let joined: Vec<u32> = windows.iter().flat_map(|w| w.ids.clone()).collect();
    let joined_learn: Vec<bool> = windows.iter().flat_map(|w| w.learn.clone()).collect();
    assert_eq!(joined[..], ids[..joined.len()]);
    assert_eq!(joined_learn[..], learn[..joined.len()]);
    // A packed batch needs no padding: every position of a full window is a real token.
    let batch = packed.batch::<Cpu>(0..2, &Default::default());
    assert_eq!(batch.inputs.dims(), [2, 16]);
}

#[test]
fn reading_prompt_completion_jsonl_masks_the_prompt_and_names_bad_lines() {
    let tokenizer = PhiTokenizer::bundled();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"def square(x):\\n\", \"completion\": \"    return x * x\\n\"}\n\n\
         {\"prompt\": \"# add\\n\", \"completion\": \"a + b\"}\n",
    )
    .unwrap();
    let (set, report) =
        FinetuneSet::read(&path, FinetuneFormat::PromptCompletion, &tokenizer, 64, 0).unwrap();
    assert_eq!(report.examples, 2);
    let first = &set.examples()[0];
    let prompt = tokenizer.encode("def square(x):\n").unwrap();
    assert_eq!(first.prompt_len(), prompt.len());
    assert_eq!(&first.ids[..prompt.len()], &prompt[..]);
    assert_eq!(
        *first.ids.last().unwrap(),
        50256,
        "completions end with EOS"
    );

    std::fs::write(
        &path,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 3}\n",
    )
    .unwrap();
    let error = FinetuneSet::read(&path, FinetuneFormat::PromptCompletion, &tokenizer, 64, 0)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pairs.jsonl:2") && error.contains("prompt"),
        "{error}"
    );

    std::fs::write(
        &path,
        "{\"prompt\": \"one two three four five\", \"completion\": \"x\"}\n",
    )
    .unwrap();
    let error = FinetuneSet::read(&path, FinetuneFormat::PromptCompletion, &tokenizer, 3, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains(":1") && error.contains("no room"), "{error}");
}

#[test]
fn lora_starts_as_the_base_model_and_merges_into_an_equal_plain_model() {
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let ids: Vec<Vec<u32>> = vec![(0..12).map(|i| (i * 5 % 96) as u32).collect()];
    let base = to_vec(phi.forward_ids(&ids, &device).unwrap());
    let lora = LoraConfig {
        dropout: 0.0,
        ..LoraConfig::new(4)
    };
    let mut adapters = lora.init(&phi, &device);
    let input = phi.ids_tensor(&ids, &device).unwrap();
    let adapted = to_vec(phi.forward_adapted(input.clone(), &adapters).unwrap());
    assert_eq!(max_abs_diff(&base, &adapted), 0.0, "B = 0: no change");

    // Give every B a value, as training would, and compare the adapter model with the merge.
    for layer in &mut adapters.layers {
        for adapter in layer.iter_mut() {
            let dims = adapter.b.dims();
            adapter.b = burn::module::Param::from_tensor(Tensor::random(
                dims,
                burn::tensor::Distribution::Normal(0.0, 0.5),
                &device,
            ));
        }
    }
    let adapted = to_vec(phi.forward_adapted(input, &adapters).unwrap());
    assert!(max_abs_diff(&base, &adapted) > 1e-2, "the adapters act");
    let merged = adapters.merge_into(phi.clone());
    let merged_logits = to_vec(merged.forward_ids(&ids, &device).unwrap());
    let d = max_abs_diff(&adapted, &merged_logits);
    assert!(
        d <= 1e-4,
        "merged model differs from the adapter model by {d}"
    );

    // The export of the merged model loads back to the same logits.
    let dir = tempfile::tempdir().unwrap();
    phi_zoo::save_hf(&merged, dir.path(), phi_zoo::StoredDType::F32).unwrap();
    let reloaded = phi_zoo::Checkpoint::open(dir.path())
        .and_then(|c| c.load::<Cpu>(&device))
        .unwrap();
    let d = max_abs_diff(
        &merged_logits,
        &to_vec(reloaded.forward_ids(&ids, &device).unwrap()),
    );
    assert!(d <= 1e-6, "export round trip differs by {d}");
    // Only the chosen projections get adapters.
    let only_q = LoraConfig {
        targets: vec![LoraTarget::Q],
        ..LoraConfig::new(2)
    }
    .init(&phi, &device);
    assert!(
        only_q
            .layers
            .iter()
            .all(|l| l.q_proj.is_some() && l.fc1.is_none())
    );
}

/// Mean loss of the model over the training examples, on the host.
fn train_loss(phi: &Phi<Cpu>) -> f64 {
    let set = FinetuneSet::new(examples(40), 16, 0, 11).unwrap();
    let (total, count) = set.examples()[..36]
        .iter()
        .map(|e| host_nll(phi, e))
        .fold((0.0, 0), |(t, c), (a, b)| (t + a, c + b));
    total / count as f64
}

#[test]
fn full_and_lora_fine_tuning_lower_the_training_loss() {
    let device = Default::default();
    let before = train_loss(&fixture::<Cpu>(&device));

    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), 2, None);
    let full = run_with(
        Trainee::new(fixture::<Train>(&device), settings()),
        AdamWConfig::new().with_weight_decay(0.0).init(),
        3e-3,
        data(&plan),
        &plan,
        &[],
    );
    let full_after = train_loss(&full.phi);

    let lora_dir = tempfile::tempdir().unwrap();
    let lora_plan = plan_in(lora_dir.path());
    let lora = run_with(
        LoraTrainee::new(fixture::<Train>(&device), &LoraConfig::new(4), settings()),
        AdamWConfig::new().with_weight_decay(0.0).init(),
        1e-2,
        data(&lora_plan),
        &lora_plan,
        &[],
    );
    let lora_after = train_loss(&lora.merged());
    eprintln!("train loss {before:.4} → full {full_after:.4}, LoRA {lora_after:.4}");
    assert!(full_after < before - 0.1, "{before} → {full_after}");
    assert!(lora_after < before - 0.05, "{before} → {lora_after}");

    // LoRA checkpoints hold the adapters only: far smaller than a full model's.
    let size = |d: &Path| {
        std::fs::metadata(d.join("checkpoint/model-2.mpk"))
            .unwrap()
            .len()
    };
    let (full_size, lora_size) = (size(dir.path()), size(lora_dir.path()));
    assert!(
        lora_size * 3 < full_size,
        "LoRA {lora_size} B vs full {full_size} B"
    );
}

fn plan_in(dir: &Path) -> RunPlan {
    plan(dir, 2, None)
}

#[test]
fn lora_fine_tuning_resumes_exactly() {
    let device = Default::default();
    // burn's RNG is global and other tests draw from it concurrently: the runs that must agree
    // start from fixed adapters; the resumed one from random ones, which the checkpoint replaces.
    let trainee = |patterned: bool| {
        let mut trainee = LoraTrainee::new(
            fixture::<Train>(&device),
            &LoraConfig {
                dropout: 0.0,
                ..LoraConfig::new(2)
            },
            settings(),
        );
        if patterned {
            trainee.adapters = patterned_adapters(&trainee.base.0, &device);
        }
        trainee
    };
    let go = |dir: &Path, epochs, resume, patterned| {
        let plan = plan(dir, epochs, resume);
        run_with(
            trainee(patterned),
            AdamWConfig::new().with_weight_decay(0.0).init(),
            5e-3,
            data(&plan),
            &plan,
            &[],
        )
    };
    let whole = tempfile::tempdir().unwrap();
    let straight = go(whole.path(), 2, None, true);
    let split = tempfile::tempdir().unwrap();
    go(split.path(), 1, None, true);
    let resumed = go(split.path(), 2, Some(1), false);
    let weights = |t: &LoraTrainee<Cpu>| -> Vec<f32> {
        t.adapters
            .layers
            .iter()
            .flat_map(|l| {
                let fc1 = l.fc1.as_ref().unwrap();
                to_vec(fc1.a.val()).into_iter().chain(to_vec(fc1.b.val()))
            })
            .collect()
    };
    let d = max_abs_diff(&weights(&straight), &weights(&resumed));
    assert!(d <= 1e-6, "resumed adapters differ by {d}");
    let losses = |dir: &Path| crate::fixtures::logged(dir, "train", 2, "Loss");
    let (a, b) = (losses(whole.path()), losses(split.path()));
    assert_eq!(a.len(), 5);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6, "{a:?} vs {b:?}");
    }
}

/// tiny_p05 with `patterned_adapters` merged: the model behind the committed
/// `tests/fixtures/lora_merged` export.
fn lora_merged_fixture_model() -> Phi<Cpu> {
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    patterned_adapters(&phi, &device).merge_into(phi)
}

fn lora_merged_dir() -> std::path::PathBuf {
    crate::fixtures::root().join("lora_merged")
}

/// Rewrites `tests/fixtures/lora_merged` (then run `python3 tools/check_export.py
/// tests/fixtures/lora_merged --write-reference` for transformers' side).
#[test]
#[ignore = "writes a committed fixture"]
fn write_lora_merged_fixture() {
    let dir = lora_merged_dir();
    phi_zoo::save_hf(
        &lora_merged_fixture_model(),
        &dir,
        phi_zoo::StoredDType::F32,
    )
    .unwrap();
}

#[test]
fn a_merged_lora_export_loads_in_transformers_with_the_same_logits() {
    let dir = lora_merged_dir();
    // The committed export is what today's merge and export write.
    let tmp = tempfile::tempdir().unwrap();
    let model = lora_merged_fixture_model();
    phi_zoo::save_hf(&model, tmp.path(), phi_zoo::StoredDType::F32).unwrap();
    let tensors = |path: &Path| -> Vec<(String, Vec<f32>)> {
        let bytes = std::fs::read(path.join("model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<(String, Vec<f32>)> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (name, values)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let (fresh, committed) = (tensors(tmp.path()), tensors(&dir));
    assert_eq!(
        fresh.iter().map(|t| &t.0).collect::<Vec<_>>(),
        committed.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in fresh.iter().zip(&committed) {
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-5, "{name} differs from the committed export by {d}");
    }

    // transformers (tools/check_export.py --write-reference) loaded it with no missing,
    // unexpected or mismatched keys, and phi-zoo reads the same logits from it.
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert_eq!(reference[key], serde_json::json!([]), "{key}");
    }
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let expected: Vec<f32> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .flat_map(|pos| pos.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let device = Default::default();
    let loaded = phi_zoo::Checkpoint::open(&dir)
        .and_then(|c| c.load::<Cpu>(&device))
        .unwrap();
    let ours = to_vec(loaded.forward_ids(&ids, &device).unwrap());
    let d = max_abs_diff(&ours, &expected);
    assert!(
        d <= 1e-4,
        "phi-zoo vs transformers on the merged export: {d}"
    );
}

#[test]
fn fixture_training_steps_lower_the_loss_on_the_cpu() {
    let (full, lora) = fixture_training_losses::<Train>(4, &Default::default());
    eprintln!("full {full:?}, LoRA {lora:?}");
    assert!(full[3] < full[0] && lora[3] < lora[0], "{full:?} {lora:?}");
}

/// Mixed precision (products in bf16, `Phi::with_matmul_dtype`): the parameters stay f32 (master
/// weights, updated by f32 gradients), the loss is computed in f32 and follows the f32 run's to
/// bf16's precision, and falls; the products did run in bf16 (the logits differ from f32's).
#[test]
fn bf16_mixed_precision_trains_f32_master_weights_as_f32_does() {
    use burn::tensor::{DType, FloatDType};
    let device = Default::default();
    let steps = 4;
    let ((full32, lora32), _) =
        crate::fixtures::fixture_training_losses_in::<Train>(steps, None, &device);
    let ((full16, lora16), trained) = crate::fixtures::fixture_training_losses_in::<Train>(
        steps,
        Some(FloatDType::BF16),
        &device,
    );
    eprintln!("f32: {full32:?} {lora32:?}\nbf16 products: {full16:?} {lora16:?}");
    for (f32_losses, mixed) in [(&full32, &full16), (&lora32, &lora16)] {
        assert!(
            mixed[steps - 1] < mixed[0],
            "mixed precision lowers the loss: {mixed:?}"
        );
        for (a, b) in f32_losses.iter().zip(mixed.iter()) {
            assert!(
                (a - b).abs() <= 2e-2 * a.abs(),
                "{f32_losses:?} vs {mixed:?}"
            );
        }
    }
    let weight = trained.model.layers[0].mlp.fc1.weight.val();
    assert_eq!(weight.dtype(), DType::F32, "master weights stay f32");
    let phi = trained.valid();
    let ids = [vec![3u32, 7, 11, 2]];
    let exact = to_vec(
        phi.clone()
            .with_matmul_dtype(None)
            .forward_ids(&ids, &device)
            .unwrap(),
    );
    let mixed = to_vec(phi.forward_ids(&ids, &device).unwrap());
    let d = max_abs_diff(&exact, &mixed);
    // bf16 keeps 8 bits of mantissa: a few 2⁻⁸ of the logits' scale.
    let scale = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        d > 1e-5 && d < 2e-2 * scale,
        "bf16 products move the logits by {d} (scale {scale})"
    );
}

/// Unmerged LoRA through the one forward entry point: with the KV cache it gives the logits of
/// the uncached adapted forward, and greedy generation (one prompt, and a padded batch) gives what
/// the merged model generates.
#[test]
fn unmerged_lora_generates_with_the_cache_as_the_merged_model_does() {
    use std::ops::ControlFlow;

    use phi_zoo::{GenerationConfig, Options, generate, generate_batch};

    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let adapters = patterned_adapters(&phi, &device);
    let merged = adapters.merge_into(phi.clone());
    let prompt: Vec<u32> = vec![5, 17, 42, 8, 61];

    let ids = phi
        .ids_tensor(std::slice::from_ref(&prompt), &device)
        .unwrap();
    let whole = to_vec(phi.forward_adapted(ids.clone(), &adapters).unwrap());
    let mut cache = phi.new_cache(1, 16, &device);
    let mut pieces = Vec::new();
    for (start, end) in [(0, 3), (3, 5)] {
        let part = ids.clone().slice([0..1, start..end]);
        let options = Options::cached(&mut cache).with_adapters(Some(&adapters));
        pieces.extend(to_vec(phi.logits(part, options).unwrap()));
    }
    let d = max_abs_diff(&whole, &pieces);
    assert!(d <= 1e-5, "cached adapted logits differ by {d}");

    let config = GenerationConfig {
        max_new_tokens: 10,
        sampling: None,
        eos_token_ids: vec![],
        ..GenerationConfig::for_model(phi.config(), None)
    };
    let go = |model: &dyn phi_zoo::LanguageModel<Cpu>| {
        generate(model, &prompt, &config, &device, |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .ids
    };
    let adapted = go(&phi.with_adapters(&adapters));
    assert_eq!(
        adapted,
        go(&merged),
        "unmerged and merged LoRA generate alike"
    );
    assert_ne!(adapted, go(&phi), "the adapters change what is generated");

    let prompts = vec![prompt.clone(), vec![3, 9]];
    let batch = |model: &dyn phi_zoo::LanguageModel<Cpu>| {
        generate_batch(model, &prompts, &config, &device)
            .unwrap()
            .into_iter()
            .map(|g| g.ids)
            .collect::<Vec<_>>()
    };
    assert_eq!(batch(&phi.with_adapters(&adapters)), batch(&merged));
}
