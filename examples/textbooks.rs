//! The textbook-quality data stages (phi-1's filter, phi-1.5's synthetic textbooks, dedup,
//! decontamination), one subcommand each, and with no subcommand the whole loop, offline, on the
//! embedded corpora and the project's own server.
//!
//! ```sh
//! # the whole loop in a few minutes (runs/textbooks): label a sample through phi-zoo's server,
//! # embed, train the forest, filter the code corpus, synthesize units and exercises, dedup,
//! # decontaminate against HumanEval, prepare token stores, pretrain briefly on the 20/80 mixture
//! cargo run --release --example textbooks
//!
//! # annotate through any OpenAI-compatible endpoint (key from $OPENAI_API_KEY when set)
//! cargo run --release --example textbooks -- annotate --input code.jsonl --out labels/ \
//!     --endpoint http://localhost:8000 --model gpt-4o --mode generate --concurrency 16
//! # embed with a Phi checkpoint, train the forest on the labels, filter a corpus
//! cargo run --release --example textbooks -- embed --input sample.jsonl --out emb/ --model phi-1.5
//! cargo run --release --example textbooks -- train-classifier --embeddings emb/embeddings-shard-00000-of-00001.npy \
//!     --labels labels/scores-shard-00000-of-00001.jsonl --threshold 3 --out classifier.json
//! cargo run --release --example textbooks -- filter --input corpus/ --classifier classifier.json \
//!     --model phi-1.5 --out filtered/ --shard 3/8
//! # synthetic textbooks: topics × audiences × styles, web extracts as seeds
//! cargo run --release --example textbooks -- synthesize --endpoint http://localhost:8000 --model phi-2 \
//!     --topics topics.txt --seeds web.jsonl --out synthetic/
//! # near-duplicate and exact removal (MinHash LSH, word 5-grams, 14 bands × 8 rows)
//! cargo run --release --example textbooks -- dedup --input corpus.jsonl --out dedup/
//! # the same as shards: signatures per shard (any machine), clusters once, kept per shard
//! cargo run --release --example textbooks -- dedup --input corpus.jsonl --out dedup/ --step signatures --shard 3/8
//! cargo run --release --example textbooks -- dedup --input corpus.jsonl --out dedup/ --step cluster --shards 8
//! cargo run --release --example textbooks -- dedup --input corpus.jsonl --out dedup/ --step kept --shard 3/8
//! # remove documents sharing a 13-gram with HumanEval (the shipped file) or other benchmarks
//! cargo run --release --example textbooks -- decontaminate --input corpus.jsonl --out clean/ \
//!     --benchmark assets/humaneval/HumanEval.jsonl.gz --benchmark mbpp.jsonl
//! ```
//!
//! Every stage streams its input, writes each output whole (temporary name, then rename) or
//! journals it record by record, and skips work an earlier run finished, so a killed run is
//! rerun with the same command. `--shard i/N` splits a stage over N processes.

mod cli;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use phi_zoo::backend::{BackendJob, Cpu};
use phi_zoo::datasets::annotate::{self, AnnotateOptions, AnnotationTemplate, ScoreMode};
use phi_zoo::datasets::classifier::{ForestMode, ForestSettings, QualityClassifier};
use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::datasets::decontaminate::{self, NgramIndex, read_benchmark};
use phi_zoo::datasets::dedup::{self, MinHashConfig};
use phi_zoo::datasets::embed::{Embedder, Embeddings, embed_corpus};
use phi_zoo::datasets::endpoint::Endpoint;
use phi_zoo::datasets::filter::{FilterOptions, filter};
use phi_zoo::datasets::synthesize::{
    self, SEED_TOPICS, Style, SynthesisTemplates, SynthesizeOptions, parse_topics,
};
use phi_zoo::datasets::{Corpus, PrepareOptions, Shard, prepare};
use phi_zoo::serve::{ServeOptions, Server};
use phi_zoo::{Phi, PhiTokenizer, Variant};

