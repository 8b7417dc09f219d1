//! The KV cache and generation against transformers: cached decode, chunked prefill, greedy ids.

use std::ops::ControlFlow;

use burn::tensor::Tensor;
use phi_zoo::{GenerationConfig, StopReason, generate};
use phi_zoo::{PhiError, Sampling};

use crate::fixtures::{FIXTURES, Reference, TOLERANCE, load, max_abs_diff, to_vec};

/// Feeds the reference rows in chunks of the given sizes and returns all logits, `[batch, seq, vocab]` flattened.
fn chunked_logits(fixture: &str, layout: &str, chunks: &[usize]) -> (Vec<f32>, Reference) {
    let device = Default::default();
    let reference = Reference::load(fixture);
    let model = load(fixture, layout);
    let seq = reference.seq();
    assert_eq!(chunks.iter().sum::<usize>(), seq);
    let mut cache = model.new_cache(reference.ids.len(), seq, &device);
    let mut pieces = Vec::new();
    let mut start = 0;
    for &n in chunks {
        let rows: Vec<Vec<u32>> = reference
            .ids
            .iter()
            .map(|r| r[start..start + n].to_vec())
            .collect();
        pieces.push(
            model
                .forward_cached(model.ids_tensor(&rows, &device).unwrap(), &mut cache)
                .unwrap(),
        );
        start += n;
    }
    assert_eq!(cache.len(), seq);
    (to_vec(Tensor::cat(pieces, 1)), reference)
}

#[test]
fn cached_decode_matches_the_full_forward() {
    for fixture in FIXTURES {
        let seq = Reference::load(fixture).seq();
        for layout in [
            "v3",
            Reference::load(fixture).layouts.last().unwrap().as_str(),
        ] {
            let (logits, reference) = chunked_logits(fixture, layout, &vec![1; seq]);
            let d = max_abs_diff(&logits, &reference.logits);
            eprintln!("{fixture}/{layout}: token-by-token decode, max |Δ| {d:.2e}");
            assert!(d <= TOLERANCE, "{fixture}/{layout}: {d}");
        }
    }
}

#[test]
fn chunked_prefill_matches_one_forward() {
    for fixture in FIXTURES {
        for chunks in [[3, 1, 5], [8, 1, 0], [1, 7, 1]] {
            let chunks: Vec<usize> = chunks.into_iter().filter(|&n| n > 0).collect();
            let (logits, reference) = chunked_logits(fixture, "v3", &chunks);
            let d = max_abs_diff(&logits, &reference.logits);
            assert!(d <= TOLERANCE, "{fixture} {chunks:?}: {d}");
        }
    }
}

#[test]
fn greedy_ids_are_transformers_ids() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load(fixture, reference.layouts.last().unwrap());
        for (row, expected) in reference.ids.iter().zip(&reference.greedy) {
            let config = GenerationConfig {
                max_new_tokens: expected.len(),
                ..Default::default()
            };
            let out =
                generate(&model, row, &config, &device, |_| ControlFlow::Continue(())).unwrap();
            assert_eq!(&out.ids, expected, "{fixture}");
            assert_eq!(out.stop, StopReason::MaxNewTokens);
        }
    }
}

