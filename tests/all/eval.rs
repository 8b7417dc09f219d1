//! Evaluation: perplexity and multiple-choice scores against full-forward log-softmax sums on a
//! fixture, pass@k against the binomial formula, the raw-format readers, and the sandbox against
//! HumanEval's canonical solutions and hostile programs.

use phi_zoo::backend::Cpu;
use phi_zoo::eval::choice::{
    ChoiceItem, ChoiceSummary, ItemScore, TokenItem, encode_items, score_items,
};
use phi_zoo::eval::pass_at_k::pass_at_k;
use phi_zoo::eval::perplexity::{perplexity, windows};
use phi_zoo::eval::tasks::ChoiceTask;
use phi_zoo::{Phi, PhiTokenizer};

use crate::fixtures::fixture;

/// Σ log p(sequence[p + 1] | sequence[..=p]) over `positions`, from one full forward, in f64.
fn full_forward_log_probs(
    phi: &Phi<Cpu>,
    sequence: &[u32],
    positions: std::ops::Range<usize>,
) -> f64 {
    let device = Default::default();
    // The last token is only a target.
    let logits = phi
        .forward_ids(&[sequence[..sequence.len() - 1].to_vec()], &device)
        .unwrap();
    let [_, seq, vocab] = logits.dims();
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    positions
        .map(|p| {
            assert!(p + 1 < sequence.len() && p < seq);
            let row = &values[p * vocab..(p + 1) * vocab];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            row[sequence[p + 1] as usize] as f64 - max - sum.ln()
        })
        .sum()
}

/// Deterministic pseudo-random ids below `vocab`.
fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

#[test]
fn perplexity_equals_the_mean_nll_of_full_forwards_for_any_stride() {
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let context = phi.config().max_position_embeddings;
    let vocab = phi.config().vocab_size;
    let stream = ids(150, vocab, 7);
    for stride in [context / 2, 24, context] {
        let report = perplexity(
            &phi,
            &stream,
            context,
            stride,
            3,
            Some(300),
            &device,
            |_, _| {},
        )
        .unwrap();
        let (mut nll, mut tokens) = (0.0, 0);
        for w in windows(stream.len(), context, stride) {
            let window = &stream[w.begin..w.end];
            nll -= full_forward_log_probs(
                &phi,
                window,
                (w.first - w.begin - 1)..(w.end - w.begin - 1),
            );
            tokens += w.end - w.first;
        }
        let expected = (nll / tokens as f64).exp();
        let relative = (report.perplexity - expected).abs() / expected;
        eprintln!(
            "stride {stride}: perplexity {} vs {expected} ({relative:.1e})",
            report.perplexity
        );
        assert!(
            relative < 1e-5,
            "stride {stride}: {} vs {expected}",
            report.perplexity
        );
        assert_eq!(report.tokens, tokens);
        // Every token but the first is scored once when windows overlap; with stride = context,
        // each window's first token has no context.
        let unscored = if stride == context {
            stream.len().div_ceil(context)
        } else {
            1
        };
        assert_eq!(report.tokens, stream.len() - unscored, "stride {stride}");
        let bits = report.nll_sum / (std::f64::consts::LN_2 * 300.0);
        assert!((report.bits_per_byte.unwrap() - bits).abs() < 1e-12);
    }
    assert!(perplexity(&phi, &stream, context + 1, 8, 1, None, &device, |_, _| {}).is_err());
    assert!(perplexity(&phi, &stream, context, 0, 1, None, &device, |_, _| {}).is_err());
}

