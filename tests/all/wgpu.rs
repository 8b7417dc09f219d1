//! Parity on the wgpu backend, f32 (runs on Mesa's lavapipe, a CPU Vulkan driver, where there is
//! no GPU): `cargo test --features wgpu --test all wgpu` (`-- --ignored` for the two known failures).

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
#[ignore = "known bug: batched decode on wgpu is wrong from the first step because a batch of \
            single tokens is (see wgpu_batch_of_single_tokens_matches_transformers)"]
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

#[test]
#[ignore = "known bug: on wgpu a batch of 2 rows of 1 token gives logits off by 3.8, while 1 row of 1 \
            token and 2 rows of 2 tokens match to 1e-6; this is what breaks batched cached decode"]
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
