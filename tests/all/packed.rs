//! Packed weights for CPU inference (f16, bf16, Q8_0, Q4_0) against transformers' f32 logits:
//! the full forward, a cached decode of every position, greedy ids, and loading that packs
//! each layer as it is read.

use phi_zoo::backend::Cpu;
use phi_zoo::{Checkpoint, GenerationConfig, Phi, WeightFormat};

use crate::fixtures::{FIXTURES, Reference, layout_dir, max_abs_diff, to_vec};

/// The fixture whose every linear layer has rows of whole 32-value blocks (hidden 32,
/// intermediate 64), which Q8_0 and Q4_0 need.
const BLOCK_FIXTURE: &str = "tiny_p05";

/// The largest |Δ| against transformers' f32 logits each format may give on the fixtures: about
/// 1.5 to 2 times the largest measured (`every_format_matches_transformers_within_its_tolerance`
/// prints them; the fixtures' logits reach ±4 to ±7). Measured: f16 6.4e-3, bf16 3.4e-2, Q8_0
/// 9.6e-2 and Q4_0 1.4 (both on `tiny_p05`, the token embedding quantized too). The fixtures'
/// weights are drawn wide (std 0.25 in the head) so that convention errors show; there, one
/// 32-value row per block and Q8_0's step of max/127 move a single layer's logits by 2-4e-2
/// (each layer measured alone), Q4_0's step of max/8 by ten times more. These are the formats'
/// precision, not the kernels' (which are exact on the dequantized weights, `ops::cpu::packed`).
fn tolerance(format: WeightFormat) -> f32 {
    match format {
        WeightFormat::F32 => 1e-4,
        WeightFormat::F16 => 1.5e-2,
        WeightFormat::Bf16 => 7e-2,
        WeightFormat::Q8_0 => 0.15,
        WeightFormat::Q4_0 => 2.5,
    }
}

fn load_as(fixture: &str, format: WeightFormat) -> Phi<Cpu> {
    Checkpoint::open(layout_dir(fixture, "v3"))
        .and_then(|c| c.load_as::<Cpu>(&Default::default(), format))
        .unwrap()
}

/// Every format the fixture's widths allow: the full forward and a cached decode of each
/// position within the format's tolerance of transformers, greedy ids transformers' own.
#[test]
fn every_format_matches_transformers_within_its_tolerance() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        for format in WeightFormat::ALL {
            let quantized = matches!(format, WeightFormat::Q8_0 | WeightFormat::Q4_0);
            if quantized && fixture != BLOCK_FIXTURE {
                let err = Checkpoint::open(layout_dir(fixture, "v3"))
                    .and_then(|c| c.load_as::<Cpu>(&device, format))
                    .unwrap_err();
                assert!(
                    err.to_string().contains("not whole blocks"),
                    "{fixture}: {err}"
                );
                continue;
            }
            let model = load_as(fixture, format);
            assert_eq!(model.weight_format(), format);
            let full = to_vec(model.forward_ids(&reference.ids, &device).unwrap());
            let full_diff = max_abs_diff(&full, &reference.logits);
            let (batch, seq, vocab) = (reference.ids.len(), reference.seq(), reference.vocab);
            let mut cache = model.new_cache(batch, seq, &device);
            let mut decode_diff = 0.0f32;
            for column in 0..seq {
                let ids: Vec<Vec<u32>> = reference.ids.iter().map(|r| vec![r[column]]).collect();
                let step = to_vec(
                    model
                        .forward_cached(model.ids_tensor(&ids, &device).unwrap(), &mut cache)
                        .unwrap(),
                );
                let expected: Vec<f32> = (0..batch)
                    .flat_map(|row| {
                        let at = (row * seq + column) * vocab;
                        reference.logits[at..at + vocab].to_vec()
                    })
                    .collect();
                decode_diff = decode_diff.max(max_abs_diff(&step, &expected));
            }
            eprintln!(
                "{fixture} {format}: full forward {full_diff:.2e}, cached decode {decode_diff:.2e}"
            );
            let bound = tolerance(format);
            assert!(
                full_diff <= bound,
                "{fixture} {format}: {full_diff} > {bound}"
            );
            assert!(
                decode_diff <= bound,
                "{fixture} {format}: {decode_diff} > {bound}"
            );
            if format != WeightFormat::Q4_0 {
                let config = GenerationConfig {
                    max_new_tokens: reference.greedy[0].len(),
                    ..Default::default()
                };
                let out =
                    phi_zoo::generate_batch(&model, &reference.ids, &config, &device).unwrap();
                for (row, generated) in out.iter().enumerate() {
                    assert_eq!(
                        generated.ids, reference.greedy[row],
                        "{fixture} {format} row {row}"
                    );
                }
            }
        }
    }
}

/// Packing after loading gives the model that loading packed gives, and back to f32 the
/// dequantized weights: `with_weight_format` and `load_as` agree, and a packed model computes
/// what its dequantized f32 model does (up to Q8_0's quantized inputs).
#[test]
fn packing_a_loaded_model_equals_loading_it_packed() {
    let device = Default::default();
    let reference = Reference::load(BLOCK_FIXTURE);
    let f32_model = load_as(BLOCK_FIXTURE, WeightFormat::F32);
    for format in [WeightFormat::Q8_0, WeightFormat::Bf16] {
        let packed_after = f32_model.clone().with_weight_format(format).unwrap();
        let packed_on_load = load_as(BLOCK_FIXTURE, format);
        let a = to_vec(packed_after.forward_ids(&reference.ids, &device).unwrap());
        let b = to_vec(packed_on_load.forward_ids(&reference.ids, &device).unwrap());
        assert_eq!(a, b, "{format}");
        let unpacked = packed_on_load
            .with_weight_format(WeightFormat::F32)
            .unwrap();
        assert_eq!(unpacked.weight_format(), WeightFormat::F32);
        let c = to_vec(unpacked.forward_ids(&reference.ids, &device).unwrap());
        // Q8_0 multiplies 16-bit-quantized inputs (3.9e-4 measured), bf16 is exact.
        let d = max_abs_diff(&a, &c);
        let bound = if format == WeightFormat::Q8_0 {
            1e-3
        } else {
            1e-4
        };
        assert!(d < bound, "{format}: the dequantized f32 model: {d}");
    }
}