#[test]
fn choice_scores_are_sums_of_full_forward_log_softmax_with_and_without_prefix_sharing() {
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let vocab = phi.config().vocab_size;
    // Shared contexts with continuations of different lengths, and one with distinct contexts
    // (WinoGrande's shape), and a context long enough to be cut.
    let context = ids(20, vocab, 1);
    let shared = TokenItem {
        id: "shared".into(),
        pairs: [1usize, 4, 2, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| (context.clone(), ids(n, vocab, 10 + i as u64)))
            .collect(),
        norm_chars: vec![1, 4, 2, 7],
        gold: 1,
    };
    let split = TokenItem {
        id: "split".into(),
        pairs: vec![
            (ids(9, vocab, 3), ids(5, vocab, 4)),
            (ids(12, vocab, 5), ids(5, vocab, 4)),
        ],
        norm_chars: vec![5, 5],
        gold: 0,
    };
    let long = TokenItem {
        id: "long".into(),
        pairs: vec![
            (ids(70, vocab, 6), ids(3, vocab, 8)),
            (ids(70, vocab, 6), ids(2, vocab, 9)),
        ],
        norm_chars: vec![3, 2],
        gold: 0,
    };
    let items = [shared, split, long];
    let (plain, plain_counts) = score_items(&phi, &items, false, &device, |_, _| {}).unwrap();
    let (cached, cached_counts) = score_items(&phi, &items, true, &device, |_, _| {}).unwrap();
    let limit = phi.config().max_position_embeddings;
    for (item, (a, b)) in items.iter().zip(plain.iter().zip(&cached)) {
        for (i, (context, continuation)) in item.pairs.iter().enumerate() {
            let cut = (context.len() + continuation.len()).saturating_sub(limit + 1);
            let context = &context[cut..];
            let sequence: Vec<u32> = context.iter().chain(continuation).copied().collect();
            let from = context.len() - 1;
            let expected = full_forward_log_probs(&phi, &sequence, from..from + continuation.len());
            for (mode, got) in [("alone", a.scores[i]), ("shared", b.scores[i])] {
                assert!(
                    (got - expected).abs() < 1e-4,
                    "{} choice {i} ({mode}): {got} vs {expected}",
                    item.id
                );
            }
        }
    }
    // The same naive count either way; sharing computes fewer positions.
    assert_eq!(plain_counts.naive, cached_counts.naive);
    assert!(
        cached_counts.computed < plain_counts.computed,
        "{cached_counts:?} vs {plain_counts:?}"
    );
    eprintln!("positions: {plain_counts:?} alone, {cached_counts:?} shared");
}

/// Code completions are generated as one batch with a seed per row and a stop test per row:
/// rows stop on their own, and samples of one prompt differ by seed alone.
#[test]
fn batched_generation_stops_rows_alone_and_seeds_each_row() {
    use phi_zoo::{GenerationConfig, Sampling, StopReason, generate, generate_batch_until};
    let device = Default::default();
    let phi = fixture::<Cpu>(&device);
    let prompt = ids(5, phi.config().vocab_size, 11);
    let config = GenerationConfig {
        max_new_tokens: 8,
        sampling: Some(Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }),
        ..GenerationConfig::default()
    };
    let prompts = vec![prompt.clone(); 3];
    let out = generate_batch_until(&phi, &prompts, &config, &[7, 7, 8], &device, |row, ids| {
        row == 0 && ids.len() == 3
    })
    .unwrap();
    assert_eq!((out[0].ids.len(), out[0].stop), (3, StopReason::Callback));
    assert_eq!(
        (out[1].ids.len(), out[1].stop),
        (8, StopReason::MaxNewTokens)
    );
    // Row 0 is row 1 cut short (same seed); each equals generating alone with its seed.
    assert_eq!(out[0].ids[..], out[1].ids[..3]);
    for (row, seed) in [(1, 7), (2, 8)] {
        let alone = generate(
            &phi,
            &prompt,
            &GenerationConfig {
                seed,
                ..config.clone()
            },
            &device,
            |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(out[row].ids, alone.ids, "row {row}");
    }
    assert_ne!(
        out[1].ids, out[2].ids,
        "different seeds drew the same eight tokens"
    );
}

#[test]
fn acc_and_acc_norm_follow_lm_evals_definitions() {
    // Raw scores pick the short choice; per character, the long one.
    let differ = ItemScore::new("a".into(), vec![-10.0, -12.0], &[2, 20], 1);
    assert_eq!((differ.pick, differ.pick_norm), (0, 1));
    let agree = ItemScore::new("b".into(), vec![-3.0, -9.0, -4.0], &[3, 3, 3], 0);
    assert_eq!((agree.pick, agree.pick_norm), (0, 0));
    let wrong = ItemScore::new("c".into(), vec![-1.0, -5.0], &[1, 1], 1);
    let summary = ChoiceSummary::of(&[differ, agree, wrong]);
    assert_eq!(summary.items, 3);
    assert!((summary.acc - 1.0 / 3.0).abs() < 1e-12);
    assert!((summary.acc_norm - 2.0 / 3.0).abs() < 1e-12);
    // Sample standard deviation over √n: for 1 of 3, sqrt((2/3 · 1/3) / 2).
    assert!((summary.acc_stderr - (2.0f64 / 9.0 / 2.0).sqrt()).abs() < 1e-12);

    // Encoding: trailing spaces move to the continuation; the whole is split at the context's
    // token count; choices follow one space.
    let tokenizer = PhiTokenizer::bundled();
    let item = ChoiceItem::shared("q".into(), "The sky is ".into(), &["blue".into()], 0, " ");
    let encoded = encode_items(&tokenizer, &[item]).unwrap();
    let (context, continuation) = &encoded[0].pairs[0];
    assert_eq!(context, &tokenizer.encode("The sky is").unwrap());
    let whole = tokenizer.encode("The sky is  blue").unwrap();
    assert_eq!([&context[..], &continuation[..]].concat(), whole);
    assert_eq!(encoded[0].norm_chars, vec![4]);
}

