//! The data side: readers, token stores, mixtures, burn's Dataset and Batcher.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use phi_zoo_common::PhiTokenizer;
use phi_zoo_datasets::corpora::EmbeddedCorpus;
use phi_zoo_datasets::{
    Corpus, DataError, LmBatch, LmBatcher, Mixture, MixtureDataset, MixtureSource, OnMalformed,
    PrepareOptions, ReadReport, StoreWriter, TokenStore, prepare, tokenizer_sha256,
};

type Cpu = burn::backend::Flex;

fn corpora_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/corpora")
        .join(name)
}

/// A store of `tokens` synthetic ids (each id is its own position modulo 1000).
fn synthetic_store(dir: &Path, name: &str, tokens: u64) -> Arc<TokenStore> {
    let path = dir.join(name);
    let mut writer = StoreWriter::create(&path, 1001, 1000).unwrap();
    let ids: Vec<u32> = (0..tokens - 1).map(|i| (i % 1000) as u32).collect();
    writer.push_document(&ids).unwrap();
    writer.finish("test".into(), vec![], 0).unwrap();
    Arc::new(TokenStore::open(&path).unwrap())
}

fn mixture(dir: &Path, weights: &[f64], windows: &[u64], seq_len: usize, seed: u64) -> Mixture {
    let sources = weights
        .iter()
        .zip(windows)
        .enumerate()
        .map(|(i, (&weight, &count))| MixtureSource {
            name: format!("s{i}"),
            store: synthetic_store(dir, &format!("s{i}"), count * (seq_len as u64 + 1)),
            weight,
        })
        .collect();
    Mixture::new(sources, seq_len, seed).unwrap()
}

/// Largest |count − weight × N| over every span of N ≤ `max_len` samples starting in `0..starts`
/// (and over prefixes only when `starts` is 1), for each source.
fn worst_deviation(m: &Mixture, starts: u64, max_len: u64) -> f64 {
    let weights = m.effective_weights();
    let sources: Vec<usize> = (0..starts + max_len).map(|i| m.locate(i).source).collect();
    let mut worst: f64 = 0.0;
    for start in 0..starts as usize {
        let mut counts = vec![0u64; weights.len()];
        for n in 1..=max_len as usize {
            counts[sources[start + n - 1]] += 1;
            for (c, w) in counts.iter().zip(&weights) {
                worst = worst.max((*c as f64 - w * n as f64).abs());
            }
        }
    }
    worst
}

#[test]
fn mixture_quotas_are_exact_over_spans() {
    let dir = tempfile::tempdir().unwrap();
    // The recipes' weights (phi-1.5: 20/80; phi-1.5-web: 20/40/40), and two-source mixtures of
    // any weights: within one sample over every span.
    for weights in [
        vec![0.2, 0.8],
        vec![0.2, 0.4, 0.4],
        vec![0.3, 0.7],
        vec![0.137, 0.863],
        vec![1.0, 1.0, 1.0],
    ] {
        let m = mixture(dir.path(), &weights, &vec![7; weights.len()], 4, 1);
        let worst = worst_deviation(&m, 200, 600);
        assert!(worst <= 1.0, "{weights:?}: a span is off by {worst}");
    }
    // Any weights: within one sample from the start of the stream, and under two over any span.
    for weights in [
        vec![0.5, 0.3, 0.2],
        vec![0.13, 0.29, 0.58],
        vec![0.1, 0.1, 0.1, 0.1, 0.6],
    ] {
        let m = mixture(dir.path(), &weights, &vec![5; weights.len()], 4, 1);
        assert!(worst_deviation(&m, 1, 3000) < 1.0, "{weights:?}: prefix");
        assert!(worst_deviation(&m, 300, 600) < 2.0, "{weights:?}: spans");
    }
}

#[test]
fn every_pass_visits_each_window_once_in_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = mixture(dir.path(), &[0.25, 0.75], &[9, 30], 3, 42);
    let mut passes: Vec<Vec<Vec<u64>>> = vec![vec![]; 2];
    for i in 0..(4 * 9 * 4) {
        let at = m.locate(i);
        let source_passes = &mut passes[at.source];
        if source_passes.len() <= at.pass as usize {
            source_passes.push(vec![]);
        }
        source_passes[at.pass as usize].push(at.window);
    }
    for (source, source_passes) in passes.iter().enumerate() {
        let n = m.windows()[source] as usize;
        let full: Vec<&Vec<u64>> = source_passes.iter().filter(|p| p.len() == n).collect();
        assert!(
            full.len() >= 2,
            "source {source} should wrap at least twice"
        );
        for pass in &full {
            let mut sorted = (*pass).clone();
            sorted.sort();
            assert_eq!(sorted, (0..n as u64).collect::<Vec<_>>());
        }
        assert_ne!(
            full[0], full[1],
            "source {source}: the second pass repeats the first"
        );
    }
}