#[derive(Parser)]
#[command(about = "Textbook-quality data: with no subcommand, every stage on the embedded corpora")]
struct Args {
    #[command(subcommand)]
    stage: Option<Stage>,
    /// The whole loop's output folder.
    #[arg(long, default_value = "runs/textbooks")]
    out: PathBuf,
    /// The model the loop serves, embeds with and annotates with (default: what
    /// examples/pretrain wrote, else a fresh tiny model).
    #[arg(long, default_value = "runs/pretrain/final")]
    model: String,
}

#[derive(Subcommand)]
enum Stage {
    /// Scores documents' educational value through an OpenAI-compatible endpoint.
    Annotate(AnnotateArgs),
    /// Mean-pooled final hidden states of a Phi checkpoint, as .npy with a sidecar.
    Embed(EmbedArgs),
    /// Trains the random forest on embeddings and annotation scores.
    TrainClassifier(TrainArgs),
    /// Keeps the documents the classifier scores at or above its threshold.
    Filter(FilterArgs),
    /// Generates textbook units and exercises through an OpenAI-compatible endpoint.
    Synthesize(SynthesizeArgs),
    /// Exact and MinHash near-duplicate removal.
    Dedup(DedupArgs),
    /// Removal of documents that share an n-gram with benchmark items.
    Decontaminate(DecontaminateArgs),
}

/// The corpus a stage reads: `--input`, `--field`.
#[derive(ClapArgs)]
struct InputArgs {
    /// A corpus file or folder: JSONL, Parquet, or plain text files (by extension).
    #[arg(long)]
    input: PathBuf,
    /// The JSONL field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    field: String,
}

impl InputArgs {
    fn corpus(&self) -> Result<Corpus> {
        Ok(Corpus::detect(&self.input, &self.field)?)
    }
}

/// The endpoint a stage asks: `--endpoint`, `--model`, `--api-key-env`, retries.
#[derive(ClapArgs)]
struct EndpointArgs {
    /// The server's base URL.
    #[arg(long)]
    endpoint: String,
    /// The model name to ask for.
    #[arg(long)]
    model: String,
    /// The environment variable holding the API key (sent as a bearer token when set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Retries of a request that failed with 429, 5xx, a dropped connection or a timeout.
    #[arg(long, default_value_t = 6)]
    retries: u32,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

impl EndpointArgs {
    fn endpoint(&self) -> Endpoint {
        let mut endpoint = Endpoint::new(&self.endpoint, &self.model);
        endpoint.api_key = std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        endpoint.retries = self.retries;
        endpoint.timeout = Duration::from_secs(self.timeout);
        endpoint
    }
}

#[derive(ClapArgs)]
struct AnnotateArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// The output folder: scores-<shard>.jsonl and a report.
    #[arg(long)]
    out: PathBuf,
    /// A prompt template (JSON: version, prompt with {document}, score_prefix, max_score,
    /// max_document_chars); default: the shipped edu-code-v1.
    #[arg(long)]
    template: Option<PathBuf>,
    /// generate: parse "Educational score: N"; logprobs: the expected score.
    #[arg(long, value_enum, default_value = "generate")]
    mode: Mode,
    /// Tokens generated per document in generate mode.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[arg(long, default_value = "0/1")]
    shard: Shard,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Generate,
    Logprobs,
}

/// The Phi checkpoint that embeds: `--model`, `--max-tokens`, `--batch`, the device.
#[derive(ClapArgs)]
struct EmbedderArgs {
    /// A model folder, a published variant or a hub id (the last two with `--features hub`).
    #[arg(long)]
    model: String,
    /// Tokens pooled per document (the first ones).
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Documents per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

#[derive(ClapArgs)]
struct EmbedArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    embedder: EmbedderArgs,
    /// The output folder: embeddings-<shard>.npy and .json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "0/1")]
    shard: Shard,
}

