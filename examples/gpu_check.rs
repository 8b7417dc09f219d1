//! One program that checks phi-zoo on a GPU and measures it there, a phase per process
//! (`tools/gpu_check.sh` runs every phase, each in its own process, and gathers the JSON):
//!
//! - `parity`: every fixture under `tests/fixtures` against transformers' logits in the float
//!   type given: the full forward, a cached decode of every position (GPU decoding's fixed
//!   shapes), and greedy generation of transformers' ids (a mismatch is reported, not fatal in
//!   half precision, where a near tie may flip).
//! - `decode`: a named shape with random weights: warm-up of the decode buckets, a prompt
//!   prefilled in one pass, then greedy decode steps (first, median and slowest), with a cache of
//!   `--context` positions, as `examples/bench` runs them.
//! - `train`: a named shape with random weights and token ids, `--seq-len` positions:
//!   optimizer steps as training takes them (fused head and loss, clipping, AdamW), the first
//!   two untimed; tokens/s and MFU against the device's peak. `--dtype bf16` is mixed precision
//!   (products in bf16, f32 master weights); `--checkpointing` recomputes activations in the
//!   backward pass (burn's balanced checkpointing) to save memory.
//!
//! ```sh
//! cargo build --release --no-default-features --features cuda,train --example gpu_check
//! target/release/examples/gpu_check parity --backend cuda --dtype f16
//! target/release/examples/gpu_check decode --backend cuda --dtype f16 --config phi-2
//! target/release/examples/gpu_check train --backend cuda --dtype bf16 --config phi-1.5 --seq-len 2048
//! ```
//!
//! Each run prints what it checks as it goes and one JSON object as its last line.

mod cli;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType};
use clap::{Parser, Subcommand};
use phi_zoo::WeightFormat;
use phi_zoo::backend::BackendJob;
use phi_zoo::common::LmBatch;
use phi_zoo::common::train::{StepSettings, optimizer_step};
use phi_zoo::{Checkpoint, GenerationConfig, NamedRecipe, Phi, Variant};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Check and measure phi-zoo on a GPU, one phase per run")]
struct Args {
    #[command(subcommand)]
    phase: Phase,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

#[derive(Subcommand)]
enum Phase {
    /// The fixtures against transformers' logits and greedy ids.
    Parity {
        /// The fixtures' folder.
        #[arg(long, default_value = "tests/fixtures")]
        fixtures: PathBuf,
    },
    /// Prefill and decode speed of a named shape with random weights.
    Decode {
        #[arg(long, default_value = "phi-1.5")]
        config: Variant,
        #[arg(long, default_value_t = 512)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        /// Positions the cache holds (the memory a context of this length takes).
        #[arg(long, default_value_t = 2048)]
        context: usize,
    },
    /// Training throughput and MFU of a named shape with random weights and tokens.
    Train {
        #[arg(long, default_value = "phi-1.5")]
        config: Variant,
        #[arg(long, default_value_t = 2048)]
        seq_len: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed optimizer steps (after two untimed ones).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Recompute activations in the backward pass instead of keeping them.
        #[arg(long)]
        checkpointing: bool,
        /// One device's peak in TFLOP/s for MFU (default: looked up from `nvidia-smi`).
        #[arg(long)]
        peak_tflops: Option<f64>,
    },
}

/// The tolerances parity is held to, by float type: f32 runs as TF32 in CUDA's matmuls
/// (5.5e-3 seen on an H200); f16 and bf16 are twice the error the CPU backend made on the same
/// fixtures computing in that type throughout (its default dtype set to it, at commit
/// `31050b9`; the CPU now keeps f16 and bf16 as packed weights and computes in f32).
fn tolerance(dtype: WeightFormat) -> f32 {
    match dtype {
        WeightFormat::F16 => 2.0 * CPU_F16_ERROR,
        WeightFormat::Bf16 => 2.0 * CPU_BF16_ERROR,
        _ => 1e-2,
    }
}

/// The largest |Δ| against transformers' f32 logits on the CPU backend in f16 and bf16 over
/// every fixture and check, rounded up (measured: 1.14e-2 and 8.73e-2, both on `tiny_gqa`'s
/// cached decode; f32 gives 4.1e-6).
const CPU_F16_ERROR: f32 = 1.2e-2;
const CPU_BF16_ERROR: f32 = 9e-2;

/// transformers' outputs for one fixture (`tools/make_fixtures.py`'s `reference.json`).
struct Reference {
    ids: Vec<Vec<u32>>,
    /// `[batch, seq, vocab]`, flattened.
    logits: Vec<f32>,
    vocab: usize,
    greedy: Vec<Vec<u32>>,
}

impl Reference {
    fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("reference.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        fn flatten(value: &Value, out: &mut Vec<f32>) {
            match value {
                Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
                v => out.push(v.as_f64().unwrap_or(f64::NAN) as f32),
            }
        }
        let mut logits = Vec::new();
        flatten(&value["logits"], &mut logits);
        Ok(Reference {
            ids: serde_json::from_value(value["input_ids"].clone())?,
            vocab: value["logits"][0][0].as_array().map_or(0, Vec::len),
            logits,
            greedy: serde_json::from_value(value["greedy_new_tokens"].clone())?,
        })
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_finite() {
                (x - y).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, f32::max)
}

struct ParityJob<'a> {
    fixtures: &'a Path,
    /// The `--dtype`: the compute type on GPU backends.
    dtype: WeightFormat,
    /// How the linear weights are stored (packed on the CPU backend).
    weights: WeightFormat,
}