#[test]
fn samples_are_a_pure_function_of_seed_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let a = mixture(dir.path(), &[0.2, 0.8], &[11, 13], 5, 7);
    let b = mixture(dir.path(), &[0.2, 0.8], &[11, 13], 5, 7);
    let c = mixture(dir.path(), &[0.2, 0.8], &[11, 13], 5, 8);
    let from_zero: Vec<Vec<u32>> = (0..500).map(|i| a.get(i).unwrap()).collect();
    // Reached directly, in another order, from another instance: the same windows.
    for i in (0..500).rev().step_by(7) {
        assert_eq!(b.get(i).unwrap(), from_zero[i as usize]);
    }
    let differs = (0..500).any(|i| c.get(i).unwrap() != from_zero[i as usize]);
    assert!(differs, "another seed should order windows differently");

    // A dataset resumed at sample 123 reads what the run from 0 read there.
    let mixture = Arc::new(a);
    let whole = MixtureDataset::new(mixture.clone(), 0, 400);
    let resumed = MixtureDataset::new(mixture, 123, 100);
    for i in 0..100 {
        assert_eq!(resumed.get(i), whole.get(123 + i));
    }
    assert_eq!(resumed.get(100), None);
}

#[test]
fn the_batcher_shifts_targets_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(mixture(dir.path(), &[1.0], &[10], 6, 0));
    let dataset = MixtureDataset::new(m, 0, 3);
    let items: Vec<_> = (0..3).map(|i| dataset.get(i).unwrap()).collect();
    let batch: LmBatch<Cpu> = LmBatcher.batch(items.clone(), &Default::default());
    assert_eq!(batch.inputs.dims(), [3, 6]);
    let inputs: Vec<i64> = batch.inputs.into_data().iter::<i64>().collect();
    let targets: Vec<i64> = batch.targets.into_data().iter::<i64>().collect();
    for (row, item) in items.iter().enumerate() {
        let t: Vec<i64> = item.tokens.iter().map(|&t| t as i64).collect();
        assert_eq!(inputs[row * 6..row * 6 + 6], t[..6]);
        assert_eq!(targets[row * 6..row * 6 + 6], t[1..]);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn prepare_round_trips_and_ignores_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = PhiTokenizer::bundled();
    let docs: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "Document {i}: caf\u{e9} {}\n    indented line",
                "word ".repeat(i % 9)
            )
        })
        .collect();
    let jsonl = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d, "id": 1 }).to_string())
        .collect();
    write(&jsonl, &(lines.join("\n") + "\n"));
    let corpus = [Corpus::jsonl(&jsonl, "text")];
    let mut stores = vec![];
    for (threads, batch_bytes) in [(1, 1 << 20), (2, 100), (2, 1 << 20)] {
        let out = dir.path().join(format!("store-{threads}-{batch_bytes}"));
        let options = PrepareOptions {
            threads: Some(threads),
            batch_bytes,
            ..Default::default()
        };
        let report = prepare(&corpus, &tokenizer, &out, &options).unwrap();
        assert_eq!(report.header.documents, 60);
        assert_eq!(report.header.token_width, phi_zoo_datasets::TokenWidth::U16);
        assert_eq!(
            report.header.tokenizer_sha256,
            tokenizer_sha256(&tokenizer).unwrap()
        );
        stores.push(std::fs::read(out.join("tokens.bin")).unwrap());
    }
    assert!(
        stores.windows(2).all(|w| w[0] == w[1]),
        "stores differ by thread count"
    );

    let store = TokenStore::open(dir.path().join("store-2-100")).unwrap();
    let mut all = vec![];
    store.read_into(0..store.len(), &mut all).unwrap();
    let joined: String = docs.iter().map(|d| format!("{d}<|endoftext|>")).collect();
    assert_eq!(tokenizer.decode(&all).unwrap(), joined);
    // Windows are the stream cut in seq_len + 1 pieces, in order.
    let seq_len = 15;
    let windows: Vec<u32> = (0..store.num_windows(seq_len))
        .flat_map(|i| store.window(i, seq_len).unwrap())
        .collect();
    assert_eq!(windows[..], all[..windows.len()]);
    assert!(all.len() - windows.len() < seq_len + 1);
}

