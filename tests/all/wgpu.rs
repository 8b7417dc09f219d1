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

/// What burn 0.21's quantized matmul does on wgpu (cubecl) with the block formats phi-zoo packs
/// on the CPU: a weight quantized in blocks of 32 inputs per output (`Q8_0`'s and `Q4_0`'s
/// grouping), multiplied by f32 inputs, against the f32 product over the weight burn dequantizes,
/// and that weight against phi-zoo's `Q8_0` packing of the same values. burn quantizes only along
/// a tensor's innermost dimension (`QuantLevel::block([32, 1])` on the `[in, out]` GPU layout
/// panics in cubek-quant: "Block size must be divisible by 4, got block_size=1", and the panic
/// leaves the device's fusion stream unusable), so the weight is quantized in transformers'
/// `[out, in]` order (`block([1, 32])`) and multiplied through its transposed view. Each scheme
/// either runs right or is reported as burn refusing it; `Q8S` (symmetric 8-bit, `Q8_0`'s range)
/// must run.
#[test]
fn wgpu_quantized_matmul_in_blocks_of_32() {
    use burn::prelude::*;
    use burn::tensor::quantization::{QuantLevel, QuantParam, QuantScheme, QuantStore, QuantValue};
    use phi_zoo::{PackedWeight, WeightFormat};

    let device = Default::default();
    let (rows, d_in, d_out) = (5, 128, 64);
    let value =
        |i: usize, seed: f32| ((i as f32 * 0.377 + seed).sin() * 2.0) * (1.0 + (i % 5) as f32);
    let w_out_in: Vec<f32> = (0..d_out * d_in).map(|i| value(i, 0.5)).collect();
    let x: Vec<f32> = (0..rows * d_in).map(|i| value(i, 2.5) * 0.1).collect();
    let packed = |format| {
        PackedWeight::pack(&w_out_in, [d_out, d_in], format)
            .unwrap()
            .dequantize()
    };
    let (q8_0, q4_0) = (packed(WeightFormat::Q8_0), packed(WeightFormat::Q4_0));
    let w_scale = w_out_in.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut refused = Vec::new();
    for (name, quant) in [
        ("Q8S", QuantValue::Q8S),
        ("Q4S", QuantValue::Q4S),
        ("Q4F", QuantValue::Q4F),
    ] {
        let scheme = QuantScheme::default()
            .with_value(quant)
            .with_level(QuantLevel::block([1, 32]))
            .with_param(QuantParam::F32)
            .with_store(QuantStore::PackedU32(0));
        let tensor = |values: Vec<f32>, shape: [usize; 2]| {
            Tensor::<Wgpu, 2>::from_data(TensorData::new(values, shape), &device)
        };
        let run = || {
            let wq = tensor(w_out_in.clone(), [d_out, d_in]).quantize_dynamic(&scheme);
            let dequantized: Vec<f32> = wq.clone().dequantize().into_data().to_vec().unwrap();
            let w_dq = tensor(dequantized.clone(), [d_out, d_in]);
            // A prompt's rows, then one row (a decode step).
            let (mut quantized, mut f32_product) = (Vec::new(), Vec::new());
            for xs in [
                tensor(x.clone(), [rows, d_in]),
                tensor(x[..d_in].to_vec(), [1, d_in]),
            ] {
                let q: Vec<f32> = xs
                    .clone()
                    .matmul(wq.clone().transpose())
                    .into_data()
                    .to_vec()
                    .unwrap();
                let f: Vec<f32> = xs
                    .matmul(w_dq.clone().transpose())
                    .into_data()
                    .to_vec()
                    .unwrap();
                quantized.extend(q);
                f32_product.extend(f);
            }
            (dequantized, quantized, f32_product)
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok((dequantized, quantized, f32_product)) => {
                let product_d = max_abs_diff(&quantized, &f32_product);
                let scale = f32_product.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let (format, ours, step) = match quant {
                    QuantValue::Q8S => ("Q8_0", &q8_0, w_scale / 127.0),
                    _ => ("Q4_0", &q4_0, w_scale / 7.0),
                };
                let weight_d = max_abs_diff(&dequantized, ours);
                eprintln!(
                    "{name}: quantized matmul (5 rows and 1) vs f32 over its dequantized weight \
                     max |Δ| {product_d:.2e} (outputs up to {scale:.2}); its weight vs \
                     phi-zoo's {format} max |Δ| {weight_d:.2e} (weights up to {w_scale:.2})"
                );
                assert!(product_d <= 1e-4 * scale.max(1.0), "{name}: {product_d}");
                // The same grouping, the scale in f32 rather than f16 (and for 4 bits a grid
                // of ±7 or −8..7 steps of amax/7 or amax/8): within one step.
                assert!(weight_d <= step * 1.01, "{name}: {weight_d}");
            }
            Err(_) => {
                eprintln!("{name}: burn 0.21 on wgpu refused it (a panic inside burn)");
                refused.push(name);
            }
        }
    }
    assert!(
        !refused.contains(&"Q8S"),
        "Q8S in blocks of 32 must run: {refused:?}"
    );
}