#[test]
fn pass_at_k_equals_the_binomial_formula() {
    fn choose(n: u128, k: u128) -> u128 {
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }
    for (n, c, k) in [
        (10, 0, 1),
        (10, 10, 1),
        (10, 3, 1),
        (10, 3, 5),
        (5, 2, 4),
        (20, 1, 20),
        (30, 7, 10),
        (40, 13, 10),
        (1, 1, 1),
        (1, 0, 1),
    ] {
        let exact = if n - c < k {
            1.0
        } else {
            1.0 - choose(n - c, k) as f64 / choose(n, k) as f64
        };
        let got = pass_at_k(n as usize, c as usize, k as usize).unwrap();
        assert!(
            (got - exact).abs() < 1e-12,
            "n {n} c {c} k {k}: {got} vs {exact}"
        );
    }
    assert_eq!(pass_at_k(3, 1, 4), None);
    assert_eq!(pass_at_k(3, 1, 0), None);
}

/// Writes `text` to `name` in `dir`.
fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_raw_format_reads_into_lm_evals_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let read = |task: &str, path: &std::path::Path, shots: usize| {
        task.parse::<ChoiceTask>()
            .unwrap()
            .read(path, shots)
            .unwrap()
    };
    let one = |items: Vec<ChoiceItem>| {
        assert_eq!(items.len(), 1);
        items.into_iter().next().unwrap()
    };

    let jsonl = write(
        d,
        "mc.jsonl",
        r#"{"context": "2 + 2 =", "choices": ["4", "5"], "gold": 0, "id": "sum"}"#,
    );
    let item = one(read("mc", &jsonl, 0));
    assert_eq!((item.id.as_str(), item.gold), ("sum", 0));
    assert_eq!(item.requests[1].continuation, " 5");

    let hellaswag = write(
        d,
        "hellaswag.jsonl",
        r#"{"ind": 4, "activity_label": "Baking cookies", "ctx_a": "A woman mixes flour.", "ctx_b": "she [header] Pours it", "endings": ["into a bowl [title] now.", "onto  the floor."], "label": "0"}"#,
    );
    let item = one(read("hellaswag", &hellaswag, 0));
    assert_eq!(
        item.requests[0].context,
        "Baking cookies: A woman mixes flour. She pours it"
    );
    assert_eq!(item.requests[0].continuation, " into a bowl. now.");
    assert_eq!(item.requests[1].continuation, " onto the floor.");
    assert_eq!(item.id, "4");

    let piqa = write(
        d,
        "piqa/valid.jsonl",
        r#"{"goal": "Open a jar", "sol1": "Twist the lid", "sol2": "Eat the lid"}"#,
    );
    write(d, "piqa/valid-labels.lst", "0\n");
    let item = one(read("piqa", &piqa, 0));
    assert_eq!(item.requests[0].context, "Question: Open a jar\nAnswer:");
    assert_eq!(
        (item.gold, item.requests[1].continuation.as_str()),
        (0, " Eat the lid")
    );

    let arc = write(
        d,
        "arc.jsonl",
        concat!(
            r#"{"id": "a1", "question": {"stem": "What is hot?", "choices": [{"text": "ice", "label": "A"}, {"text": "fire", "label": "B"}]}, "answerKey": "B"}"#,
            "\n",
            r#"{"id": "a2", "question": "What is cold?", "choices": {"text": ["ice", "fire"], "label": ["1", "2"]}, "answerKey": "1"}"#,
        ),
    );
    let items = read("arc_challenge", &arc, 0);
    assert_eq!(
        items[0].requests[0].context,
        "Question: What is hot?\nAnswer:"
    );
    assert_eq!((items[0].gold, items[1].gold), (1, 0));

    let obqa = write(
        d,
        "obqa.jsonl",
        r#"{"id": "o1", "question": {"stem": "The sun is a", "choices": [{"text": "star", "label": "A"}, {"text": "moon", "label": "B"}]}, "answerKey": "A"}"#,
    );
    let item = one(read("openbookqa", &obqa, 0));
    assert_eq!(
        (item.requests[0].context.as_str(), item.gold),
        ("The sun is a", 0)
    );

    let wino = write(
        d,
        "wino.jsonl",
        r#"{"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup", "option2": "the table", "answer": "2"}"#,
    );
    let item = one(read("winogrande", &wino, 0));
    assert_eq!(
        item.requests[0].context,
        "The cup fell off the table because the cup"
    );
    assert_eq!(
        item.requests[1].context,
        "The cup fell off the table because the table"
    );
    assert_eq!(item.requests[0].continuation, " was wobbly.");
    assert_eq!(item.gold, 1);

    let boolq = write(
        d,
        "boolq.jsonl",
        r#"{"question": "is water wet", "passage": "Water is a liquid.", "answer": true}"#,
    );
    let item = one(read("boolq", &boolq, 0));
    assert_eq!(
        item.requests[0].context,
        "Water is a liquid.\nQuestion: is water wet?\nAnswer:"
    );
    assert_eq!(
        (item.gold, item.requests[1].continuation.as_str()),
        (1, " yes")
    );

    let siqa = write(
        d,
        "siqa/dev.jsonl",
        r#"{"context": "Kai gave a gift.", "question": "How does Kai feel?", "answerA": "generous", "answerB": "angry", "answerC": "sleepy"}"#,
    );
    write(d, "siqa/dev-labels.lst", "1\n");
    let item = one(read("siqa", &siqa, 0));
    assert_eq!(
        item.requests[0].context,
        "Q: Kai gave a gift. How does Kai feel?\nA:"
    );
    assert_eq!(item.gold, 0);

    write(
        d,
        "mmlu/dev/astronomy_dev.csv",
        "\"What orbits Earth?\",Moon,Sun,Mars,Venus,A\n",
    );
    let mmlu = write(
        d,
        "mmlu/test/astronomy_test.csv",
        "\"Which is a star, \"\"really\"\"?\",Moon,Sun,Mars,Venus,B\n",
    );
    let item = one(read("mmlu", &mmlu, 1));
    assert_eq!(
        item.requests[0].context,
        "The following are multiple choice questions (with answers) about astronomy.\n\n\
         What orbits Earth?\nA. Moon\nB. Sun\nC. Mars\nD. Venus\nAnswer: A\n\n\
         Which is a star, \"really\"?\nA. Moon\nB. Sun\nC. Mars\nD. Venus\nAnswer:"
    );
    assert_eq!(
        (item.gold, item.requests[1].continuation.as_str()),
        (1, " B")
    );

    // Malformed rows name the file and line.
    let bad = write(
        d,
        "bad.jsonl",
        "{\"context\": \"x\", \"choices\": [\"a\"], \"gold\": 0}\n{\"context\": 3}\n",
    );
    let error = ChoiceTask::Jsonl.read(&bad, 0).unwrap_err();
    assert!(error.contains("bad.jsonl:2"), "{error}");
    let error = ChoiceTask::Jsonl
        .read(
            &write(
                d,
                "gold.jsonl",
                r#"{"context": "x", "choices": ["a"], "gold": 3}"#,
            ),
            0,
        )
        .unwrap_err();
    assert!(error.contains("gold 3"), "{error}");
}

