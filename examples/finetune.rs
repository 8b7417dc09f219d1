//! Fine-tuning a Phi from a checkpoint, in full or with LoRA, on burn-train's learner; the result
//! is written in Hugging Face format (LoRA adapters merged into the weights).
//!
//! With no flags it fine-tunes the model `examples/pretrain` wrote (`runs/pretrain/final`) on the
//! embedded exercises (prompt: a function's signature and docstring; loss on the body only). The
//! recipe is phi-1's fine-tuning recipe (`recipes/phi-1-finetune.toml`), or for models under 100M
//! parameters such as the demo's `recipes/tiny-finetune.toml` (ten times the rate); `--recipe`
//! chooses another.
//!
//! ```sh
//! cargo run --release --example pretrain      # once: the default model
//! cargo run --release --example finetune                      # full fine-tuning
//! cargo run --release --example finetune -- --lora-rank 8     # LoRA on q, k, v, dense, fc1, fc2
//! cargo run --release --features hub --example finetune -- --model phi-1.5 \
//!     --data my_pairs.jsonl --lora-rank 16 --backend cuda --dtype bf16
//! ```

mod cli;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::prelude::*;
use clap::Parser;
use phi_zoo::backend::BackendJob;
use phi_zoo::common::train::{LoraTrainee, Trainee};
use phi_zoo::datasets::corpora::EXERCISES_JSONL;
use phi_zoo::datasets::{FinetuneFormat, FinetuneSet};
use phi_zoo::training::{RunData, logged_means, mean_loss, run_with};
use phi_zoo::{Checkpoint, GenerationConfig, LoraConfig, NamedRecipe, PhiTokenizer};

