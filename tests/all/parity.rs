//! Every forward path against transformers' own outputs, for every fixture and checkpoint layout.

use burn::tensor::{Int, Tensor, TensorData};
use phi_zoo::backend::Cpu;
use phi_zoo::{Checkpoint, KeyLayout, PhiError};

use crate::fixtures::{FIXTURES, Reference, TOLERANCE, layout_dir, load, max_abs_diff, to_vec};

#[test]
fn every_layout_matches_transformers() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        for layout in &reference.layouts {
            let model = load(fixture, layout);
            let logits = to_vec(model.forward_ids(&reference.ids, &device).unwrap());
            let ids = model.ids_tensor(&reference.ids, &device).unwrap();
            let hidden = to_vec(model.forward_hidden(ids).unwrap());
            let (dl, dh) = (
                max_abs_diff(&logits, &reference.logits),
                max_abs_diff(&hidden, &reference.hidden),
            );
            eprintln!("{fixture}/{layout}: max |Δ| logits {dl:.2e}, hidden {dh:.2e}");
            assert!(dl <= TOLERANCE, "{fixture}/{layout}: logits differ by {dl}");
            assert!(
                dh <= TOLERANCE,
                "{fixture}/{layout}: hidden states differ by {dh}"
            );
        }
    }
}

#[test]
fn layout_is_told_from_the_keys() {
    for fixture in FIXTURES {
        for layout in Reference::load(fixture).layouts {
            let expected = match &layout[..2] {
                "v1" => KeyLayout::V1MixFormer,
                "v2" => KeyLayout::V2Msft,
                _ => KeyLayout::V3,
            };
            let checkpoint = Checkpoint::open(layout_dir(fixture, &layout)).unwrap();
            assert_eq!(checkpoint.layout(), expected, "{fixture}/{layout}");
        }
    }
}

#[test]
fn each_row_alone_matches_its_row_in_the_batch() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load(fixture, "v3");
        let per_row = reference.seq() * reference.vocab;
        for (r, row) in reference.ids.iter().enumerate() {
            let alone = to_vec(
                model
                    .forward_ids(std::slice::from_ref(row), &device)
                    .unwrap(),
            );
            let expected = &reference.logits[r * per_row..(r + 1) * per_row];
            let d = max_abs_diff(&alone, expected);
            assert!(d <= TOLERANCE, "{fixture} row {r}: {d}");
        }
    }
}

#[test]
fn a_prefix_sees_only_itself() {
    // Causality: the logits of the first k tokens do not depend on what follows them.
    let device = Default::default();
    let reference = Reference::load("tiny_p04");
    let model = load("tiny_p04", "v3");
    let vocab = reference.vocab;
    for k in [1, 4] {
        let prefix: Vec<u32> = reference.ids[0][..k].to_vec();
        let logits = to_vec(model.forward_ids(&[prefix], &device).unwrap());
        assert_eq!(logits.len(), k * vocab, "a single id gives [1][1][vocab]");
        let d = max_abs_diff(&logits, &reference.logits[..k * vocab]);
        assert!(d <= TOLERANCE, "prefix {k}: {d}");
    }
}

#[test]
fn inputs_out_of_range_are_errors() {
    let device = Default::default();
    let model = load("tiny_p05", "v3");
    let max = model.config().max_position_embeddings;
    let vocab = model.config().vocab_size as u32;
    let too_long = vec![vec![1u32; max + 1]];
    let cases: [(&str, Vec<Vec<u32>>); 4] = [
        ("too long", too_long),
        ("id outside the vocabulary", vec![vec![1, vocab]]),
        ("ragged rows", vec![vec![1, 2, 3], vec![1, 2]]),
        ("empty", vec![vec![]]),
    ];
    for (what, rows) in cases {
        match model.forward_ids(&rows, &device) {
            Err(PhiError::Input(message)) => eprintln!("{what}: {message}"),
            other => panic!(
                "{what}: expected an input error, got {:?}",
                other.map(|t| t.dims())
            ),
        }
    }
    // The tensor-level forward checks the length too.
    let ids = Tensor::<Cpu, 2, Int>::from_data(
        TensorData::new(vec![0i64; max + 1], [1, max + 1]),
        &device,
    );
    assert!(matches!(model.forward(ids), Err(PhiError::Input(_))));
}

#[test]
fn a_full_context_matches_at_the_last_positions() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load(fixture, "v3");
        let logits = to_vec(model.forward_ids(&reference.long_ids, &device).unwrap());
        let tail = &logits[logits.len() - 4 * reference.vocab..];
        let d = max_abs_diff(tail, &reference.long_last4);
        eprintln!(
            "{fixture}: full context ({} positions), last 4: max |Δ| {d:.2e}",
            reference.long_ids[0].len()
        );
        assert!(d <= TOLERANCE, "{fixture}: {d}");
    }
}
