//! Parity on the wgpu backend, f32 (runs on Mesa's lavapipe, a CPU Vulkan driver, where there is
//! no GPU): `cargo test --features wgpu --test all wgpu`.

use phi_zoo::backend::Wgpu;
use phi_zoo::{Checkpoint, GenerationConfig, Phi};

use crate::fixtures::{FIXTURES, Reference, TOLERANCE, layout_dir, max_abs_diff};

fn load_wgpu(fixture: &str) -> Phi<Wgpu> {
    Checkpoint::open(layout_dir(fixture, "v3"))
        .and_then(|c| c.load::<Wgpu>(&Default::default()))
        .unwrap()
}

#[test]
fn wgpu_full_forward_matches_transformers() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load_wgpu(fixture);
        let logits: Vec<f32> = model
            .forward_ids(&reference.ids, &device)
            .unwrap()
            .into_data()
            .iter::<f32>()
            .collect();
        let d = max_abs_diff(&logits, &reference.logits);
        eprintln!("{fixture}: wgpu full forward max |Δ| {d:.2e}");
        assert!(d <= TOLERANCE, "{fixture}: {d}");
    }
}

#[test]
fn wgpu_cached_decode_matches_transformers() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load_wgpu(fixture);
        let (batch, vocab, seq) = (reference.ids.len(), reference.vocab, reference.seq());
        let mut cache = model.new_cache(batch, seq, &device);
        for column in 0..seq {
            let ids: Vec<Vec<u32>> = reference.ids.iter().map(|r| vec![r[column]]).collect();
            let step = model
                .forward_cached(model.ids_tensor(&ids, &device).unwrap(), &mut cache)
                .unwrap();
            let got: Vec<f32> = step.into_data().iter::<f32>().collect();
            let expected: Vec<f32> = (0..batch)
                .flat_map(|row| {
                    let at = (row * seq + column) * vocab;
                    reference.logits[at..at + vocab].to_vec()
                })
                .collect();
            let d = max_abs_diff(&got, &expected);
            assert!(d <= TOLERANCE, "{fixture}, step {column}: {d}");
        }
    }
}

/// A batch of single tokens is the shape of every batched decode step; burn's fused batched
/// matmul got it wrong before the linear layers ran as 2-D products (`common/src/linear.rs`).
#[test]
fn wgpu_batch_of_single_tokens_matches_transformers() {
    let device = Default::default();
    let reference = Reference::load("tiny_p05");
    let model = load_wgpu("tiny_p05");
    let (seq, vocab) = (reference.seq(), reference.vocab);
    let rows = vec![vec![reference.ids[0][0]], vec![reference.ids[1][0]]];
    let got: Vec<f32> = model
        .forward_ids(&rows, &device)
        .unwrap()
        .into_data()
        .iter::<f32>()
        .collect();
    let mut expected = reference.logits[..vocab].to_vec();
    expected.extend_from_slice(&reference.logits[seq * vocab..seq * vocab + vocab]);
    let d = max_abs_diff(&got, &expected);
    assert!(d <= TOLERANCE, "batch 2 × seq 1: {d}");
}

#[test]
fn wgpu_left_padded_batch_generates_transformers_greedy_ids() {
    let device = Default::default();
    let reference = Reference::load("tiny_gqa");
    let model = load_wgpu("tiny_gqa");
    // The second prompt is shorter, so the batch is left-padded and masked.
    let prompts = vec![reference.ids[0].clone(), reference.ids[1][..5].to_vec()];
    let config = GenerationConfig {
        max_new_tokens: 8,
        ..Default::default()
    };
    let batch = phi_zoo::generate_batch(&model, &prompts, &config, &device).unwrap();
    assert_eq!(batch[0].ids, reference.greedy[0][..8]);
    let alone = phi_zoo::generate_batch(&model, &prompts[1..], &config, &device).unwrap();
    assert_eq!(batch[1].ids, alone[0].ids);
}

/// Training on wgpu (autodiff through burn's fused graph): the losses of 4 optimizer steps of full
/// fine-tuning and of LoRA are the CPU's.
#[test]
fn wgpu_training_steps_match_the_cpu() {
    use burn::backend::Autodiff;
    let steps = 4;
    let (cpu_full, cpu_lora) = crate::fixtures::fixture_training_losses::<
        Autodiff<phi_zoo::backend::Cpu>,
    >(steps, &Default::default());
    let (gpu_full, gpu_lora) =
        crate::fixtures::fixture_training_losses::<Autodiff<Wgpu>>(steps, &Default::default());
    eprintln!("full: cpu {cpu_full:?} wgpu {gpu_full:?}\nLoRA: cpu {cpu_lora:?} wgpu {gpu_lora:?}");
    for (cpu, gpu) in [(&cpu_full, &gpu_full), (&cpu_lora, &gpu_lora)] {
        assert!(cpu[steps - 1] < cpu[0], "training lowers the loss: {cpu:?}");
        for (a, b) in cpu.iter().zip(gpu) {
            assert!((a - b).abs() <= 1e-3, "cpu {cpu:?} vs wgpu {gpu:?}");
        }
    }
}

/// Warming the decode kernels runs one step per key bucket and batch size, and leaves nothing
/// behind: generation afterwards gives transformers' greedy ids.
#[test]
fn wgpu_warm_up_runs_every_bucket_then_generates_as_before() {
    let device = Default::default();
    let reference = Reference::load("tiny_p05");
    let model = load_wgpu("tiny_p05");
    let context = model.config().max_position_embeddings;
    let mut seen = Vec::new();
    let steps = phi_zoo::warm_up_decode(&model, &[1, 2, 2], context, &device, |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    let buckets = context.div_ceil(256);
    assert_eq!(
        steps,
        2 * buckets,
        "one step per bucket for each batch size"
    );
    assert_eq!(seen.last(), Some(&(steps, steps)));
    let config = GenerationConfig {
        max_new_tokens: 8,
        ..Default::default()
    };
    let out = phi_zoo::generate(&model, &reference.ids[0], &config, &device, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.ids, reference.greedy[0][..8]);
}
