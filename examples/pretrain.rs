//! Pretraining a Phi on a weighted data mixture with burn-train's learner.
//!
//! With no flags: a tiny Phi (`phi1_5::tiny()`) on the embedded corpora with the phi-1.5 mixture
//! (20% code / 80% synthetic textbooks), on the CPU, in a few minutes; checkpoints, the final model
//! in Hugging Face format, the loss curve (SVG) and a sample from the trained model land in `--out`.
//!
//! ```sh
//! cargo run --release --example pretrain
//! cargo run --release --example pretrain -- --steps 200 --checkpoint-every 50 --out runs/tiny
//! cargo run --release --example pretrain -- --out runs/tiny --steps 300 --resume   # continue
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::tensor::backend::Device;
use clap::Parser;
use phi_zoo::backend::{BackendJob, BackendName, FloatType, run_on};
use phi_zoo::common::train::{
    Decay, Recipe, Schedule, StepSettings, Trainee, known_peak_bf16_flops,
};
use phi_zoo::datasets::corpora::EmbeddedCorpus;
use phi_zoo::datasets::{Mixture, MixtureSource, TokenStore, named_mixture};
use phi_zoo::training::{RunPlan, logged_metric, resume_epoch, run};
use phi_zoo::{GenerationConfig, Phi, PhiConfig, PhiTokenizer, Sampling, StoredDType};

#[derive(Parser, Clone)]
#[command(
    about = "Pretrain a Phi on a weighted mixture (default: a tiny Phi on the embedded corpora)"
)]
struct Args {
    /// The papers' recipe: phi-1, phi-1_5, phi-1_5-web, phi-2.
    #[arg(long, default_value = "phi-1_5")]
    recipe: String,
    /// Model shape: tiny, phi-1, phi-1-small, phi-1.5, phi-2.
    #[arg(long, default_value = "tiny")]
    config: String,
    /// A source of the mixture as `name=STORE_DIR:weight` (repeatable); default: the embedded
    /// corpora in the recipe's slots and weights.
    #[arg(long)]
    data: Vec<String>,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 6)]
    batch: usize,
    /// Micro-batches per optimizer step (default: 1 for `tiny`; otherwise as many as reach the
    /// recipe's global batch in tokens over `--batch × --seq-len × --devices`).
    #[arg(long)]
    grad_accum: Option<usize>,
    /// `--grad-accum` as resolved.
    #[arg(skip)]
    accum: usize,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    #[arg(long, default_value_t = 20)]
    checkpoint_every: usize,
    /// Peak learning rate (default: the recipe's; for the tiny config 2e-3, as the papers' rates
    /// are for billion-parameter models).
    #[arg(long)]
    lr: Option<f64>,
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value = "runs/pretrain")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "flex")]
    backend: BackendName,
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
    /// Devices to train on, data parallel through burn-train's multi-device strategy (GPU
    /// backends: devices 0..N; each reads `--batch × --grad-accum` sequences per step).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Peak FLOP/s of one device in TFLOP/s, for the MFU metric (default: looked up for the
    /// NVIDIA card `nvidia-smi` names on the cuda backend; none on CPU).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Fraction of every `--data` store held out for validation (its final tokens).
    #[arg(long, default_value_t = 0.05)]
    held_out: f64,
}

fn recipe(name: &str) -> Result<Recipe> {
    Ok(match name {
        "phi-1" => phi_zoo::phi1::pretrain_recipe(),
        "phi-1_5" | "phi-1.5" => phi_zoo::phi1_5::recipe(),
        "phi-1_5-web" | "phi-1.5-web" => phi_zoo::phi1_5::web_recipe(),
        "phi-2" => phi_zoo::phi2::recipe(),
        _ => bail!("unknown recipe {name:?}: phi-1, phi-1_5, phi-1_5-web, phi-2"),
    })
}

/// Held out from training: the last documents of each embedded corpus.
const HELD_OUT_DOCUMENTS: usize = 100;