#[test]
fn corrupt_and_unfinished_stores_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    let store = synthetic_store(dir.path(), "s", 100);
    drop(store);
    let tokens = store_dir.join("tokens.bin");
    let bytes = std::fs::read(&tokens).unwrap();
    write_bytes(&tokens, &bytes[..bytes.len() - 2]);
    let err = TokenStore::open(&store_dir).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("s"), "{err}");
    write_bytes(&tokens, &bytes);
    TokenStore::open(&store_dir).unwrap();

    let header = store_dir.join("header.json");
    let text = std::fs::read_to_string(&header).unwrap();
    write(&header, &text[..text.len() / 2]);
    let err = TokenStore::open(&store_dir).unwrap_err().to_string();
    assert!(err.contains("header.json is malformed"), "{err}");
    write(&header, &text);

    let err = TokenStore::open_for(&store_dir, "another")
        .unwrap_err()
        .to_string();
    assert!(err.contains("made with tokenizer"), "{err}");

    // An interrupted write leaves only `<name>.partial`, which is not a store.
    let mut writer = StoreWriter::create(dir.path().join("half"), 1001, 1000).unwrap();
    writer.push_document(&[1, 2, 3]).unwrap();
    drop(writer);
    assert!(dir.path().join("half.partial").exists());
    assert!(!dir.path().join("half").exists());
    let err = TokenStore::open(dir.path().join("half.partial"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no header.json"), "{err}");

    // A finished write replaces an older store in one step.
    let mut writer = StoreWriter::create(&store_dir, 1001, 1000).unwrap();
    writer.push_document(&[5]).unwrap();
    writer.finish("new".into(), vec![], 0).unwrap();
    assert_eq!(TokenStore::open(&store_dir).unwrap().len(), 2);
    assert!(!dir.path().join("s.partial").exists());
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn read_all(
    corpus: &Corpus,
    policy: OnMalformed,
) -> (Result<(), DataError>, Vec<String>, ReadReport) {
    let mut docs = vec![];
    let mut report = ReadReport::default();
    let result = corpus.read(policy, &mut report, &mut |d| {
        docs.push(d);
        Ok(())
    });
    (result, docs, report)
}

#[test]
fn malformed_records_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("bad.jsonl");
    write(
        &jsonl,
        "{\"text\": \"ok 1\"}\n{\"text\": \"ok 2\"\n\n{\"other\": 1}\n{\"text\": 5}\n[1]\n{\"text\": \"ok 3\"}\n",
    );
    let corpus = Corpus::jsonl(&jsonl, "text");
    let (result, docs, _) = read_all(&corpus, OnMalformed::Fail);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:2: not JSON"), "{err}");
    assert_eq!(docs, ["ok 1"]);

    let (result, docs, report) = read_all(&corpus, OnMalformed::Skip);
    result.unwrap();
    assert_eq!(docs, ["ok 1", "ok 3"]);
    assert_eq!((report.documents, report.skipped), (2, 4));
    assert!(report.first_skipped.unwrap().contains("bad.jsonl:2"));
    for (line, message) in [
        (4, "no field `text`"),
        (5, "field `text` is not a string (found a number)"),
        (6, "not a JSON object"),
    ] {
        let only = dir.path().join(format!("line{line}.jsonl"));
        let original = std::fs::read_to_string(&jsonl).unwrap();
        let kept: Vec<&str> = original
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line || i == 0 { l } else { "" })
            .collect();
        write(&only, &kept.join("\n"));
        let err = read_all(&Corpus::jsonl(&only, "text"), OnMalformed::Fail)
            .0
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!(":{line}: {message}")), "{err}");
    }

    // Plain text: each file one document; a file that is not UTF-8 is malformed.
    let texts = dir.path().join("texts");
    std::fs::create_dir_all(texts.join("sub")).unwrap();
    write(&texts.join("a.txt"), "alpha");
    write(&texts.join("sub/b.md"), "beta");
    write_bytes(&texts.join("c.txt"), &[0x66, 0xff, 0x67]);
    write(&texts.join(".hidden"), "never read");
    let (result, _, _) = read_all(&Corpus::text(&texts), OnMalformed::Fail);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("c.txt:0: not UTF-8")
    );
    let (result, docs, report) = read_all(&Corpus::text(&texts), OnMalformed::Skip);
    result.unwrap();
    assert_eq!(docs, ["alpha", "beta"]);
    assert_eq!(report.skipped, 1);

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = read_all(&Corpus::jsonl(&empty, "text"), OnMalformed::Skip)
        .0
        .unwrap_err();
    assert!(err.to_string().contains("no .jsonl files"), "{err}");
}

