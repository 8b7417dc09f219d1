//! Tokenizes corpora into a token store for training.
//!
//! ```sh
//! cargo run --release --example prepare_data -- --input corpus.jsonl --out data/code.store
//! cargo run --release --example prepare_data -- --input texts/ --format text --out data/web.store \
//!     --tokenizer path/to/tokenizer.json --skip-malformed
//! ```
//!
//! Each `--input` is a file or a folder (read recursively in path order); `--format auto` picks
//! JSONL, Parquet or plain text from the extension. The store is `<out>/tokens.bin` (u16 or u32
//! little-endian tokens, `<|endoftext|>` after each document) and `<out>/header.json`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use phi_zoo::PhiTokenizer;
use phi_zoo::datasets::{Corpus, OnMalformed, PrepareOptions, prepare};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Auto,
    Jsonl,
    Text,
    Parquet,
}

#[derive(Parser)]
#[command(about = "Tokenize corpora (JSONL, text, Parquet) into a phi-zoo token store")]
struct Args {
    /// A corpus file or folder; repeat for several (read in the order given).
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// The JSONL field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// The store folder to write.
    #[arg(long)]
    out: PathBuf,
    /// A tokenizer.json, or a model folder holding one (default: the bundled Phi tokenizer).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Skip (and count) malformed records instead of stopping at the first.
    #[arg(long)]
    skip_malformed: bool,
    /// Tokenizer threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Text per tokenization batch, in MB: the bound on memory.
    #[arg(long, default_value_t = 8)]
    batch_mb: usize,
    /// Print one JSON object with the figures, and nothing else, on stdout.
    #[arg(long)]
    json: bool,
}

fn load_tokenizer(path: Option<&PathBuf>) -> Result<PhiTokenizer> {
    let Some(path) = path else {
        return Ok(PhiTokenizer::bundled());
    };
    if path.is_dir() {
        return PhiTokenizer::from_model_dir(path)?
            .with_context(|| format!("{} has no tokenizer.json", path.display()));
    }
    Ok(PhiTokenizer::from_file(path)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tokenizer = load_tokenizer(args.tokenizer.as_ref())?;
    let corpora = args
        .input
        .iter()
        .map(|path| {
            Ok(match args.format {
                Format::Auto => Corpus::detect(path, &args.field)?,
                Format::Jsonl => Corpus::jsonl(path, &args.field),
                Format::Text => Corpus::text(path),
                Format::Parquet => Corpus::parquet(path, &args.field),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.batch_mb == 0 {
        bail!("--batch-mb must be at least 1");
    }
    let options = PrepareOptions {
        on_malformed: if args.skip_malformed {
            OnMalformed::Skip
        } else {
            OnMalformed::Fail
        },
        batch_bytes: args.batch_mb << 20,
        threads: args.threads,
        progress: !args.json,
    };
    let report = prepare(&corpora, &tokenizer, &args.out, &options)?;
    let seconds = report.elapsed.as_secs_f64();
    let mb = report.read.bytes as f64 / 1e6;
    let rss = phi_zoo::memory::peak_rss_bytes();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "documents": report.header.documents,
                "tokens": report.header.tokens,
                "skipped": report.header.skipped,
                "text_mb": mb,
                "seconds": seconds,
                "mb_per_s": mb / seconds,
                "tokens_per_s": report.header.tokens as f64 / seconds,
                "peak_rss_bytes": rss,
            })
        );
        return Ok(());
    }
    println!(
        "{}: {} documents, {} tokens ({:?}) from {:.1} MB of text in {:.1} s: {:.2} MB/s, {:.0} tokens/s",
        args.out.display(),
        report.header.documents,
        report.header.tokens,
        report.header.token_width,
        mb,
        seconds,
        mb / seconds,
        report.header.tokens as f64 / seconds
    );
    if report.header.skipped > 0 {
        println!(
            "skipped {} malformed records; the first: {}",
            report.header.skipped,
            report.read.first_skipped.as_deref().unwrap_or("?")
        );
    }
    if let Some(rss) = rss {
        println!("peak RSS {:.1} MB", rss as f64 / 1e6);
    }
    Ok(())
}