/// The training and validation mixtures.
fn mixtures(args: &Args, recipe: &Recipe, tokenizer: &PhiTokenizer) -> Result<(Mixture, Mixture)> {
    let weights = named_mixture(&recipe.mixture)
        .with_context(|| format!("recipe {} names no known mixture", recipe.name))?;
    let (mut train, mut valid) = (vec![], vec![]);
    if args.data.is_empty() {
        let dir = args.out.join("data");
        for &(slot, weight) in weights {
            let corpus =
                EmbeddedCorpus::by_name(slot).expect("the named mixtures use embedded slots");
            let (t, v) = corpus.split_stores(&dir, tokenizer, HELD_OUT_DOCUMENTS)?;
            train.push(MixtureSource {
                name: slot.into(),
                store: Arc::new(t),
                weight,
            });
            valid.push(MixtureSource {
                name: slot.into(),
                store: Arc::new(v),
                weight,
            });
        }
    } else {
        for spec in &args.data {
            let (name, rest) = spec
                .split_once('=')
                .context("--data is name=STORE_DIR:weight")?;
            let (path, weight) = rest
                .rsplit_once(':')
                .context("--data is name=STORE_DIR:weight")?;
            let weight: f64 = weight
                .parse()
                .with_context(|| format!("weight in {spec:?}"))?;
            train.push(MixtureSource {
                name: name.into(),
                store: Arc::new(TokenStore::open(path)?),
                weight,
            });
        }
        return Ok(Mixture::split_held_out(
            train,
            args.seq_len,
            args.seed,
            args.held_out,
        )?);
    }
    Ok((
        Mixture::new(train, args.seq_len, args.seed)?,
        Mixture::new(valid, args.seq_len, args.seed.wrapping_add(1))?,
    ))
}

/// Peak bf16 FLOP/s of GPU 0 as `nvidia-smi` names it, from the known-device table.
fn gpu_peak_flops() -> Option<f64> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "--id=0"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout);
    let peak = known_peak_bf16_flops(name.trim());
    if peak.is_none() {
        eprintln!("no peak FLOP/s known for {name:?}: pass --peak-tflops for MFU");
    }
    peak
}

/// A loss curve as a self-contained SVG.
fn write_svg(
    path: &Path,
    train: &[f64],
    valid: &[(usize, f64)],
    steps_per_point: f64,
) -> Result<()> {
    let (w, h, pad) = (640.0, 360.0, 40.0);
    let max = train
        .iter()
        .chain(valid.iter().map(|v| &v.1))
        .cloned()
        .fold(f64::MIN, f64::max);
    let min = train
        .iter()
        .chain(valid.iter().map(|v| &v.1))
        .cloned()
        .fold(f64::MAX, f64::min);
    let span = (max - min).max(1e-9);
    let n = train.len().max(2) as f64;
    let x = |i: f64| pad + i / (n - 1.0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - min) / span * (h - 2.0 * pad);
    let points: Vec<String> = train
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64), y(v)))
        .collect();
    let valid_points: Vec<String> = valid
        .iter()
        .map(|&(step, v)| {
            format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#d62728\"/>",
                x(step as f64 / steps_per_point - 1.0),
                y(v)
            )
        })
        .collect();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{pad}\" y=\"24\" font-family=\"sans-serif\" font-size=\"14\">loss (train line, validation dots): {max:.2} → {:.2}</text>\
         <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>{}</svg>\n",
        train.last().copied().unwrap_or(0.0),
        points.join(" "),
        valid_points.join("")
    );
    std::fs::write(path, svg)?;
    Ok(())
}

struct Pretrain {
    args: Args,
    recipe: Recipe,
    config: PhiConfig,
}