#[derive(ClapArgs)]
struct TrainArgs {
    /// An embeddings .npy written by `embed` (its sidecar beside it); repeatable.
    #[arg(long, required = true)]
    embeddings: Vec<PathBuf>,
    /// Scores files written by `annotate`; repeatable. Documents are matched by hash.
    #[arg(long, required = true)]
    labels: Vec<PathBuf>,
    /// Scores at or above it are "keep".
    #[arg(long, default_value_t = 3.0)]
    threshold: f64,
    /// Learn the score itself instead of keep/drop.
    #[arg(long)]
    regress: bool,
    #[arg(long, default_value_t = 100)]
    trees: u16,
    /// Share of labelled documents held out for the evaluation.
    #[arg(long, default_value_t = 0.2)]
    held_out: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to save the classifier (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(ClapArgs)]
struct FilterArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    embedder: EmbedderArgs,
    /// A classifier written by `train-classifier` (for this embedder).
    #[arg(long)]
    classifier: PathBuf,
    /// The output folder: kept-<shard>.jsonl, filter-scores-<shard>.jsonl, report, histogram.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "0/1")]
    shard: Shard,
}

#[derive(ClapArgs)]
struct SynthesizeArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// A topics file (one per line, # comments); default: the embedded seed list.
    #[arg(long)]
    topics: Option<PathBuf>,
    /// Use the embedded seed topics as well as --topics.
    #[arg(long)]
    with_seed_topics: bool,
    /// Templates (JSON); default: the shipped textbook-v1.
    #[arg(long)]
    templates: Option<PathBuf>,
    /// A corpus of web documents whose extracts seed the prompts.
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// textbook, exercises, or both.
    #[arg(long, value_delimiter = ',', default_value = "textbook,exercises")]
    styles: Vec<StyleArg>,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// Outputs shorter than this (tokens, as the server counts) are dropped.
    #[arg(long, default_value_t = 150)]
    min_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The output folder: samples-<shard>.jsonl, kept-<shard>.jsonl, a report.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "0/1")]
    shard: Shard,
}

#[derive(Clone, Copy, ValueEnum)]
enum StyleArg {
    Textbook,
    Exercises,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DedupStep {
    /// All three on this machine, the corpus as one shard.
    All,
    /// Hash one shard's documents.
    Signatures,
    /// Join all shards' signatures into clusters.
    Cluster,
    /// Write one shard's kept documents.
    Kept,
}

#[derive(ClapArgs)]
struct DedupArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The output folder: signatures/, clusters.jsonl, removed.txt, clusters.json, kept/.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    step: DedupStep,
    /// The shard (INDEX/COUNT) for the signatures and kept steps.
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// How many shards the cluster step joins.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Words per shingle.
    #[arg(long, default_value_t = 5)]
    ngram: usize,
    /// LSH bands.
    #[arg(long, default_value_t = 14)]
    bands: usize,
    /// Signature rows per band.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Seed of the MinHash permutations (the same for every shard).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Compare numbers digit for digit instead of folding each to 0 (for templated corpora
    /// whose documents differ mostly in their numbers).
    #[arg(long)]
    keep_numbers: bool,
}