#[test]
fn parquet_text_columns_stream_with_nulls_as_malformed_rows() {
    let file = corpora_fixture("docs.parquet");
    let corpus = Corpus::parquet(&file, "text");
    let (result, docs, _) = read_all(&corpus, OnMalformed::Fail);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("docs.parquet:3: `text` is null")
    );
    assert_eq!(docs.len(), 2);
    let (result, docs, report) = read_all(&corpus, OnMalformed::Skip);
    result.unwrap();
    assert_eq!(docs.len(), 4);
    assert_eq!(docs[1], "Second one, with unicode: café, naïve, 東京.");
    assert_eq!(docs[2], "def f(x):\n    return x + 1\n");
    assert_eq!(report.skipped, 1);

    let err = read_all(&Corpus::parquet(&file, "body"), OnMalformed::Skip)
        .0
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no column `body` (columns: id, text)"),
        "{err}"
    );
    let err = read_all(&Corpus::parquet(&file, "id"), OnMalformed::Skip)
        .0
        .unwrap_err();
    assert!(err.to_string().contains("does not hold strings"), "{err}");
    let jsonl_as_parquet = read_all(
        &Corpus::parquet(corpora_fixture("../tiny_p05/reference.json"), "text"),
        OnMalformed::Skip,
    );
    assert!(jsonl_as_parquet.0.is_err());
}

#[test]
fn embedded_corpora_fill_the_phi_1_5_mixtures() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = PhiTokenizer::bundled();
    // The phi-1.5 and phi-1.5-web recipes' slots and weights.
    let phi_1_5: &[(&str, f64)] = &[("code", 0.2), ("synthetic", 0.8)];
    let phi_1_5_web: &[(&str, f64)] = &[("code", 0.2), ("web", 0.4), ("synthetic", 0.4)];
    for weights in [phi_1_5, phi_1_5_web] {
        let sources: Vec<MixtureSource> = weights
            .iter()
            .map(|&(slot, weight)| MixtureSource {
                name: slot.into(),
                store: Arc::new(
                    slot.parse::<EmbeddedCorpus>()
                        .unwrap()
                        .store(dir.path(), &tokenizer)
                        .unwrap(),
                ),
                weight,
            })
            .collect();
        let m = Mixture::new(sources, 128, 0).unwrap();
        for source in m.sources() {
            let corpus: EmbeddedCorpus = source.name.parse().unwrap();
            assert_eq!(source.store.header().documents, corpus.num_documents());
            assert!(
                source.store.len() > 100_000,
                "{}: {}",
                source.name,
                source.store.len()
            );
        }
        let text = tokenizer.decode(&m.get(0).unwrap()).unwrap();
        assert!(!text.is_empty());
    }
}

#[test]
fn the_stream_loader_moves_through_the_stream_and_resumes_at_an_epoch() {
    use burn::data::dataloader::DataLoader;
    use phi_zoo_datasets::StreamLoader;

    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(mixture(dir.path(), &[0.2, 0.8], &[6, 9], 4, 3));
    let device = Default::default();
    let inputs =
        |batch: LmBatch<Cpu>| -> Vec<i64> { batch.inputs.into_data().iter::<i64>().collect() };
    let expected = |from: u64, to: u64| -> Vec<i64> {
        (from..to)
            .flat_map(|i| {
                m.get(i).unwrap()[..4]
                    .iter()
                    .map(|&t| t as i64)
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    // Epochs of 2 batches of 3: epoch k reads samples 6k .. 6k + 6.
    let loader = StreamLoader::<Cpu>::new(m.clone(), 3, 2, 0, device);
    assert_eq!(loader.num_items(), 6);
    let epochs: Vec<Vec<Vec<i64>>> = (0..3)
        .map(|_| loader.iter().map(inputs).collect())
        .collect();
    for (k, batches) in epochs.iter().enumerate() {
        let k = k as u64;
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0], expected(6 * k, 6 * k + 3));
        assert_eq!(batches[1], expected(6 * k + 3, 6 * k + 6));
    }
    // A run resumed after epoch 0 reads what the run above read in epochs 1 and 2.
    let resumed = StreamLoader::<Cpu>::new(m.clone(), 3, 2, 1, device);
    let again: Vec<Vec<Vec<i64>>> = (0..2)
        .map(|_| resumed.iter().map(inputs).collect())
        .collect();
    assert_eq!(again[..], epochs[1..]);
    // A device's slice serves its part of each epoch.
    let slice = StreamLoader::<Cpu>::new(m.clone(), 3, 2, 0, device).slice(3, 6);
    assert_eq!(slice.num_items(), 3);
    let part: Vec<Vec<i64>> = slice.iter().map(inputs).collect();
    assert_eq!(part, [expected(3, 6)]);
}