impl BackendJob for Pretrain {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let Pretrain {
            args,
            recipe,
            config,
        } = self;
        let resume_epoch = resume_epoch(&args.out, args.resume);
        let tokenizer = PhiTokenizer::bundled();
        let (train, valid) = mixtures(&args, &recipe, &tokenizer)?;
        let tiny = args.config == "tiny";
        let peak = args
            .lr
            .unwrap_or(if tiny { 2e-3 } else { recipe.schedule.peak });
        let schedule = Schedule {
            peak,
            warmup_steps: recipe.schedule.warmup_steps.min(args.steps / 10),
            total_steps: args.steps,
            decay: if tiny {
                Decay::Cosine
            } else {
                recipe.schedule.decay
            },
            final_fraction: if tiny {
                0.1
            } else {
                recipe.schedule.final_fraction
            },
        };
        let epochs = args.steps.div_ceil(args.checkpoint_every.max(1));
        eprintln!(
            "recipe {} (mixture {}), config {} ({:.1}M parameters), {} steps of {} × {} × {} tokens, \
             peak lr {peak:e}, checkpoint every {} steps{}",
            recipe.name,
            recipe.mixture,
            args.config,
            config.num_parameters() as f64 / 1e6,
            args.steps,
            args.batch,
            args.accum,
            args.seq_len,
            args.checkpoint_every,
            resume_epoch
                .map(|e| format!(", resuming after epoch {e}"))
                .unwrap_or_default()
        );
        B::seed(&device, args.seed);
        let phi = Phi::<Autodiff<B>>::new(&config, &device);
        let trainee = Trainee::new(
            phi,
            StepSettings {
                grad_clip_norm: recipe.grad_clip_norm,
                weight_decay: recipe.optimizer.weight_decay,
                ..Default::default()
            },
        );
        // Adam and AdamW differ only in how decay is applied, and decay is applied by the step
        // itself (to weight matrices only), so both recipes run AdamW with its own decay off.
        let optim = AdamWConfig::new()
            .with_beta_1(recipe.optimizer.beta_1 as f32)
            .with_beta_2(recipe.optimizer.beta_2 as f32)
            .with_epsilon(recipe.optimizer.epsilon as f32)
            .with_weight_decay(0.0)
            .init();
        let devices: Vec<B::Device> = (0..args.devices)
            .map(|index| {
                let mut id = device.to_id();
                id.index_id = index as u16;
                <B::Device as Device>::from_id(id)
            })
            .collect();
        let peak_flops = args
            .peak_tflops
            .map(|t| t * 1e12)
            .or_else(|| {
                (args.backend == BackendName::Cuda)
                    .then(gpu_peak_flops)
                    .flatten()
            })
            .map(|one| one * args.devices as f64);
        let plan = RunPlan {
            dir: args.out.clone(),
            batch: args.batch,
            grad_accum: args.accum,
            steps_per_epoch: args.checkpoint_every,
            epochs,
            keep: 2,
            valid_batches: 4,
            resume_epoch,
            peak_flops,
        };
        let started = Instant::now();
        let trained = run(
            trainee,
            optim,
            schedule.scheduler(args.accum),
            Arc::new(train),
            Arc::new(valid),
            &plan,
            &devices,
        );
        let seconds = started.elapsed().as_secs_f64();
        let done_steps = args.steps - resume_epoch.unwrap_or(0) * args.checkpoint_every;
        let tokens = done_steps * args.batch * args.accum * args.seq_len * args.devices;

        // The learner logs one loss per micro-batch; report epochs and draw the curve.
        let mut curve = vec![];
        let mut valid_points = vec![];
        for epoch in 1..=epochs {
            curve.extend(logged_metric(&args.out, "train", epoch, "Loss").unwrap_or_default());
            if let Some(values) = logged_metric(&args.out, "valid", epoch, "Loss")
                && !values.is_empty()
            {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                valid_points.push((epoch * args.checkpoint_every, mean));
            }
        }
        let points_per_step = args.accum as f64;
        write_svg(
            &args.out.join("loss.svg"),
            &curve,
            &valid_points,
            1.0 / points_per_step,
        )?;
        let final_dir = args.out.join("final");
        phi_zoo::save_hf(&trained.phi, &final_dir, StoredDType::F32)?;
        std::fs::write(final_dir.join("tokenizer.json"), tokenizer.to_json()?)?;