#[derive(ClapArgs)]
struct DecontaminateArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The output folder: kept/, contaminated/, <shard>.report.json.
    #[arg(long)]
    out: PathBuf,
    /// Benchmark JSONL files (gzipped or not): HumanEval, MBPP, multiple choice. Default: the
    /// HumanEval file shipped in assets/humaneval.
    #[arg(long)]
    benchmark: Vec<PathBuf>,
    /// Words per n-gram.
    #[arg(long, default_value_t = decontaminate::DEFAULT_NGRAM)]
    ngram: usize,
    #[arg(long, default_value = "0/1")]
    shard: Shard,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.stage {
        None => run_loop(&args.out, &args.model),
        Some(Stage::Annotate(a)) => run_annotate(a),
        Some(Stage::Embed(a)) => {
            let device = a.embedder.device;
            device.run(EmbedJob(a))?
        }
        Some(Stage::TrainClassifier(a)) => run_train(a),
        Some(Stage::Filter(a)) => {
            let device = a.embedder.device;
            device.run(FilterJob(a))?
        }
        Some(Stage::Synthesize(a)) => run_synthesize(a),
        Some(Stage::Dedup(a)) => run_dedup(a),
        Some(Stage::Decontaminate(a)) => run_decontaminate(a),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run_annotate(args: AnnotateArgs) -> Result<()> {
    let mut options = AnnotateOptions::new(match args.mode {
        Mode::Generate => ScoreMode::Generate,
        Mode::Logprobs => ScoreMode::Logprobs,
    });
    if let Some(path) = &args.template {
        options.template = AnnotationTemplate::read(path)?;
    }
    options.concurrency = args.endpoint.concurrency;
    options.max_tokens = args.max_tokens;
    options.shard = args.shard;
    options.progress = true;
    let report = annotate::annotate(
        &args.input.corpus()?,
        &args.endpoint.endpoint(),
        &args.out,
        &options,
    )?;
    eprintln!(
        "annotate: {} documents, {} scored now ({:.2} requests/s), {} done before; {} without a score; {}",
        report.documents,
        report.requested,
        report.requests_per_second,
        report.skipped,
        report.unscored,
        report.path.display()
    );
    print_json(&report)
}

/// Loads `--model` for the embedder.
fn load_embedder_model<B: Backend>(
    model: &str,
    device: &B::Device,
) -> Result<(Phi<B>, PhiTokenizer)> {
    let checkpoint = phi_zoo::open_model(model, None)?;
    let phi = checkpoint.load(device)?;
    let tokenizer = checkpoint.tokenizer()?.with_context(|| {
        format!("{model} has no tokenizer.json and a vocabulary that is not Phi's")
    })?;
    Ok((phi, tokenizer))
}

struct EmbedJob(EmbedArgs);

impl BackendJob for EmbedJob {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let (phi, tokenizer) = load_embedder_model::<B>(&args.embedder.model, &device)?;
        let embedder = Embedder::new(
            &phi,
            &tokenizer,
            &args.embedder.model,
            args.embedder.max_tokens,
            &device,
        )?;
        let report = embed_corpus(
            &embedder,
            &args.input.corpus()?,
            &args.out,
            args.shard,
            args.embedder.batch,
        )?;
        eprintln!(
            "embed: {} documents ({:.1}/s) → {}",
            report.documents,
            report.documents_per_second,
            report.path.display()
        );
        print_json(&report)
    }
}

/// Scores by document hash from annotate's scores files (documents without a score are left out).
fn read_labels(paths: &[PathBuf]) -> Result<HashMap<String, f64>> {
    let mut labels = HashMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        for (i, line) in text.lines().enumerate() {
            let record: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            let hash = record["document"]
                .as_str()
                .with_context(|| format!("{}:{}: no document hash", path.display(), i + 1))?;
            if let Some(score) = record["score"].as_f64() {
                labels.insert(hash.to_string(), score);
            }
        }
    }
    Ok(labels)
}

/// The embeddings of the labelled documents and their scores.
fn labelled_rows(
    embeddings: &[Embeddings],
    labels: &HashMap<String, f64>,
) -> Result<(Vec<Vec<f32>>, Vec<f64>)> {
    let mut rows = Vec::new();
    let mut scores = Vec::new();
    for e in embeddings {
        e.sidecar
            .embedder
            .check_matches(&embeddings[0].sidecar.embedder, "an embeddings file")?;
        for (i, doc) in e.sidecar.documents.iter().enumerate() {
            if let Some(&score) = labels.get(&doc.hash) {
                rows.push(e.row(i).to_vec());
                scores.push(score);
            }
        }
    }
    Ok((rows, scores))
}

fn train_classifier(
    embeddings: &[Embeddings],
    labels: &HashMap<String, f64>,
    mode: ForestMode,
    threshold: f64,
    settings: ForestSettings,
) -> Result<QualityClassifier> {
    let (rows, scores) = labelled_rows(embeddings, labels)?;
    if rows.is_empty() {
        bail!(
            "no embedded document has a label: the labels and embeddings are of different documents"
        );
    }
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    Ok(QualityClassifier::train(
        &refs,
        &scores,
        embeddings[0].sidecar.embedder.clone(),
        mode,
        threshold,
        settings,
    )?)
}

