//! Parity on the wgpu backend, f32 (runs on Mesa's lavapipe, a CPU Vulkan driver, where there is
//! no GPU): `cargo test --features wgpu --test all wgpu` (`-- --ignored` for the cached decode).

use phi_zoo::backend::Wgpu;
use phi_zoo::{Checkpoint, Phi};

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
#[ignore = "known bug: cached decode on wgpu differs from transformers by ~4 from the first step \
            (2.98e-6 for the full forward; correct on Flex); under investigation"]
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