#[derive(Parser, Clone)]
#[command(
    about = "Fine-tune a Phi (full or LoRA) and export it in Hugging Face format",
    mut_arg("model", |a| a.default_value("runs/pretrain/final").required(false)),
    mut_arg("steps", |a| a.default_value("40").required(false)),
    mut_arg("batch", |a| a.default_value("8").required(false)),
    mut_arg("out", |a| a.default_value("runs/finetune").required(false)),
)]
struct Args {
    /// Training data (default: the embedded exercises, prompt-completion).
    #[arg(long)]
    data: Option<PathBuf>,
    /// prompt-completion (JSONL pairs; loss on the completion) or text (documents; loss on all).
    #[arg(long, default_value = "prompt-completion")]
    format: FinetuneFormat,
    /// Tokens per example at most (completions beyond are cut; documents are split).
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Join the examples end to end into windows of `--max-len` (no padding; prompt tokens stay
    /// out of the loss), as phi-1 was fine-tuned; default: one padded example per row.
    #[arg(long)]
    pack: bool,
    /// Fraction of the examples held out for validation.
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    #[command(flatten)]
    lora: cli::LoraArgs,
    #[command(flatten)]
    model: cli::ModelArgs,
    #[command(flatten)]
    run: cli::RunArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

struct Finetune {
    args: Args,
    checkpoint: Checkpoint,
    tokenizer: PhiTokenizer,
    lora: Option<LoraConfig>,
    /// Mixed precision: the type of the products (`--dtype bf16`).
    matmul: Option<burn::tensor::FloatDType>,
}

impl BackendJob for Finetune {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let Finetune {
            args,
            checkpoint,
            tokenizer,
            lora,
            matmul,
        } = self;
        let run_args = &args.run;
        let data_path = match &args.data {
            Some(path) => path.clone(),
            None => write_exercises(&run_args.out)?,
        };
        let (set, report) = FinetuneSet::read(
            &data_path,
            args.format,
            &tokenizer,
            args.max_len,
            run_args.seed,
        )?;
        let (train, valid) = set.split_held_out(args.held_out)?;
        // Held-out examples stay whole (for the sample's prompt); training reads them packed.
        let train = if args.pack { train.packed()? } else { train };
        let recipe = run_args.recipe(NamedRecipe::finetune_for(checkpoint.config()))?;
        // LoRA trains at the recipe's LoRA rate.
        let recipe = lora.as_ref().map_or(recipe.clone(), |_| recipe.for_lora());
        let accum = run_args.grad_accum(&recipe, args.max_len, 1);
        let plan = run_args.plan(accum, valid.len().div_ceil(run_args.batch).min(8));
        eprintln!(
            "{} from {} ({:.1}M parameters), recipe {}: {} training rows / {} held-out examples \
             from {} ({} completions cut, {} documents split), {} steps of {} × {accum}, peak lr {:e}",
            match &lora {
                Some(l) => format!("LoRA rank {} alpha {} on {:?}", l.rank, l.alpha, l.targets),
                None => "full fine-tuning".into(),
            },
            args.model.model,
            checkpoint.config().num_parameters() as f64 / 1e6,
            recipe.name,
            train.len(),
            valid.len(),
            data_path.display(),
            report.truncated,
            report.split_documents,
            run_args.steps,
            run_args.batch,
            recipe.schedule.peak,
        );

        let loss_before = mean_loss(&checkpoint.load::<B>(&device)?, &valid, &device);
        B::seed(&device, run_args.seed);
        let phi = recipe
            .apply_dropout(checkpoint.load::<Autodiff<B>>(&device)?)
            .with_matmul_dtype(matmul);
        let data = RunData::streams(
            Arc::new(train),
            Arc::new(valid.clone()),
            args.max_len,
            &plan,
            1,
            &device,
        );
        let scheduler = recipe.scheduler(accum);
        let started = Instant::now();
        let (tuned, trainable) = match &lora {
            Some(lora) => {
                let trainee = LoraTrainee::new(phi, lora, recipe.step_settings());
                let trainable = trainee.adapters.num_params();
                let trained = run_with(trainee, recipe.optimizer(), scheduler, data, &plan, &[]);
                (trained.merged(), trainable)
            }
            None => {
                let trainee = Trainee::new(phi, recipe.step_settings());
                let trainable = trainee.num_params();
                let trained = run_with(trainee, recipe.optimizer(), scheduler, data, &plan, &[]);
                (trained.phi, trainable)
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let loss_after = mean_loss(&tuned, &valid, &device);

        let final_dir = run_args.out.join("final");
        phi_zoo::training::export_model(&tuned, &tokenizer, &final_dir)?;
        let rates = logged_means(&run_args.out, "Tokens_per_second");
        println!(
            "trained {} steps in {seconds:.1} s; {trainable} trainable parameters; \
             {:.0} counted tokens/s; peak RSS {:.0} MB",
            run_args.steps - plan.resume_epoch.unwrap_or(0) * run_args.checkpoint_every,
            rates.iter().sum::<f64>() / rates.len().max(1) as f64,
            phi_zoo::memory::peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
        );
        let merged = if lora.is_some() {
            ", adapters merged"
        } else {
            ""
        };
        println!(
            "held-out loss (completion tokens): {loss_before:.3} → {loss_after:.3}; model: {} \
             (HF safetensors + config.json + tokenizer.json{merged})",
            final_dir.display(),
        );

        let example = &valid.examples()[0];
        let prompt = &example.ids[..example.prompt_len()];
        let generation = GenerationConfig {
            max_new_tokens: 48,
            ..GenerationConfig::for_model(tuned.config(), Some(&tokenizer))
        };
        let sample = cli::complete(&tuned, &tokenizer, prompt, &generation, &device)?;
        let prompt = tokenizer.decode(prompt)?;
        println!("held-out prompt and greedy completion:\n{prompt}{sample}");
        Ok(())
    }
}

/// The embedded exercises as a file in `out/data` (the default training data).
fn write_exercises(out: &Path) -> Result<PathBuf> {
    let path = out.join("data/exercises.jsonl");
    std::fs::create_dir_all(out.join("data"))?;
    std::fs::write(&path, EXERCISES_JSONL)?;
    Ok(path)
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.run.check()?;
    if args.model.model == "runs/pretrain/final" && !Path::new(&args.model.model).exists() {
        bail!(
            "no model at runs/pretrain/final: run `cargo run --release --example pretrain` first, \
             or give --model"
        );
    }
    let checkpoint = args.model.open()?;
    let context = checkpoint.config().max_position_embeddings;
    if args.max_len > context {
        bail!(
            "--max-len {} exceeds the model's context of {context}",
            args.max_len
        );
    }
    let tokenizer = args.model.text_tokenizer(&checkpoint)?;
    let lora = args.lora.config()?;
    let (device, matmul) = args.device.for_training()?;
    device.run(Finetune {
        args,
        checkpoint,
        tokenizer,
        lora,
        matmul,
    })?
}