fn run_train(args: TrainArgs) -> Result<()> {
    let embeddings = args
        .embeddings
        .iter()
        .map(|p| Embeddings::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let labels = read_labels(&args.labels)?;
    let settings = ForestSettings {
        trees: args.trees,
        held_out: args.held_out,
        seed: args.seed,
        ..Default::default()
    };
    let mode = if args.regress {
        ForestMode::Regress
    } else {
        ForestMode::Classify
    };
    let classifier = train_classifier(&embeddings, &labels, mode, args.threshold, settings)?;
    classifier.save(&args.out)?;
    let e = &classifier.evaluation;
    eprintln!(
        "classifier: {} trained, {} held out: accuracy {:.3}, precision {:.3}, recall {:.3}, F1 {:.3}, \
         confusion {:?} → {}",
        e.train,
        e.held_out,
        e.accuracy,
        e.precision,
        e.recall,
        e.f1,
        e.confusion,
        args.out.display()
    );
    print_json(e)
}

struct FilterJob(FilterArgs);

impl BackendJob for FilterJob {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let classifier = QualityClassifier::load(&args.classifier)?;
        let (phi, tokenizer) = load_embedder_model::<B>(&args.embedder.model, &device)?;
        let embedder = Embedder::new(
            &phi,
            &tokenizer,
            &args.embedder.model,
            classifier.embedder.max_tokens,
            &device,
        )?;
        let options = FilterOptions {
            batch: args.embedder.batch,
            shard: args.shard,
            progress: true,
        };
        let report = filter(
            &embedder,
            &classifier,
            &args.input.corpus()?,
            &args.out,
            &options,
        )?;
        eprintln!(
            "filter: kept {} of {} ({:.1}%) → {}; histogram {}",
            report.kept,
            report.documents,
            100.0 * report.kept_fraction,
            report.kept_path.display(),
            report.histogram_path.display()
        );
        print_json(&report)
    }
}

/// Up to `limit` texts of a corpus, for web extracts.
fn read_texts(corpus: &Corpus, limit: usize) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    Shard::WHOLE.read(corpus, Default::default(), &mut |_, text| {
        if texts.len() < limit {
            texts.push(text);
        }
        Ok(())
    })?;
    Ok(texts)
}

fn run_synthesize(args: SynthesizeArgs) -> Result<()> {
    let templates = match &args.templates {
        Some(path) => SynthesisTemplates::read(path)?,
        None => SynthesisTemplates::default_templates(),
    };
    let mut topics = Vec::new();
    if let Some(path) = &args.topics {
        topics.extend(parse_topics(
            &std::fs::read_to_string(path).with_context(|| path.display().to_string())?,
        ));
    }
    if args.topics.is_none() || args.with_seed_topics {
        topics.extend(parse_topics(SEED_TOPICS));
    }
    let extracts = match &args.seeds {
        Some(path) => read_texts(&Corpus::detect(path, "text")?, 100_000)?,
        None => Vec::new(),
    };
    let styles: Vec<Style> = args
        .styles
        .iter()
        .map(|s| match s {
            StyleArg::Textbook => Style::Textbook,
            StyleArg::Exercises => Style::Exercises,
        })
        .collect();
    let plan = synthesize::plan(&templates, &topics, &styles, &extracts);
    let mut options = SynthesizeOptions::new(&templates.version);
    options.sampling.temperature = args.temperature;
    options.sampling.top_p = args.top_p;
    options.sampling.max_tokens = args.max_tokens;
    options.sampling.seed = args.seed;
    options.min_tokens = args.min_tokens;
    options.concurrency = args.endpoint.concurrency;
    options.shard = args.shard;
    options.progress = true;
    let report = synthesize::synthesize(&plan, &args.endpoint.endpoint(), &args.out, &options)?;
    eprintln!(
        "synthesize: {} prompts, {} generated now ({:.2} requests/s), {} kept, {} dropped as short → {}",
        report.prompts,
        report.requested,
        report.requests_per_second,
        report.kept,
        report.dropped_short,
        report.kept_path.display()
    );
    print_json(&report)
}