#[cfg(target_os = "linux")]
mod sandbox {
    use phi_zoo::eval::code::{HUMANEVAL_STOPS, cut_at_stops, humaneval, read_mbpp};
    use phi_zoo::eval::sandbox::{Sandbox, Verdict};

    fn threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    #[test]
    fn humaneval_canonical_solutions_pass_and_broken_ones_fail() {
        let sandbox = Sandbox::new().unwrap();
        let problems = humaneval().unwrap();
        assert_eq!(problems.len(), 164);
        let programs: Vec<String> = problems
            .iter()
            .map(|p| p.program(p.canonical.as_deref().unwrap()))
            .collect();
        let started = std::time::Instant::now();
        let results = sandbox.run_all(&programs, threads());
        let failures: Vec<_> = problems
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.verdict != Verdict::Passed)
            .map(|(p, r)| format!("{}: {:?} {}", p.task_id, r.verdict, r.detail))
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
        eprintln!(
            "164 canonical solutions passed in {:.1} s; isolation {:?}",
            started.elapsed().as_secs_f64(),
            sandbox.isolation()
        );

        // The canonical solution without its last statement, and a body that returns a wrong
        // value, must each fail every problem.
        let broken: Vec<String> = problems
            .iter()
            .flat_map(|p| {
                let canonical = p.canonical.as_deref().unwrap();
                let lines: Vec<&str> = canonical.trim_end().lines().collect();
                let cut = lines[..lines.len() - 1].join("\n") + "\n    pass\n";
                let wrong = "    return 'a wrong value'\n".to_string();
                [p.program(&cut), p.program(&wrong)]
            })
            .collect();
        let results = sandbox.run_all(&broken, threads());
        let passed: Vec<String> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.verdict == Verdict::Passed)
            .map(|(i, _)| format!("{} ({})", problems[i / 2].task_id, ["cut", "wrong"][i % 2]))
            .collect();
        assert!(passed.is_empty(), "broken solutions passed: {passed:?}");
    }

    #[test]
    fn hostile_programs_are_contained_and_the_harness_lives() {
        let mut sandbox = Sandbox::new().unwrap();
        sandbox.timeout = std::time::Duration::from_secs(3);
        let isolation = sandbox.isolation();
        eprintln!("isolation: {isolation:?}");
        let cases: [(&str, &str, &[Verdict]); 7] = [
            (
                "infinite loop",
                "while True:\n    pass\n",
                &[Verdict::Timeout],
            ),
            (
                "fork bomb",
                "import os\nwhile True:\n    os.fork()\n",
                &[Verdict::Failed, Verdict::Timeout, Verdict::Error],
            ),
            (
                "10 GB allocation",
                "x = bytearray(10 * 1024**3)\n",
                &[Verdict::Failed],
            ),
            (
                "1 GB file",
                "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 1024**2)\n",
                &[Verdict::Failed],
            ),
            (
                "kill the parent",
                "import os\nos.kill(os.getppid(), 9)\n",
                &[Verdict::Error],
            ),
            (
                "read outside",
                "print(open('/etc/passwd').read()[:10])\nimport os\nprint(os.listdir('/root'))\n",
                if isolation.landlock_abi > 0 {
                    &[Verdict::Failed]
                } else {
                    &[Verdict::Passed]
                },
            ),
            (
                "network",
                "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n",
                if isolation.network_namespace || isolation.landlock_abi >= 4 {
                    &[Verdict::Failed]
                } else {
                    &[Verdict::Failed, Verdict::Passed]
                },
            ),
        ];
        for (name, program, allowed) in cases {
            let started = std::time::Instant::now();
            let result = sandbox.run(program);
            eprintln!(
                "{name}: {:?} in {:.2} s: {}",
                result.verdict,
                started.elapsed().as_secs_f64(),
                result.detail.lines().last().unwrap_or("")
            );
            assert!(allowed.contains(&result.verdict), "{name}: {result:?}");
            assert!(
                started.elapsed().as_secs_f64() < 10.0,
                "{name} held the harness"
            );
            // The harness still runs checks, and nothing the hostile one started survives.
            let after = sandbox.run("assert 1 + 1 == 2\n");
            assert_eq!(after.verdict, Verdict::Passed, "after {name}: {after:?}");
        }
    }

    /// MBPP's original format: the paper's prompt with the tests shown; its reference code passes
    /// through the sandbox (with its setup code), a wrong one fails.
    #[test]
    fn mbpp_problems_read_and_their_reference_code_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbpp.jsonl");
        let rows = [
            serde_json::json!({
                "task_id": 2,
                "text": "Write a function to find the shared elements of two tuples.",
                "code": "def shared(a, b):\n    return tuple(sorted(set(a) & set(b)))",
                "test_list": ["assert shared((3, 4, 5), (5, 4, 10)) == (4, 5)", "assert shared((1,), (2,)) == ()"],
                "test_setup_code": "",
            }),
            serde_json::json!({
                "task_id": 3,
                "text": "Write a function that scales a value by the module's factor.",
                "code": "def scale(x):\n    return x * FACTOR",
                "test_list": ["assert scale(2) == 6"],
                "test_setup_code": "FACTOR = 3",
            }),
        ];
        let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let problems = read_mbpp(&path).unwrap();
        assert_eq!(problems[0].task_id, "Mbpp/2");
        assert_eq!(
            problems[0].prompt,
            "You are an expert Python programmer, and here is your task: Write a function to find \
             the shared elements of two tuples. Your code should pass these tests:\n\n\
             assert shared((3, 4, 5), (5, 4, 10)) == (4, 5)\nassert shared((1,), (2,)) == ()\n"
        );
        let sandbox = Sandbox::new().unwrap();
        for problem in &problems {
            let good = sandbox.run(&problem.program(problem.canonical.as_deref().unwrap()));
            assert_eq!(
                good.verdict,
                Verdict::Passed,
                "{}: {good:?}",
                problem.task_id
            );
            let bad = sandbox.run(&problem.program("def shared(a, b):\n    return ()\n"));
            assert_eq!(bad.verdict, Verdict::Failed, "{}", problem.task_id);
        }
        std::fs::write(&path, "{\"task_id\": 1}\n").unwrap();
        let error = read_mbpp(&path).unwrap_err();
        assert!(error.contains("mbpp.jsonl:1"), "{error}");
    }

    #[test]
    fn completions_are_cut_at_humaneval_stops() {
        let text = "    return x\n\ndef other():\n    pass";
        assert_eq!(cut_at_stops(text, &HUMANEVAL_STOPS), "    return x\n");
        assert_eq!(
            cut_at_stops("    return 1", &HUMANEVAL_STOPS),
            "    return 1"
        );
    }
}