        let first = curve.iter().take(5).sum::<f64>() / curve.len().clamp(1, 5) as f64;
        let last = curve.iter().rev().take(5).sum::<f64>() / curve.len().clamp(1, 5) as f64;
        println!(
            "trained {done_steps} steps in {seconds:.1} s ({:.0} tokens/s); train loss {first:.3} → {last:.3}",
            tokens as f64 / seconds
        );
        for (step, loss) in &valid_points {
            println!("  validation loss after step {step}: {loss:.3}");
        }
        if let Some(peak) = peak_flops {
            let flops = config.training_flops_per_token(args.seq_len) * tokens as f64 / seconds;
            println!(
                "  MFU {:.1}% ({:.2} TFLOP/s of {:.0} peak)",
                100.0 * flops / peak,
                flops / 1e12,
                peak / 1e12
            );
        }
        if args.data.is_empty() {
            println!(
                "  (validation: the last {HELD_OUT_DOCUMENTS} documents of each embedded corpus, held out)"
            );
        } else {
            println!(
                "  (validation: the final {:.0}% of every --data store, held out)",
                args.held_out * 100.0
            );
        }
        println!(
            "model: {} (HF safetensors + config.json + tokenizer.json); curve: {}",
            final_dir.display(),
            args.out.join("loss.svg").display()
        );

        // Sampled, with a repetition penalty: a model this small and this briefly trained
        // repeats its likeliest token (a newline) when decoded greedily.
        let prompt_text = "def add(a, b):";
        let prompt = tokenizer.encode(prompt_text)?;
        let generation = GenerationConfig {
            max_new_tokens: 40,
            sampling: Some(Sampling {
                temperature: 0.7,
                top_k: Some(40),
                top_p: None,
                min_p: None,
            }),
            repetition_penalty: 1.3,
            seed: args.seed,
            ..GenerationConfig::for_model(trained.phi.config(), Some(&tokenizer))
        };
        let sample = phi_zoo::generate_text(
            &trained.phi,
            &tokenizer,
            &prompt,
            &generation,
            &[],
            &device,
            |_| {},
        )?;
        println!(
            "sample (temperature 0.7, top-k 40, repetition penalty 1.3):\n{prompt_text}{}",
            sample.text
        );
        Ok(())
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    let recipe = recipe(&args.recipe)?;
    let mut config = phi_zoo::named_config(&args.config)
        .with_context(|| format!("unknown config {:?}", args.config))?;
    config.attention_dropout = recipe.attention_dropout;
    config.resid_pdrop = recipe.resid_dropout;
    config.embd_pdrop = recipe.embd_dropout;
    if args.seq_len > config.max_position_embeddings {
        bail!(
            "--seq-len {} exceeds the config's context of {}",
            args.seq_len,
            config.max_position_embeddings
        );
    }
    args.accum = args.grad_accum.unwrap_or_else(|| {
        if args.config == "tiny" {
            1
        } else {
            recipe
                .global_batch_tokens
                .div_ceil(args.batch.max(1) * args.seq_len.max(1) * args.devices.max(1))
        }
    });
    if args.steps == 0
        || args.checkpoint_every == 0
        || args.batch == 0
        || args.accum == 0
        || args.devices == 0
    {
        bail!(
            "--steps, --checkpoint-every, --batch, --grad-accum and --devices must be at least 1"
        );
    }
    if args.steps % args.checkpoint_every != 0 {
        bail!("--steps must be a multiple of --checkpoint-every (checkpoints close epochs)");
    }
    let (backend, dtype) = (args.backend, args.dtype);
    run_on(
        backend,
        dtype,
        Pretrain {
            args,
            recipe,
            config,
        },
    )?
}
