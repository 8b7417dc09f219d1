//! Where one Phi layer's prefill time goes on the CPU: the whole layer, its matmuls, and each
//! CPU kernel next to the generic tensor code it replaces there.
//!
//! `cargo run --release --example prefill_profile [-- --config phi-1.5 --tokens 512 --reps 3]`
//!
//! Random weights and inputs; mean milliseconds per call after one untimed call. Inputs are
//! shared between calls, so each call also pays the copy that a kernel working in place makes
//! of a shared input (in the model, these inputs are fresh and the kernels copy nothing).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use phi_zoo::backend::Cpu;
use phi_zoo::{Phi, Variant};
use phi_zoo_common::model::profile::{
    BlockStages, attention_kernel, attention_tensor, gelu_kernel, gelu_tensor,
};

#[derive(Parser)]
struct Args {
    /// A named shape: phi-1, phi-1-small, phi-1.5, phi-2, tiny.
    #[arg(long, default_value = "phi-1.5")]
    config: Variant,
    /// Prompt length.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Mean milliseconds per call of `f`, after one untimed call.
fn ms<const D: usize>(reps: usize, mut f: impl FnMut() -> Tensor<Cpu, D>) -> f64 {
    let _ = f().into_data();
    let start = Instant::now();
    for _ in 0..reps {
        let _ = f().into_data();
    }
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn main() {
    let args = Args::parse();
    let device = Default::default();
    let mut config = args.config.config();
    config.num_hidden_layers = 1;
    let phi = Phi::<Cpu>::new(&config, &device);
    let layer = &phi.model.layers[0];
    let attn = &layer.self_attn;
    let (seq, reps) = (args.tokens, args.reps);
    let (hidden, heads, head_dim) = (
        config.hidden_size,
        config.num_attention_heads,
        config.head_dim(),
    );
    let scale = (head_dim as f32).powf(-0.5);
    let random =
        |shape: [usize; 3]| Tensor::<Cpu, 3>::random(shape, Distribution::Default, &device);
    let x = random([1, seq, hidden]);
    let up = random([1, seq, config.intermediate_size]);
    let stages_of = BlockStages::new(&phi, seq, &device);
    let split = |t: Tensor<Cpu, 3>| t.reshape([1, seq, heads, head_dim]).swap_dims(1, 2);
    let (q, k, v) = (split(x.clone()), split(x.clone()), split(x.clone()));

    let stages: Vec<(&str, f64)> = vec![
        ("layer", ms(reps, || stages_of.block(x.clone()))),
        (
            "  attention half",
            ms(reps, || stages_of.attention(x.clone())),
        ),
        ("  mlp half", ms(reps, || stages_of.mlp(x.clone()))),
        (
            "q_proj (×4 in attention)",
            ms(reps, || attn.q_proj.forward(x.clone())),
        ),
        ("fc1", ms(reps, || layer.mlp.fc1.forward(x.clone()))),
        ("fc2", ms(reps, || layer.mlp.fc2.forward(up.clone()))),
        ("gelu, tensor ops", ms(reps, || gelu_tensor(up.clone()))),
        ("gelu, CPU kernel", ms(reps, || gelu_kernel(up.clone()))),
        (
            "rotary, tensor ops",
            ms(reps, || stages_of.rotary_tensor(q.clone())),
        ),
        (
            "rotary, CPU kernel",
            ms(reps, || stages_of.rotary_kernel(x.clone(), head_dim)),
        ),
        (
            "attention core, tensor ops",
            ms(reps, || {
                attention_tensor(q.clone(), k.clone(), v.clone(), scale as f64)
            }),
        ),
        (
            "attention core, CPU kernel",
            ms(reps, || {
                attention_kernel(x.clone(), k.clone(), v.clone(), heads, scale)
            }),
        ),
    ];
    let layer_ms = stages[0].1;
    println!(
        "{} with {seq} tokens, one layer, mean of {reps} calls",
        args.config
    );
    for (name, t) in stages {
        println!(
            "{name:<28} {t:9.2} ms {:6.1}% of the layer",
            100.0 * t / layer_ms
        );
    }
}