impl BackendJob for ParityJob<'_> {
    type Output = Result<Value>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Value> {
        let tolerance = tolerance(self.dtype);
        let mut rows = Vec::new();
        let mut passed = true;
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.fixtures)
            .with_context(|| format!("{}", self.fixtures.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // The transformers fixtures: a reference and a V3 checkpoint folder each.
            .filter(|p| p.join("reference.json").exists() && p.join("v3").is_dir())
            .collect();
        names.sort();
        for dir in names {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let reference = Reference::load(&dir)?;
            let model = Checkpoint::open(dir.join("v3"))?.load_as::<B>(&device, self.weights)?;
            let full: Vec<f32> = model
                .forward_ids(&reference.ids, &device)?
                .into_data()
                .iter::<f32>()
                .collect();
            let full_diff = max_abs_diff(&full, &reference.logits);
            let (batch, seq, vocab) =
                (reference.ids.len(), reference.ids[0].len(), reference.vocab);
            let mut cache = model.new_cache(batch, seq, &device);
            let mut decode_diff = 0.0f32;
            for column in 0..seq {
                let ids: Vec<Vec<u32>> = reference.ids.iter().map(|r| vec![r[column]]).collect();
                let got: Vec<f32> = model
                    .forward_cached(model.ids_tensor(&ids, &device)?, &mut cache)?
                    .into_data()
                    .iter::<f32>()
                    .collect();
                let expected: Vec<f32> = (0..batch)
                    .flat_map(|row| {
                        let at = (row * seq + column) * vocab;
                        reference.logits[at..at + vocab].iter().copied()
                    })
                    .collect();
                decode_diff = decode_diff.max(max_abs_diff(&got, &expected));
            }
            let new = reference.greedy[0].len();
            let config = GenerationConfig {
                max_new_tokens: new,
                ..Default::default()
            };
            let generated = phi_zoo::generate_batch(&model, &reference.ids[..1], &config, &device)?;
            let greedy_match = generated[0].ids == reference.greedy[0];
            let ok = full_diff <= tolerance && decode_diff <= tolerance;
            passed &= ok;
            eprintln!(
                "parity {name} {:?}: full forward {full_diff:.2e}, cached decode {decode_diff:.2e} \
                 (tolerance {tolerance:.0e}), greedy ids {}",
                self.dtype,
                if greedy_match { "match" } else { "differ" }
            );
            rows.push(json!({
                "fixture": name,
                "full_forward_max_abs_diff": full_diff,
                "cached_decode_max_abs_diff": decode_diff,
                "greedy_ids_match": greedy_match,
                "ok": ok,
            }));
        }
        Ok(json!({
            "phase": "parity",
            "dtype": format!("{:?}", self.dtype),
            "tolerance": tolerance,
            "passed": passed,
            "fixtures": rows,
        }))
    }
}

struct DecodeJob {
    config: Variant,
    weights: WeightFormat,
    prompt_tokens: usize,
    new_tokens: usize,
    context: usize,
}

impl BackendJob for DecodeJob {
    type Output = Result<Value>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Value> {
        let config = self.config.config();
        let capacity = self.context.min(config.max_position_embeddings);
        if self.prompt_tokens + self.new_tokens > capacity {
            bail!("--prompt-tokens + --new-tokens exceed --context {capacity}");
        }
        let started = Instant::now();
        let model = Phi::<B>::new_as(&config, &device, self.weights)?;
        B::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let load_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        cli::warm_up(&model, &[1], capacity, &device)?;
        let warm_up_s = started.elapsed().as_secs_f64();
        let vocab = config.vocab_size.min(50295) as u64;
        let prompt: Vec<u32> = (0..self.prompt_tokens as u64)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect();
        // One untimed pass of the same shapes, as examples/bench does.
        cli::decode_pass(&model, &prompt, 2, capacity, &device, &mut |_| {})?;
        let (prefill_s, steps) = cli::decode_pass(
            &model,
            &prompt,
            self.new_tokens,
            capacity,
            &device,
            &mut |_| {},
        )?;
        let mut sorted = steps.clone();
        sorted.sort_by(f64::total_cmp);
        let ms = |s: f64| s * 1e3;
        let total: f64 = steps.iter().sum();
        let out = json!({
            "phase": "decode",
            "config": self.config.to_string(),
            "context": capacity,
            "load_s": load_s,
            "warm_up_s": warm_up_s,
            "prefill_tokens": self.prompt_tokens,
            "prefill_tokens_per_s": self.prompt_tokens as f64 / prefill_s,
            "decode_steps": steps.len(),
            "decode_ms_per_token": ms(total / steps.len().max(1) as f64),
            "decode_first_ms": steps.first().copied().map(ms),
            "decode_median_ms": sorted.get(sorted.len() / 2).copied().map(ms),
            "decode_slowest_ms": sorted.last().copied().map(ms),
        });
        eprintln!("decode {}: {out}", self.config);
        Ok(out)
    }
}

