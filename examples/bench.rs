//! Prefill and decode speed, load time and peak memory of a Phi model.
//!
//! cargo run --release --example bench -- [--config phi-1.5 | --model DIR] [--prompt-tokens 512]
//!     [--new-tokens 64] [--backend flex|wgpu|cuda] [--dtype f32|f16|bf16] [--json]
//!     [--warm-up-decode 2] [--trace] [--context N]
//!
//! `--config` names a shape (phi-1, phi-1-small, phi-1.5, phi-2, tiny) run with random weights;
//! `--model` loads a checkpoint. On GPU backends every decode shape is warmed first
//! (`phi_zoo::warm_up_decode`, as `generate` and `serve` do), then one untimed pass of the same
//! shapes runs (GPU backends compile and autotune kernels on first use). Then the prompt is prefilled in one cached forward
//! and `--new-tokens` tokens are decoded greedily, one cached step each, each token picked as
//! generation picks it (on GPU backends only the chosen ids are read back). `--json` prints only
//! `{"prefill_tokens_per_s", "decode_tokens_per_s", "load_s", "peak_rss_bytes"}`. `--export DIR`
//! writes the model in HF format instead (the bundled tokenizer.json beside it), so bench/candle-phi,
//! llama.cpp and mistral.rs can be timed on the same weights.
//!
//! `--trace` (GPU backends) counts instead of timing what a decode step costs the GPU without
//! a GPU to time: kernels launched per step and per layer, host reads per step, and the kernel
//! compilations, autotune runs and fusion explorations during the timed decode steps (after
//! the warm-up pass; a steady state has none). On lavapipe it shows what a real GPU would do.

use std::time::Instant;

mod cli;

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::Parser;
use phi_zoo::backend::BackendJob;
use phi_zoo::common::generation::select::HostReads;
use phi_zoo::{Phi, Variant};

#[derive(Parser)]
#[command(about = "Benchmark Phi prefill and decode")]
struct Args {
    /// A named shape with random weights: phi-1, phi-1-small, phi-1.5, phi-2, tiny.
    #[arg(long, default_value = "phi-1.5", conflicts_with = "model")]
    config: Variant,
    /// A checkpoint folder instead of random weights.
    #[arg(long)]
    model: Option<String>,
    /// The named shape's context (`max_position_embeddings`) changed to this, e.g. to decode
    /// long with the tiny shape.
    #[arg(long, conflicts_with = "model")]
    context: Option<usize>,
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[command(flatten)]
    device: cli::DeviceArgs,
    #[arg(long)]
    json: bool,
    /// Decode steps in the untimed warm-up pass. Giving `--new-tokens` warms every decode shape:
    /// a much faster timed decode then means the time goes to first-use work (kernel
    /// compilation, autotuning) rather than to the steps themselves.
    #[arg(long, default_value_t = 2)]
    warm_up_decode: usize,
    /// Write the model (e.g. the random one) here in HF format and exit, so another
    /// implementation can be timed on the same weights.
    #[arg(long)]
    export: Option<std::path::PathBuf>,
    /// Count kernels, compilations, fusion explorations and host reads of the decode steps
    /// (GPU backends; every launch is logged, so the times printed mean nothing).
    #[arg(long)]
    trace: bool,
}

struct Figures {
    load_s: f64,
    prefill_s: f64,
    /// Seconds of each decode step, in order.
    steps_s: Vec<f64>,
    /// What the timed decode steps did (`--trace`).
    trace: Option<Trace>,
}

/// Counts over the timed decode steps.
struct Trace {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    gpu: phi_zoo::gpu_trace::GpuCounts,
    reads: HostReads,
    layers: usize,
}

struct Bench<'a> {
    args: &'a Args,
}

impl BackendJob for Bench<'_> {
    type Output = Result<Option<Figures>>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let started = Instant::now();
        let model: Phi<B> = match &args.model {
            Some(dir) => {
                let checkpoint = phi_zoo::open_model(dir, None)?;
                checkpoint.load_as(&device, args.device.weights_for(&checkpoint))?
            }
            None => {
                let mut config = args.config.config();
                if let Some(context) = args.context {
                    config.max_position_embeddings = context;
                    config.validate("--context")?;
                }
                Phi::new_as(&config, &device, args.device.weights())?
            }
        };
        B::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let load_s = started.elapsed().as_secs_f64();
        if let Some(dir) = &args.export {
            phi_zoo::save_hf(&model, dir, phi_zoo::StoredDType::F32)?;
            // The bundled tokenizer beside the weights: peers (mistral.rs) load a folder only
            // with one.
            let tokenizer = phi_zoo::PhiTokenizer::bundled().to_json()?;
            let partial = dir.join("tokenizer.json.partial");
            std::fs::write(&partial, tokenizer)?;
            std::fs::rename(&partial, dir.join("tokenizer.json"))?;
            eprintln!("wrote {}", dir.display());
            return Ok(None);
        }
        let vocab = model.config().vocab_size.min(50295) as u64;
        // Fixed pseudo-random prompt ids: the speed does not depend on them.
        let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect();
        if args.prompt_tokens + args.new_tokens > model.config().max_position_embeddings {
            bail!(
                "prompt + new tokens exceed the context of {}",
                model.config().max_position_embeddings
            );
        }
        // Untimed warm-up of the same shapes (kernel compilation and autotuning on GPUs): the
        // same cache size too, which GPU backends' attention shapes follow.
        let capacity = args.prompt_tokens + args.new_tokens;
        cli::warm_up(&model, &[1], capacity, &device)?;
        let warm_up = args.new_tokens.min(args.warm_up_decode);
        cli::decode_pass(&model, &prompt, warm_up, capacity, &device, &mut |_| {})?;
        let mut marks = Vec::new();
        let (prefill_s, steps_s) = cli::decode_pass(
            &model,
            &prompt,
            args.new_tokens,
            capacity,
            &device,
            &mut |reads| {
                if args.trace {
                    marks.push(Mark::now::<B>(&device, reads));
                }
            },
        )?;
        let trace = (marks.len() == 2).then(|| marks[1].since(&marks[0], model.config()));
        Ok(Some(Figures {
            load_s,
            prefill_s,
            steps_s,
            trace,
        }))
    }
}

