//! Where one training step's time goes on the CPU, without burn-train's learner: the forward pass
//! to the last hidden states, the LM head, the loss, the backward pass and the optimizer step
//! (scaling, clipping, decay, AdamW), each timed on its own; then the whole step. The learner's
//! overhead is the difference between this loop's tokens/s and `examples/pretrain`'s.
//!
//! `cargo run --release --example train_profile [-- --config tiny --batch 6 --seq-len 128 --steps 10 --plain]`
//!
//! Random weights and token ids, the tiny recipe's optimizer and clipping; means over `--steps`
//! steps after one untimed step. `tools/train_speed_torch.py` is the PyTorch side.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use phi_zoo::backend::Cpu;
use phi_zoo::common::model::Options;
use phi_zoo::common::train::{StepSettings, head_loss, lm_loss, optimizer_step};
use phi_zoo::{NamedRecipe, Phi, Variant};

type Train = Autodiff<Cpu>;

#[derive(Parser)]
struct Args {
    /// A named shape: phi-1, phi-1-small, phi-1.5, phi-2, tiny.
    #[arg(long, default_value = "tiny")]
    config: Variant,
    #[arg(long, default_value_t = 6)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The LM head and `lm_loss` through autodiff (as evaluation computes them) instead of the
    /// fused head and loss training runs (`train::head_loss`).
    #[arg(long)]
    plain: bool,
}

/// Seconds spent in each stage, summed over the timed steps.
#[derive(Default)]
struct Split {
    body: f64,
    head: f64,
    loss: f64,
    backward: f64,
    optimizer: f64,
}

fn main() {
    let args = Args::parse();
    // As `training::run` does.
    phi_zoo::memory::retain_freed_memory();
    let device = Default::default();
    let config = args.config.config();
    let recipe = NamedRecipe::Tiny.recipe();
    let settings = StepSettings {
        grad_clip_norm: recipe.grad_clip_norm,
        weight_decay: recipe.optimizer.weight_decay,
        grad_scale: 1.0,
    };
    let mut optimizer = recipe.optimizer::<Train, Phi<Train>>();
    let mut phi = Phi::<Train>::new(&config, &device);
    let ids = |_: ()| {
        Tensor::<Train, 2>::random(
            [args.batch, args.seq_len],
            Distribution::Uniform(0.0, config.vocab_size as f64),
            &device,
        )
        .int()
    };
    let mut split = Split::default();
    let mut whole = 0.0;
    for step in 0..=args.steps {
        let (inputs, targets) = (ids(()), ids(()));
        let start = Instant::now();
        let hidden = phi
            .hidden_states(inputs, Options::default())
            .expect("random ids fit the shape");
        let t_body = Instant::now();
        let (grads, t_head, t_loss) = if args.plain {
            let logits = phi.lm_head.forward(hidden);
            let t_head = Instant::now();
            let loss = lm_loss(logits, targets, None);
            let t_loss = Instant::now();
            (loss.backward(), t_head, t_loss)
        } else {
            // The head's forward is part of the fused loss: timed as loss.
            let loss = head_loss(&phi.lm_head, hidden, targets, None, None);
            let t_loss = Instant::now();
            (loss.backward(), t_body, t_loss)
        };
        let grads = GradientsParams::from_grads(grads, &phi);
        let t_backward = Instant::now();
        phi = optimizer_step(phi, settings, None, &mut optimizer, 2e-3, grads);
        // The optimizer's update is eager on the CPU backend; reading one weight makes sure.
        let _ = phi
            .valid()
            .lm_head
            .weight
            .val()
            .slice([0..1, 0..1])
            .into_data();
        let end = Instant::now();
        if step > 0 {
            split.body += (t_body - start).as_secs_f64();
            split.head += (t_head - t_body).as_secs_f64();
            split.loss += (t_loss - t_head).as_secs_f64();
            split.backward += (t_backward - t_loss).as_secs_f64();
            split.optimizer += (end - t_backward).as_secs_f64();
            whole += (end - start).as_secs_f64();
        }
    }
    let steps = args.steps as f64;
    let ms = |s: f64| 1e3 * s / steps;
    println!(
        "{} × {} tokens per step, {} steps: {:.0} tokens/s ({:.1} ms per step)",
        args.batch,
        args.seq_len,
        args.steps,
        (args.batch * args.seq_len) as f64 * steps / whole,
        ms(whole)
    );
    println!(
        "  forward body {:.1} ms, LM head {:.1} ms, loss {:.1} ms, backward {:.1} ms, optimizer {:.1} ms",
        ms(split.body),
        ms(split.head),
        ms(split.loss),
        ms(split.backward),
        ms(split.optimizer)
    );
}