/// `--task` and `--data` as the example takes them: a bare path goes to the one task that takes
/// data, `task=PATH` otherwise; ambiguity and MBPP without data are refused.
#[test]
fn tasks_and_their_data_parse_as_the_command_line_gives_them() {
    use phi_zoo::eval::run::Task;
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let defaults = Task::parse_all(&[], &[], ChoiceTask::Jsonl).unwrap();
    assert_eq!(
        defaults,
        [
            Task::Perplexity(None),
            Task::Choice {
                format: ChoiceTask::Jsonl,
                data: None
            },
            Task::HumanEval
        ]
    );
    let one = Task::parse_all(
        &names(&["mc"]),
        &names(&["hs.jsonl"]),
        ChoiceTask::Hellaswag,
    )
    .unwrap();
    assert_eq!(
        one,
        [Task::Choice {
            format: ChoiceTask::Hellaswag,
            data: Some("hs.jsonl".into())
        }]
    );
    let two = Task::parse_all(
        &names(&["perplexity", "mbpp"]),
        &names(&["perplexity=wiki.txt", "mbpp=mbpp.jsonl"]),
        ChoiceTask::Jsonl,
    )
    .unwrap();
    assert_eq!(
        two,
        [
            Task::Perplexity(Some("wiki.txt".into())),
            Task::Mbpp("mbpp.jsonl".into())
        ]
    );
    assert!(
        Task::parse_all(&[], &names(&["x.jsonl"]), ChoiceTask::Jsonl)
            .unwrap_err()
            .contains("task=PATH")
    );
    assert!(
        Task::parse_all(&names(&["mbpp"]), &[], ChoiceTask::Jsonl)
            .unwrap_err()
            .contains("mbpp needs")
    );
    assert!(
        Task::parse_all(&names(&["bbh"]), &[], ChoiceTask::Jsonl)
            .unwrap_err()
            .contains("unknown task")
    );
}

/// A corpus and the token store prepared from it are the same token stream for perplexity, with
/// the same byte count.
#[test]
fn a_corpus_and_its_token_store_give_one_token_stream() {
    use phi_zoo::datasets::{Corpus, PrepareOptions, prepare};
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write(
        dir.path(),
        "docs.jsonl",
        "{\"text\": \"def add(a, b):\\n    return a + b\"}\n{\"text\": \"Plants need light.\"}\n",
    );
    let tokenizer = PhiTokenizer::bundled();
    let (ids, bytes) = phi_zoo::eval::corpus_tokens(&jsonl, "text", &tokenizer).unwrap();
    let store = dir.path().join("docs.store");
    prepare(
        &[Corpus::jsonl(&jsonl, "text")],
        &tokenizer,
        &store,
        &PrepareOptions::default(),
    )
    .unwrap();
    let (stored, stored_bytes) = phi_zoo::eval::corpus_tokens(&store, "text", &tokenizer).unwrap();
    // The store ends each document with <|endoftext|>; the corpus stream only separates them.
    assert_eq!(&stored[..ids.len()], &ids[..]);
    assert_eq!(stored.len(), ids.len() + 1);
    assert_eq!((bytes, stored_bytes), (49, 49));
}