struct TrainJob {
    config: Variant,
    seq_len: usize,
    batch: usize,
    steps: usize,
    checkpointing: bool,
    peak_flops: Option<f64>,
    matmul: Option<FloatDType>,
}

impl BackendJob for TrainJob {
    type Output = Result<Value>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Value> {
        if self.checkpointing {
            self.train::<Autodiff<B, BalancedCheckpointing>>(&device)
        } else {
            self.train::<Autodiff<B>>(&device)
        }
    }
}

impl TrainJob {
    fn train<AB: AutodiffBackend>(self, device: &AB::Device) -> Result<Value> {
        let config = self.config.config();
        if self.seq_len > config.max_position_embeddings {
            bail!("--seq-len exceeds {}'s context", self.config);
        }
        let recipe = NamedRecipe::Phi1_5.recipe();
        let settings = StepSettings {
            grad_clip_norm: recipe.grad_clip_norm,
            weight_decay: recipe.optimizer.weight_decay,
            grad_scale: 1.0,
        };
        let mut optimizer = recipe.optimizer::<AB, Phi<AB>>();
        let mut phi = Phi::<AB>::new(&config, device).with_matmul_dtype(self.matmul);
        let ids = || {
            Tensor::<AB, 2>::random(
                [self.batch, self.seq_len],
                Distribution::Uniform(0.0, config.vocab_size as f64),
                device,
            )
            .int()
        };
        let untimed = 2;
        let (mut seconds, mut losses) = (0.0, Vec::new());
        for step in 0..untimed + self.steps {
            let batch = LmBatch {
                inputs: ids(),
                targets: ids(),
                loss_mask: None,
            };
            let started = Instant::now();
            let (output, grads) = phi.lm_train_step(batch, None);
            let grads = GradientsParams::from_grads(grads, &phi);
            phi = optimizer_step(phi, settings, None, &mut optimizer, 2e-4, grads);
            // Reading the loss waits for the step, as a training loop's logging does.
            let loss = output.loss.into_scalar().elem::<f64>();
            let _ = phi.valid().lm_head.bias.val().narrow(0, 0, 1).into_data();
            if step >= untimed {
                seconds += started.elapsed().as_secs_f64();
            }
            losses.push(loss);
            eprintln!(
                "train step {step}: loss {loss:.4}, {:.3} s",
                started.elapsed().as_secs_f64()
            );
        }
        let tokens = (self.batch * self.seq_len * self.steps) as f64;
        let tokens_per_s = tokens / seconds;
        let flops_per_token = config.training_flops_per_token(self.seq_len);
        let mfu = self
            .peak_flops
            .map(|peak| tokens_per_s * flops_per_token / peak);
        let out = json!({
            "phase": "train",
            "config": self.config.to_string(),
            "seq_len": self.seq_len,
            "batch": self.batch,
            "matmul_dtype": format!("{:?}", self.matmul.unwrap_or(FloatDType::F32)),
            "checkpointing": self.checkpointing,
            "timed_steps": self.steps,
            "ms_per_step": 1e3 * seconds / self.steps as f64,
            "tokens_per_s": tokens_per_s,
            "flops_per_token": flops_per_token,
            "peak_flops": self.peak_flops,
            "mfu": mfu,
            "losses": losses,
        });
        eprintln!("train {}: {out}", self.config);
        Ok(out)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let out = match args.phase {
        Phase::Parity { fixtures } => args.device.run(ParityJob {
            fixtures: &fixtures,
            dtype: args.device.dtype(),
            weights: args.device.weights(),
        })??,
        Phase::Decode {
            config,
            prompt_tokens,
            new_tokens,
            context,
        } => args.device.run(DecodeJob {
            config,
            weights: args.device.weights(),
            prompt_tokens,
            new_tokens,
            context,
        })??,
        Phase::Train {
            config,
            seq_len,
            batch,
            steps,
            checkpointing,
            peak_tflops,
        } => {
            let (device, matmul) = args.device.for_training()?;
            let peak_flops = peak_tflops
                .map(|t| t * 1e12)
                .or_else(phi_zoo::training::detected_peak_flops);
            device.run(TrainJob {
                config,
                seq_len,
                batch,
                steps,
                checkpointing,
                peak_flops,
                matmul,
            })??
        }
    };
    println!("{out}");
    Ok(())
}
