//! Fine-tuning a Phi from a checkpoint, in full or with LoRA, on burn-train's learner; the result
//! is written in Hugging Face format (LoRA adapters merged into the weights).
//!
//! With no flags it fine-tunes the model `examples/pretrain` wrote (`runs/pretrain/final`) on the
//! embedded exercises (prompt: a function's signature and docstring; loss on the body only).
//!
//! ```sh
//! cargo run --release --example pretrain      # once: the default model
//! cargo run --release --example finetune                      # full fine-tuning
//! cargo run --release --example finetune -- --lora-rank 8     # LoRA on q, k, v, dense, fc1, fc2
//! cargo run --release --features hub --example finetune -- --model microsoft/phi-1_5 \
//!     --data my_pairs.jsonl --lora-rank 16 --backend cuda --dtype bf16
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use clap::Parser;
use phi_zoo::backend::{BackendJob, BackendName, FloatType, run_on};
use phi_zoo::common::train::{LoraTrainee, Schedule, StepSettings, Trainee};
use phi_zoo::datasets::corpora::EXERCISES_JSONL;
use phi_zoo::datasets::{FinetuneFormat, FinetuneSet, SampleStream};
use phi_zoo::training::{
    RunData, RunPlan, Trained, Validated, logged_metric, resume_epoch, run_with,
};
use phi_zoo::{
    Checkpoint, GenerationConfig, LoraConfig, LoraTarget, Phi, PhiTokenizer, StoredDType,
};

#[derive(Parser, Clone)]
#[command(about = "Fine-tune a Phi (full or LoRA) and export it in Hugging Face format")]
struct Args {
    /// Model folder or hub id (hub ids need `--features hub`).
    #[arg(long, default_value = "runs/pretrain/final")]
    model: String,
    #[arg(long)]
    revision: Option<String>,
    /// Training data (default: the embedded exercises, prompt-completion).
    #[arg(long)]
    data: Option<PathBuf>,
    /// prompt-completion (JSONL pairs; loss on the completion) or text (documents; loss on all).
    #[arg(long, default_value = "prompt-completion")]
    format: FinetuneFormat,
    /// LoRA rank; absent: full fine-tuning.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA alpha (default 2 × rank).
    #[arg(long)]
    lora_alpha: Option<f64>,
    #[arg(long, default_value_t = 0.05)]
    lora_dropout: f64,
    /// Projections LoRA adapts: any of q, k, v, dense, fc1, fc2 (comma-separated), or all.
    #[arg(long, default_value = "q,k,v,dense,fc1,fc2")]
    targets: String,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 40)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    checkpoint_every: usize,
    /// Peak learning rate (default: phi-1's fine-tuning recipe, 1e-4, for full fine-tuning, 10×
    /// that for LoRA; 10× both for models under 100M parameters, such as `tiny`, since the
    /// recipe's rate is for billion-parameter models).
    #[arg(long)]
    lr: Option<f64>,
    /// Examples per micro-batch (padded to the longest).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
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
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value = "runs/finetune")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "flex")]
    backend: BackendName,
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
}

struct Finetune {
    args: Args,
    checkpoint: Checkpoint,
    tokenizer: PhiTokenizer,
    lora: Option<LoraConfig>,
}