/// Counts at one moment of a traced run.
struct Mark {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    gpu: phi_zoo::gpu_trace::GpuCounts,
    reads: HostReads,
}

impl Mark {
    /// The counts once everything queued has run.
    fn now<B: Backend>(device: &B::Device, reads: HostReads) -> Self {
        B::sync(device).expect("the device syncs");
        Self {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            gpu: phi_zoo::gpu_trace::counts(),
            reads,
        }
    }

    fn since(&self, earlier: &Mark, config: &phi_zoo::PhiConfig) -> Trace {
        Trace {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            gpu: self.gpu - earlier.gpu,
            reads: HostReads {
                reads: self.reads.reads - earlier.reads.reads,
                bytes: self.reads.bytes - earlier.reads.bytes,
            },
            layers: config.num_hidden_layers,
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.trace {
        start_trace(&args)?;
    }
    let Some(figures) = args.device.run(Bench { args: &args })?? else {
        return Ok(());
    };
    let prefill = args.prompt_tokens as f64 / figures.prefill_s;
    let decode_s: f64 = figures.steps_s.iter().sum();
    let decode = args.new_tokens as f64 / decode_s;
    let rss = phi_zoo::memory::peak_rss_bytes();
    let steps = args.new_tokens.max(1) as f64;
    let trace = figures.trace.as_ref().map(|t| trace_json(t, steps));
    if args.json {
        let mut out = serde_json::json!({
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
            "load_s": figures.load_s,
            "peak_rss_bytes": rss,
        });
        if let Some(trace) = trace {
            out["trace"] = trace;
        }
        println!("{out}");
    } else {
        let config = args.config.to_string();
        let model = args.model.as_deref().unwrap_or(&config);
        println!(
            "{model} on {:?} {:?}: {} prompt tokens, {} new",
            args.device.backend,
            args.device.dtype(),
            args.prompt_tokens,
            args.new_tokens
        );
        println!("load     {:8.2} s", figures.load_s);
        println!(
            "prefill  {prefill:8.1} tokens/s ({:.3} s)",
            figures.prefill_s
        );
        println!(
            "decode   {decode:8.2} tokens/s ({:.2} ms/token)",
            1000.0 * decode_s / args.new_tokens as f64
        );
        let mut steps = figures.steps_s.clone();
        steps.sort_by(f64::total_cmp);
        if let (Some(first), Some(fastest), Some(slowest)) =
            (figures.steps_s.first(), steps.first(), steps.last())
        {
            println!(
                "  steps: first {:.2} ms, fastest {:.2}, median {:.2}, slowest {:.2}",
                first * 1e3,
                fastest * 1e3,
                steps[steps.len() / 2] * 1e3,
                slowest * 1e3
            );
        }
        if let Some(rss) = rss {
            println!("peak RSS {:8.2} GB", rss as f64 / 1e9);
        }
        if let Some(trace) = trace {
            println!(
                "trace over {} decode steps (after the warm-up pass):",
                args.new_tokens
            );
            for (key, value) in trace.as_object().expect("an object") {
                println!("  {key:<32} {value}");
            }
        }
    }
    Ok(())
}

/// The trace's figures, per decode step where that is what they mean.
fn trace_json(trace: &Trace, steps: f64) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let per_step = |n: u64| serde_json::Value::from(n as f64 / steps);
    out.insert("host_reads_per_step".into(), per_step(trace.reads.reads));
    out.insert(
        "host_bytes_read_per_step".into(),
        per_step(trace.reads.bytes),
    );
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        let gpu = &trace.gpu;
        out.insert("kernels_per_step".into(), per_step(gpu.kernels));
        let per_layer = gpu.kernels as f64 / steps / trace.layers as f64;
        out.insert("kernels_per_step_per_layer".into(), per_layer.into());
        out.insert("compilations".into(), gpu.compilations.into());
        out.insert("autotune_runs".into(), gpu.autotunes.into());
        out.insert("fusion_explorations".into(), gpu.fusion_explorations.into());
        out.insert("fusion_plans_reused".into(), gpu.fusion_plan_reuses.into());
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = trace.layers;
    out.into()
}

/// Turns on the GPU counters before the backend starts.
fn start_trace(args: &Args) -> Result<()> {
    if args.device.backend == phi_zoo::backend::BackendName::Flex {
        bail!("--trace counts GPU kernels: use --backend wgpu or cuda");
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    phi_zoo::gpu_trace::install()?;
    Ok(())
}
