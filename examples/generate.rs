//! Generate text (or token ids) with a Phi model, streaming it to stdout as it is produced.
//!
//! cargo run --release --example generate -- --model <DIR or hub id> --prompt "def fib(n):" --greedy
//! cargo run --release --example generate -- --model <DIR> --prompt-ids "5,9,13" --json --greedy
//!
//! Sampling (the default) uses `--temperature` (0.8) and optionally `--top-k`, `--top-p`,
//! `--min-p`, `--repetition-penalty`, from `--seed`. Generation stops at EOS (the config's, else
//! the tokenizer's `<|endoftext|>`), at any `--stop` string (not printed), or after
//! `--max-new-tokens`. The tokenizer is `--tokenizer`, else the model folder's tokenizer.json,
//! else the bundled CodeGen tokenizer for models with Phi's vocabulary; a model without one takes
//! `--prompt-ids` and prints ids. `--json` prints only `{"ids": [...], "text": "..."}`.

use std::io::Write;
use std::ops::ControlFlow;

mod cli;

use anyhow::{Context, Result, bail};
use burn::prelude::Backend;
use clap::Parser;
use phi_zoo::backend::BackendJob;
use phi_zoo::{Checkpoint, GenerationConfig, PhiTokenizer, Sampling, generate, generate_text};

#[derive(Parser)]
#[command(about = "Generate with a Phi model")]
struct Args {
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// The prompt as token ids, "1,2,3" (for models without a tokenizer).
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Always take the most likely token.
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object {"ids", "text"} and nothing else.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: cli::ModelArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

struct Generate<'a> {
    args: &'a Args,
    checkpoint: &'a Checkpoint,
    tokenizer: Option<&'a PhiTokenizer>,
    prompt: &'a [u32],
}

impl BackendJob for Generate<'_> {
    type Output = Result<serde_json::Value>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let model = self
            .checkpoint
            .load_as::<B>(&device, args.device.weights_for(self.checkpoint))?;
        let config = GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling: (!args.greedy).then_some(Sampling {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                min_p: args.min_p,
            }),
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            ..GenerationConfig::for_model(model.config(), self.tokenizer)
        };
        let context = model.config().max_position_embeddings;
        let capacity = (self.prompt.len() + config.max_new_tokens).min(context);
        cli::warm_up(&model, &[1], capacity, &device)?;
        let mut stdout = std::io::stdout().lock();
        let stream = !args.json;
        let output = match self.tokenizer {
            Some(tokenizer) => {
                let out = generate_text(
                    &model,
                    tokenizer,
                    self.prompt,
                    &config,
                    &args.stop,
                    &device,
                    |piece| {
                        if stream {
                            let _ = write!(stdout, "{piece}");
                            let _ = stdout.flush();
                        }
                    },
                )?;
                eprintln!("\n[{} tokens, stop: {:?}]", out.ids.len(), out.stop);
                serde_json::json!({ "ids": out.ids, "text": out.text })
            }
            None => {
                if !args.stop.is_empty() {
                    bail!("--stop needs a tokenizer");
                }
                let out = generate(&model, self.prompt, &config, &device, |id| {
                    if stream {
                        let _ = write!(stdout, "{id} ");
                        let _ = stdout.flush();
                    }
                    ControlFlow::Continue(())
                })?;
                eprintln!("\n[{} tokens, stop: {:?}]", out.ids.len(), out.stop);
                serde_json::json!({ "ids": out.ids })
            }
        };
        Ok(output)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let checkpoint = args.model.open()?;
    let tokenizer = args.model.tokenizer(&checkpoint)?;
    let prompt: Vec<u32> = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => ids
            .split(',')
            .map(|id| {
                id.trim()
                    .parse::<u32>()
                    .with_context(|| format!("{id:?} is not a token id"))
            })
            .collect::<Result<_>>()?,
        (Some(text), None) => match &tokenizer {
            Some(t) => t.encode(text)?,
            None => bail!("this model has no tokenizer.json: give --prompt-ids or --tokenizer"),
        },
        (None, None) => unreachable!("clap requires one"),
    };
    let job = Generate {
        args: &args,
        checkpoint: &checkpoint,
        tokenizer: tokenizer.as_ref(),
        prompt: &prompt,
    };
    let output = args.device.run(job)??;
    if args.json {
        println!("{output}");
    } else {
        println!();
    }
    Ok(())
}