fn run_dedup(args: DedupArgs) -> Result<()> {
    let minhash = MinHashConfig {
        ngram: args.ngram,
        bands: args.bands,
        rows: args.rows,
        seed: args.seed,
        fold_numbers: !args.keep_numbers,
    };
    minhash.check()?;
    let corpus = args.input.corpus()?;
    match args.step {
        DedupStep::All => {
            if args.shard != Shard::WHOLE {
                bail!("--step all runs the whole corpus; shard with --step signatures / kept");
            }
            let report = dedup::dedup(&corpus, &args.out, minhash)?;
            eprintln!(
                "dedup: {} documents, {} removed in {} clusters ({} exact), {} kept in {} \
                 ({:.0} documents/s)",
                report.clusters.documents,
                report.clusters.removed,
                report.clusters.clusters,
                report.clusters.exact_duplicates,
                report.kept.kept,
                report.kept.path.display(),
                report.documents_per_second
            );
            print_json(&report)
        }
        DedupStep::Signatures => {
            print_json(&dedup::signatures(&corpus, &args.out, args.shard, minhash)?)
        }
        DedupStep::Cluster => print_json(&dedup::cluster(&args.out, args.shards)?),
        DedupStep::Kept => print_json(&dedup::write_kept(&corpus, &args.out, args.shard)?),
    }
}

fn humaneval_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/humaneval/HumanEval.jsonl.gz"
    ))
}

fn run_decontaminate(args: DecontaminateArgs) -> Result<()> {
    let benchmarks = if args.benchmark.is_empty() {
        vec![humaneval_path()]
    } else {
        args.benchmark
    };
    let mut items = Vec::new();
    for path in &benchmarks {
        items.extend(read_benchmark(path)?);
    }
    let index = NgramIndex::new(items, args.ngram)?;
    let corpus = args.input.corpus()?;
    let report = decontaminate::decontaminate(&corpus, &index, &args.out, args.shard)?;
    eprintln!(
        "decontaminate: {} documents, {} removed (listed in {}), {} benchmark items",
        report.documents,
        report.removed,
        report.removed_path.display(),
        report.items
    );
    print_json(&report)
}