impl BackendJob for Finetune {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let Finetune {
            args,
            checkpoint,
            tokenizer,
            lora,
        } = self;
        let resume_epoch = resume_epoch(&args.out, args.resume);
        let data_path = match &args.data {
            Some(path) => path.clone(),
            None => {
                let path = args.out.join("data/exercises.jsonl");
                std::fs::create_dir_all(args.out.join("data"))?;
                std::fs::write(&path, EXERCISES_JSONL)?;
                path
            }
        };
        let (set, report) =
            FinetuneSet::read(&data_path, args.format, &tokenizer, args.max_len, args.seed)?;
        let (train, valid) = set.split_held_out(args.held_out)?;
        // Held-out examples stay whole (for the sample's prompt); training reads them packed.
        let train = if args.pack { train.packed()? } else { train };
        let recipe = phi_zoo::phi1::finetune_recipe();
        let small = checkpoint.config().num_parameters() < 100_000_000;
        let peak = args.lr.unwrap_or(
            recipe.schedule.peak
                * if lora.is_some() { 10.0 } else { 1.0 }
                * if small { 10.0 } else { 1.0 },
        );
        let schedule = Schedule {
            peak,
            warmup_steps: recipe.schedule.warmup_steps.min(args.steps / 10),
            total_steps: args.steps,
            ..recipe.schedule
        };
        let settings = StepSettings {
            grad_clip_norm: recipe.grad_clip_norm,
            weight_decay: recipe.optimizer.weight_decay,
            ..Default::default()
        };
        eprintln!(
            "{} from {} ({:.1}M parameters): {} training rows / {} held-out examples from {} \
             ({} completions cut, {} documents split), {} steps of {} × {}, peak lr {peak:e}",
            match &lora {
                Some(l) => format!(
                    "LoRA rank {} alpha {} on {}",
                    l.rank,
                    l.alpha,
                    l.targets
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "full fine-tuning".into(),
            },
            args.model,
            checkpoint.config().num_parameters() as f64 / 1e6,
            train.len(),
            valid.len(),
            data_path.display(),
            report.truncated,
            report.split_documents,
            args.steps,
            args.batch,
            args.grad_accum,
        );

        let base = checkpoint.load::<B>(&device)?;
        let loss_before = mean_loss(&base, &valid, &device);
        B::seed(&device, args.seed);
        let phi = checkpoint.load::<Autodiff<B>>(&device)?;
        let plan = RunPlan {
            dir: args.out.clone(),
            batch: args.batch,
            grad_accum: args.grad_accum,
            steps_per_epoch: args.checkpoint_every,
            epochs: args.steps / args.checkpoint_every,
            keep: 2,
            valid_batches: valid.len().div_ceil(args.batch).min(8),
            resume_epoch,
            peak_flops: None,
        };
        let data = RunData::<Autodiff<B>>::streams(
            Arc::new(train),
            Arc::new(valid.clone()),
            args.max_len,
            &plan,
            1,
            &device,
        );
        let started = Instant::now();
        let (tuned, trainable) = match &lora {
            Some(lora) => {
                let trainee = LoraTrainee::new(phi, lora, settings);
                let trainable = trainee.adapters.num_params();
                let trained = train_on(trainee, &schedule, args.grad_accum, data, &plan);
                (trained.merged(), trainable)
            }
            None => {
                let trainee = Trainee::new(phi, settings);
                let trainable = trainee.num_params();
                let trained = train_on(trainee, &schedule, args.grad_accum, data, &plan);
                (trained.phi, trainable)
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let loss_after = mean_loss(&tuned, &valid, &device);

        let final_dir = args.out.join("final");
        phi_zoo::save_hf(&tuned, &final_dir, StoredDType::F32)?;
        std::fs::write(final_dir.join("tokenizer.json"), tokenizer.to_json()?)?;
        let rates = logged_means(&args.out, "Tokens_per_second");
        println!(
            "trained {} steps in {seconds:.1} s; {trainable} trainable parameters; \
             {:.0} counted tokens/s; peak RSS {:.0} MB",
            args.steps - resume_epoch.unwrap_or(0) * args.checkpoint_every,
            rates.iter().sum::<f64>() / rates.len().max(1) as f64,
            phi_zoo::memory::peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
        );
        println!(
            "held-out loss (completion tokens): {loss_before:.3} → {loss_after:.3}; model: {} \
             (HF safetensors + config.json + tokenizer.json{})",
            final_dir.display(),
            if lora.is_some() {
                ", adapters merged"
            } else {
                ""
            }
        );

        let example = &valid.examples()[0];
        let prompt = &example.ids[..example.prompt_len()];
        let generation = GenerationConfig {
            max_new_tokens: 48,
            ..GenerationConfig::for_model(tuned.config(), Some(&tokenizer))
        };
        let sample = phi_zoo::generate_text(
            &tuned,
            &tokenizer,
            prompt,
            &generation,
            &[],
            &device,
            |_| {},
        )?;
        println!(
            "held-out prompt and greedy completion:\n{}{}",
            tokenizer.decode(prompt)?,
            sample.text
        );
        Ok(())
    }
}

/// Runs the learner with AdamW (decay applied by the step, to weight matrices only).
fn train_on<B, M>(
    trainee: M,
    schedule: &Schedule,
    grad_accum: usize,
    data: RunData<B>,
    plan: &RunPlan,
) -> M::InnerModule
where
    B: burn::tensor::backend::AutodiffBackend,
    M: Trained<B>,
    M::InnerModule: Validated<B::InnerBackend>,
{
    let scheduler = schedule.scheduler(grad_accum);
    let optim = AdamWConfig::new().with_weight_decay(0.0).init::<B, M>();
    run_with(trainee, optim, scheduler, data, plan, &[])
}

/// Token-weighted mean loss of `phi` over every example of `set`.
fn mean_loss<B: Backend>(phi: &Phi<B>, set: &FinetuneSet, device: &B::Device) -> f64 {
    let (mut total, mut tokens) = (0.0, 0usize);
    let n = set.len() as u64;
    for start in (0..n).step_by(8) {
        let batch = set.batch::<B>(start..(start + 8).min(n), device);
        let out = phi.lm_step(batch);
        total += out.loss.into_scalar().elem::<f64>() * out.tokens as f64;
        tokens += out.tokens;
    }
    total / tokens.max(1) as f64
}

/// The mean of a metric over each epoch's training log.
fn logged_means(dir: &Path, metric: &str) -> Vec<f64> {
    (1..)
        .map_while(|epoch| logged_metric(dir, "train", epoch, metric))
        .filter(|values| !values.is_empty())
        .map(|values| values.iter().sum::<f64>() / values.len() as f64)
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.steps == 0 || args.checkpoint_every == 0 || args.batch == 0 || args.grad_accum == 0 {
        bail!("--steps, --checkpoint-every, --batch and --grad-accum must be at least 1");
    }
    if args.steps % args.checkpoint_every != 0 {
        bail!("--steps must be a multiple of --checkpoint-every (checkpoints close epochs)");
    }
    if args.model == "runs/pretrain/final" && !Path::new(&args.model).exists() {
        bail!(
            "no model at runs/pretrain/final: run `cargo run --release --example pretrain` first, \
             or give --model"
        );
    }
    let checkpoint = Checkpoint::open_source(&args.model, args.revision.as_deref())?;
    if args.max_len > checkpoint.config().max_position_embeddings {
        bail!(
            "--max-len {} exceeds the model's context of {}",
            args.max_len,
            checkpoint.config().max_position_embeddings
        );
    }
    let tokenizer = match PhiTokenizer::from_model_dir(checkpoint.dir())? {
        Some(tokenizer) => tokenizer,
        None if checkpoint.config().vocab_size >= PhiTokenizer::bundled_len() => {
            PhiTokenizer::bundled()
        }
        None => bail!(
            "{} has no tokenizer.json and a vocabulary of {}: not Phi's",
            args.model,
            checkpoint.config().vocab_size
        ),
    };
    let lora = match args.lora_rank {
        Some(0) => bail!("--lora-rank must be at least 1"),
        Some(rank) => Some(LoraConfig {
            rank,
            alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
            dropout: args.lora_dropout,
            targets: LoraTarget::parse_list(&args.targets).map_err(anyhow::Error::msg)?,
        }),
        None => None,
    };
    let (backend, dtype) = (args.backend, args.dtype);
    run_on(
        backend,
        dtype,
        Finetune {
            args,
            checkpoint,
            tokenizer,
            lora,
        },
    )?
}
