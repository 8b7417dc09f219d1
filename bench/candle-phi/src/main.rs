//! candle-transformers' `phi` model on the same checkpoint and the same schedule as phi-zoo's
//! `examples/bench`: one untimed pass, then a timed prefill of `--prompt-tokens` and a greedy
//! decode of `--new-tokens` with candle's own KV cache, logits read back every step.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::phi::{Config, Model};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// A folder with config.json and model.safetensors (V3 layout), e.g. one `phi-zoo` exported.
    #[arg(long)]
    model: std::path::PathBuf,
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long)]
    json: bool,
}

fn run_once(model: &mut Model, prompt: &[u32], new_tokens: usize, device: &Device) -> Result<(f64, f64)> {
    model.clear_kv_cache();
    let started = Instant::now();
    let input = Tensor::new(prompt, device)?.unsqueeze(0)?;
    let mut next = argmax(&model.forward(&input)?)?;
    let prefill = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..new_tokens {
        let input = Tensor::new(&[next], device)?.unsqueeze(0)?;
        next = argmax(&model.forward(&input)?)?;
    }
    Ok((prefill, started.elapsed().as_secs_f64()))
}

fn argmax(logits: &Tensor) -> Result<u32> {
    let values: Vec<f32> = logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Device::Cpu;
    let started = Instant::now();
    let config: Config = serde_json::from_str(&std::fs::read_to_string(args.model.join("config.json"))?)?;
    // SAFETY: the file is only read, and nothing rewrites it while the benchmark runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[args.model.join("model.safetensors")], DType::F32, &device)? };
    let mut model = Model::new(&config, vb)?;
    let load_s = started.elapsed().as_secs_f64();
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64).map(|i| ((i * 7919 + 13) % 50295) as u32).collect();
    run_once(&mut model, &prompt, args.new_tokens.min(2), &device)?;
    let (prefill_s, decode_s) = run_once(&mut model, &prompt, args.new_tokens, &device)?;
    let prefill = args.prompt_tokens as f64 / prefill_s;
    let decode = args.new_tokens as f64 / decode_s;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode, "load_s": load_s, "peak_rss_bytes": peak_rss_bytes()})
        );
    } else {
        println!("candle phi: load {load_s:.2} s, prefill {prefill:.1} tokens/s, decode {decode:.2} tokens/s ({:.1} ms/token), peak RSS {:.2} GB",
            1000.0 * decode_s / args.new_tokens as f64, peak_rss_bytes().unwrap_or(0) as f64 / 1e9);
    }
    Ok(())
}