/// Writes `texts` as JSONL (`text`) to `path`.
fn write_jsonl(path: &Path, texts: &[String]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

/// Every stage in order on the embedded corpora, with phi-zoo's own server as the language
/// model; each prints what it kept and where.
fn run_loop(out: &Path, model: &str) -> Result<()> {
    let started = Instant::now();
    let device = Default::default();
    let tokenizer = PhiTokenizer::bundled();
    let (phi, source): (Phi<Cpu>, String) = if Path::new(model).exists() {
        let (phi, _) = load_embedder_model::<Cpu>(model, &device)?;
        (phi, model.to_string())
    } else {
        eprintln!(
            "no model at {model} (run `cargo run --release --example pretrain` first): the loop \
             uses a freshly initialised tiny model, whose labels are noise"
        );
        Cpu::seed(&device, 0);
        (
            Phi::new(&Variant::Tiny.config(), &device),
            "tiny (fresh)".to_string(),
        )
    };
    let corpora = out.join("corpora");
    let code_path = corpora.join("code.jsonl");
    write_jsonl(&code_path, &EmbeddedCorpus::Code.texts()?)?;
    let web = EmbeddedCorpus::Web.texts()?;

    // The server every LLM stage asks.
    let name = "phi-zoo-textbooks";
    let server = Server::start(
        phi.clone(),
        PhiTokenizer::bundled(),
        device,
        ServeOptions {
            port: 0,
            max_batch: 8,
            ..ServeOptions::named(name)
        },
    )?;
    let endpoint = Endpoint::new(format!("http://{}", server.addr()), name);
    eprintln!("[server] {source} on http://{}", server.addr());

    // 1. Labels for a sample of distinct code documents, in log-probability mode.
    let mut sample = EmbeddedCorpus::Code.texts()?;
    sample.sort();
    sample.dedup();
    sample.truncate(64);
    let sample_path = corpora.join("label-sample.jsonl");
    write_jsonl(&sample_path, &sample)?;
    let sample_corpus = Corpus::jsonl(&sample_path, "text");
    let mut options = AnnotateOptions::new(ScoreMode::Logprobs);
    options.template = AnnotationTemplate::short_template();
    options.concurrency = 4;
    let labels_dir = out.join("annotate");
    let annotated = annotate::annotate(&sample_corpus, &endpoint, &labels_dir, &options)?;
    let labels = read_labels(std::slice::from_ref(&annotated.path))?;
    let mut values: Vec<f64> = labels.values().copied().collect();
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "[annotate] {} documents scored ({:.2} requests/s), scores {:.3}..{:.3}, median {median:.3} → {}",
        labels.len(),
        annotated.requests_per_second,
        values.first().unwrap_or(&0.0),
        values.last().unwrap_or(&0.0),
        annotated.path.display()
    );

    // 2–3. Embeddings of the sample, and the forest on its labels (threshold: the median).
    let embedder = Embedder::new(&phi, &tokenizer, &source, 128, &device)?;
    let embedded = embed_corpus(
        &embedder,
        &sample_corpus,
        &out.join("embed"),
        Shard::WHOLE,
        16,
    )?;
    eprintln!(
        "[embed] {} documents → {}",
        embedded.documents,
        embedded.path.display()
    );
    let settings = ForestSettings {
        trees: 50,
        ..Default::default()
    };
    let classifier = train_classifier(
        &[Embeddings::read(&embedded.path)?],
        &labels,
        ForestMode::Classify,
        median,
        settings,
    )?;
    let classifier_path = out.join("classifier.json");
    classifier.save(&classifier_path)?;
    let e = &classifier.evaluation;
    eprintln!(
        "[classifier] {} trained, {} held out: accuracy {:.3}, F1 {:.3} → {}",
        e.train,
        e.held_out,
        e.accuracy,
        e.f1,
        classifier_path.display()
    );

    // 4. The code corpus filtered.
    let filtered = filter(
        &embedder,
        &classifier,
        &Corpus::jsonl(&code_path, "text"),
        &out.join("filter"),
        &FilterOptions {
            batch: 32,
            ..Default::default()
        },
    )?;
    eprintln!(
        "[filter] kept {} of {} code documents ({:.2} documents/s) → {}",
        filtered.kept,
        filtered.documents,
        filtered.documents_per_second,
        filtered.kept_path.display()
    );

    // 5. A few textbook units and exercises, seeded with web extracts. The tiny model's 256
    // positions leave room for short extracts and short outputs only.
    let mut templates = SynthesisTemplates::default_templates();
    templates.subunits.truncate(1);
    let topics: Vec<String> = parse_topics(SEED_TOPICS).into_iter().take(2).collect();
    let extracts: Vec<String> = web.iter().map(|t| t.chars().take(100).collect()).collect();
    let styles = [Style::Textbook, Style::Exercises];
    let plan = synthesize::plan(&templates, &topics, &styles, &extracts);
    let mut options = SynthesizeOptions::new(&templates.version);
    options.sampling.max_tokens = 40;
    options.min_tokens = 24;
    options.concurrency = 4;
    let synthesized = synthesize::synthesize(&plan, &endpoint, &out.join("synthesize"), &options)?;
    eprintln!(
        "[synthesize] {} prompts: {} kept, {} dropped as short → {}",
        synthesized.prompts,
        synthesized.kept,
        synthesized.dropped_short,
        synthesized.kept_path.display()
    );
    server.shutdown()?;

    // 6–7. Dedup and decontamination of both mixture slots.
    let mut synthetic = EmbeddedCorpus::Synthetic.texts()?;
    synthetic.extend(read_texts(
        &Corpus::jsonl(&synthesized.kept_path, "text"),
        usize::MAX,
    )?);
    let synthetic_path = corpora.join("synthetic.jsonl");
    write_jsonl(&synthetic_path, &synthetic)?;
    let index = NgramIndex::new(
        read_benchmark(&humaneval_path())?,
        decontaminate::DEFAULT_NGRAM,
    )?;
    let mut stores = Vec::new();
    for (slot, input, weight) in [
        ("code", filtered.kept_path.clone(), 0.2),
        ("synthetic", synthetic_path, 0.8),
    ] {
        // The embedded corpora are templated: their documents differ mostly in their numbers,
        // which datatrove's folding would make copies of one another.
        let minhash = MinHashConfig {
            fold_numbers: false,
            ..MinHashConfig::default()
        };
        let deduped = dedup::dedup(
            &Corpus::jsonl(&input, "text"),
            &out.join("dedup").join(slot),
            minhash,
        )?;
        eprintln!(
            "[dedup {slot}] {} documents: {} removed ({} exact copies once simplified), {} kept → {}",
            deduped.clusters.documents,
            deduped.clusters.removed,
            deduped.clusters.exact_duplicates,
            deduped.kept.kept,
            deduped.kept.path.display()
        );
        let clean = decontaminate::decontaminate(
            &Corpus::jsonl(&deduped.kept.path, "text"),
            &index,
            &out.join("decontaminate").join(slot),
            Shard::WHOLE,
        )?;
        eprintln!(
            "[decontaminate {slot}] {} documents: {} share a 13-gram with HumanEval → {}",
            clean.documents,
            clean.removed,
            clean.kept_path.display()
        );
        // 8. Token stores.
        let store = out.join("stores").join(format!("{slot}.store"));
        let prepared = prepare(
            &[Corpus::jsonl(&clean.kept_path, "text")],
            &tokenizer,
            &store,
            &PrepareOptions::default(),
        )?;
        eprintln!(
            "[prepare {slot}] {} tokens → {}",
            prepared.header.tokens,
            store.display()
        );
        stores.push(format!("{slot}={}:{weight}", store.display()));
    }

    // 9. A brief pretraining on the phi-1.5 mixture (20% code, 80% synthetic) of the results.
    pretrain_briefly(out, &stores, &tokenizer)?;
    eprintln!(
        "textbooks: every stage done in {:.0} s; outputs under {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn pretrain_briefly(out: &Path, stores: &[String], tokenizer: &PhiTokenizer) -> Result<()> {
    use burn::backend::Autodiff;
    use phi_zoo::common::train::Trainee;
    use phi_zoo::training::{DataSource, RunPlan, RunReport, recipe_mixtures, resume_epoch, run};

    let dir = out.join("pretrain");
    let recipe = phi_zoo::NamedRecipe::Tiny.recipe();
    let sources: Vec<DataSource> = stores
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    let seq_len = recipe.seq_len;
    let data = recipe_mixtures(
        &recipe,
        &sources,
        &dir.join("data"),
        tokenizer,
        seq_len,
        0,
        0.05,
    )?;
    let (steps, checkpoint_every, batch) = (20, 10, 4);
    let plan = RunPlan {
        dir: dir.clone(),
        batch,
        grad_accum: 1,
        steps_per_epoch: checkpoint_every,
        epochs: steps / checkpoint_every,
        keep: 2,
        valid_batches: 2,
        resume_epoch: resume_epoch(&dir, true),
        peak_flops: None,
    };
    if plan.resume_epoch == Some(plan.epochs) {
        eprintln!("[pretrain] already done → {}", dir.display());
        return Ok(());
    }
    let device = Default::default();
    Cpu::seed(&device, 0);
    let config = Variant::Tiny.config();
    let trainee = Trainee::new(
        recipe.apply_dropout(Phi::<Autodiff<Cpu>>::new(&config, &device)),
        recipe.step_settings(),
    );
    let started = Instant::now();
    run(
        trainee,
        recipe.optimizer(),
        recipe.scheduler(1),
        Arc::new(data.train),
        Arc::new(data.valid),
        &plan,
        &[device],
    );
    let report = RunReport::read(&plan.dir, plan.epochs, plan.steps_per_epoch, 1);
    let tokens = steps * batch * seq_len;
    println!(
        "{}",
        report.summary(steps, started.elapsed().as_secs_f64(), tokens, None)
    );
    eprintln!(
        "[pretrain] {steps} steps on code 0.2 / synthetic 0.8 → {}",
        dir.display()
    );
    Ok(())
}
