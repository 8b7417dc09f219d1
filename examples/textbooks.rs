//! The textbook-quality data stages, one subcommand each.
//!
//! ```sh
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
//! Every stage streams its input, writes each output whole (temporary name, then rename), and
//! skips work an earlier run finished, so a killed run is rerun with the same command.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use phi_zoo::datasets::decontaminate::{self, NgramIndex, read_benchmark};
use phi_zoo::datasets::dedup::{self, MinHashConfig};
use phi_zoo::datasets::{Corpus, Shard};

#[derive(Parser)]
#[command(about = "Textbook-quality data: dedup, decontaminate (one subcommand per stage)")]
struct Args {
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Subcommand)]
enum Stage {
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
    match Args::parse().stage {
        Stage::Dedup(args) => run_dedup(args),
        Stage::Decontaminate(args) => run_decontaminate(args),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run_dedup(args: DedupArgs) -> Result<()> {
    let minhash = MinHashConfig {
        ngram: args.ngram,
        bands: args.bands,
        rows: args.rows,
        seed: args.seed,
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

fn run_decontaminate(args: DecontaminateArgs) -> Result<()> {
    let benchmarks = if args.benchmark.is_empty() {
        vec![PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/humaneval/HumanEval.jsonl.gz"
        ))]
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