#[test]
fn generation_stops_on_eos_callback_and_full_context() {
    let device = Default::default();
    let reference = Reference::load("tiny_p05");
    let model = load("tiny_p05", "v3");
    let prompt = &reference.ids[0];
    let expected = &reference.greedy[0];

    let eos = GenerationConfig {
        max_new_tokens: 16,
        eos_token_ids: vec![expected[2]],
        ..Default::default()
    };
    let out = generate(&model, prompt, &eos, &device, |_| ControlFlow::Continue(())).unwrap();
    let first_eos = expected.iter().position(|&t| t == expected[2]).unwrap();
    assert_eq!(
        out.ids,
        expected[..=first_eos],
        "stops at the first EOS, which it keeps"
    );
    assert_eq!(out.stop, StopReason::Eos);

    let mut streamed = Vec::new();
    let out = generate(&model, prompt, &GenerationConfig::default(), &device, |t| {
        streamed.push(t);
        if streamed.len() == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(
        (out.ids.clone(), out.stop),
        (expected[..3].to_vec(), StopReason::Callback)
    );
    assert_eq!(streamed, out.ids);

    let context = model.config().max_position_embeddings;
    let long: Vec<u32> = (0..context as u32 - 2).map(|i| i % 90).collect();
    let out = generate(&model, &long, &GenerationConfig::default(), &device, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((out.ids.len(), out.stop), (3, StopReason::ContextFull));
}

#[test]
fn seeded_sampling_is_reproducible_and_masks_padding() {
    let device = Default::default();
    let model = load("tiny_gqa", "v3");
    let prompt = [5, 9, 13];
    let config = |seed| GenerationConfig {
        max_new_tokens: 24,
        sampling: Some(Sampling {
            temperature: 1.5,
            top_k: Some(40),
            top_p: Some(0.95),
            min_p: Some(0.01),
        }),
        repetition_penalty: 1.1,
        seed,
        vocab_limit: Some(50),
        ..Default::default()
    };
    let run = |seed| {
        generate(&model, &prompt, &config(seed), &device, |_| {
            ControlFlow::Continue(())
        })
        .unwrap()
        .ids
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(
        a.iter().chain(&c).all(|&t| t < 50),
        "ids at or above vocab_limit never appear"
    );
}

#[test]
fn bad_generation_inputs_are_errors() {
    let device = Default::default();
    let model = load("tiny_p05", "v3");
    let go = |prompt: &[u32], config: &GenerationConfig| {
        generate(&model, prompt, config, &device, |_| {
            ControlFlow::Continue(())
        })
    };
    let context = model.config().max_position_embeddings;
    let default = GenerationConfig::default();
    assert!(matches!(go(&[], &default), Err(PhiError::Input(_))));
    assert!(matches!(
        go(&vec![1; context + 1], &default),
        Err(PhiError::Input(_))
    ));
    assert!(
        matches!(go(&[1, 96], &default), Err(PhiError::Input(_))),
        "id outside the vocabulary"
    );
    let cold = GenerationConfig {
        sampling: Some(Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }),
        ..Default::default()
    };
    assert!(matches!(go(&[1], &cold), Err(PhiError::Input(_))));

    let mut cache = model.new_cache(1, 4, &device);
    let ids = model.ids_tensor(&[vec![1, 2, 3]], &device).unwrap();
    model.forward_cached(ids.clone(), &mut cache).unwrap();
    assert!(
        matches!(
            model.forward_cached(ids, &mut cache),
            Err(PhiError::Input(_))
        ),
        "past the cache's capacity"
    );
    let two = model.ids_tensor(&[vec![1], vec![2]], &device).unwrap();
    assert!(
        matches!(
            model.forward_cached(two, &mut cache),
            Err(PhiError::Input(_))
        ),
        "batch mismatch"
    );
}

#[test]
fn a_left_padded_batch_gives_each_row_its_own_logits() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load(fixture, "v3");
        let (seq, vocab) = (reference.seq(), reference.vocab);
        let short = 5;
        // Row 1 is cut to a prefix, so its reference logits are the first `short` positions.
        let pads = [0, seq - short];
        let mut padded_row = vec![0u32; seq - short];
        padded_row.extend_from_slice(&reference.ids[1][..short]);
        let rows = vec![reference.ids[0].clone(), padded_row];
        let mut cache = model.new_padded_cache(&pads, seq, &device);
        let logits = to_vec(
            model
                .forward_cached(model.ids_tensor(&rows, &device).unwrap(), &mut cache)
                .unwrap(),
        );
        let d0 = max_abs_diff(&logits[..seq * vocab], &reference.logits[..seq * vocab]);
        let row1 = &logits[seq * vocab + (seq - short) * vocab..];
        let d1 = max_abs_diff(
            row1,
            &reference.logits[seq * vocab..seq * vocab + short * vocab],
        );
        eprintln!("{fixture}: padded batch, max |Δ| {d0:.2e} (full row), {d1:.2e} (padded row)");
        assert!(d0 <= TOLERANCE && d1 <= TOLERANCE, "{fixture}: {d0} {d1}");
        assert!(
            logits.iter().all(|x| x.is_finite()),
            "padding columns stay finite too"
        );
    }
}

#[test]
fn a_batch_of_prompts_generates_what_each_prompt_does_alone() {
    let device = Default::default();
    for fixture in FIXTURES {
        let reference = Reference::load(fixture);
        let model = load(fixture, "v3");
        let prompts = vec![
            reference.ids[0].clone(),
            reference.ids[1][..5].to_vec(),
            reference.ids[0][..1].to_vec(),
        ];
        let sampled = GenerationConfig {
            max_new_tokens: 12,
            sampling: Some(Sampling {
                temperature: 1.2,
                top_k: Some(30),
                top_p: Some(0.9),
                min_p: None,
            }),
            seed: 9,
            ..Default::default()
        };
        let greedy = GenerationConfig {
            max_new_tokens: 12,
            ..Default::default()
        };
        for config in [greedy, sampled] {
            let batch = phi_zoo::generate_batch(&model, &prompts, &config, &device).unwrap();
            for (prompt, together) in prompts.iter().zip(&batch) {
                let alone = generate(&model, prompt, &config, &device, |_| {
                    ControlFlow::Continue(())
                })
                .unwrap();
                assert_eq!(
                    together,
                    &alone,
                    "{fixture}, prompt of {} tokens",
                    prompt.len()
                );
            }
            if config.sampling.is_none() {
                assert_eq!(
                    batch[0].ids,
                    reference.greedy[0][..12],
                    "{fixture}: transformers' greedy ids"
                );
            }
        }
    }
}
