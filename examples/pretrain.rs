//! Pretraining a Phi on a weighted data mixture with burn-train's learner.
//!
//! With no flags: the `tiny` shape with the `tiny` recipe (phi-1.5's optimizer and 20/80 mixture of
//! code and synthetic textbooks, on the embedded corpora) on the CPU, in a few minutes; checkpoints,
//! the final model in Hugging Face format, the loss curve (`loss.svg`) and a sample from the trained
//! model land in `--out`.
//!
//! ```sh
//! cargo run --release --example pretrain
//! cargo run --release --example pretrain -- --steps 200 --checkpoint-every 50 --out runs/tiny
//! cargo run --release --example pretrain -- --out runs/tiny --steps 300 --resume   # continue
//! cargo run --release --example pretrain -- --config phi-1.5 --recipe phi-1.5 \
//!     --data code=stores/code:0.2 --data synthetic=stores/textbooks:0.8 --backend cuda --dtype bf16
//! # two nodes (run on each machine, node 0's address on both):
//! cargo run --release --example pretrain -- --nodes 2 --node-rank 0 --node-address 10.0.0.1:29400
//! cargo run --release --example pretrain -- --nodes 2 --node-rank 1 --node-address 10.0.0.1:29400
//! ```

mod cli;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use phi_zoo::backend::{BackendJob, BackendName};
use phi_zoo::common::train::{LmTrainee, Trainee};
use phi_zoo::training::{
    DataSource, NodeGroup, RunReport, detected_peak_flops, recipe_mixtures, run,
};
use phi_zoo::{GenerationConfig, NamedRecipe, Phi, PhiTokenizer, Recipe, Sampling, Variant};

#[derive(Parser, Clone)]
#[command(
    about = "Pretrain a Phi on a weighted mixture (default: the tiny shape on the embedded corpora)",
    mut_arg("steps", |a| a.default_value("60").required(false)),
    mut_arg("batch", |a| a.default_value("6").required(false)),
    mut_arg("out", |a| a.default_value("runs/pretrain").required(false)),
    mut_arg("recipe", |a| a.default_value("tiny").required(false)),
)]
struct Args {
    /// Model shape: phi-1, phi-1-small, phi-1.5, phi-2, tiny.
    #[arg(long, default_value = "tiny")]
    config: Variant,
    /// A source of the mixture as `name=STORE_DIR:weight` (repeatable); default: the embedded
    /// corpora in the recipe's slots and weights.
    #[arg(long)]
    data: Vec<DataSource>,
    /// Positions per sequence (default: the recipe's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Fraction of every `--data` store held out for validation (its final tokens).
    #[arg(long, default_value_t = 0.05)]
    held_out: f64,
    /// Devices to train on, data parallel through burn-train's multi-device strategy (GPU
    /// backends: devices 0..N; each reads `--batch × --grad-accum` sequences per step).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Nodes of a data-parallel run: processes (one per machine, each with its `--devices`) that
    /// each read their share of every micro-batch and sum gradients over TCP every step.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// This process's rank among `--nodes`, from 0; node 0 listens at `--node-address`.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Where node 0 listens (`HOST:PORT`) and the other nodes connect.
    #[arg(long, default_value = "127.0.0.1:29400")]
    node_address: String,
    /// Recompute activations in the backward pass instead of keeping them (burn's balanced
    /// checkpointing): less memory for long sequences and big shapes, more compute.
    #[arg(long)]
    checkpointing: bool,
    /// Peak FLOP/s of one device in TFLOP/s, for the MFU metric (default: looked up for the
    /// NVIDIA card `nvidia-smi` names on the cuda backend; none on CPU).
    #[arg(long)]
    peak_tflops: Option<f64>,
    #[command(flatten)]
    run: cli::RunArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

struct Pretrain {
    args: Args,
    recipe: Recipe,
    seq_len: usize,
    /// Mixed precision: the type of the products (`--dtype bf16`).
    matmul: Option<burn::tensor::FloatDType>,
}

impl BackendJob for Pretrain {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        if self.args.checkpointing {
            self.train::<Autodiff<B, BalancedCheckpointing>>(device)
        } else {
            self.train::<Autodiff<B>>(device)
        }
    }
}

impl Pretrain {
    fn train<AB: AutodiffBackend>(self, device: AB::Device) -> Result<()> {
        let Pretrain {
            args,
            recipe,
            seq_len,
            matmul,
        } = self;
        let run_args = &args.run;
        let config = args.config.config();
        let tokenizer = PhiTokenizer::bundled();
        let data = recipe_mixtures(
            &recipe,
            &args.data,
            &run_args.out.join("data"),
            &tokenizer,
            seq_len,
            run_args.seed,
            args.held_out,
        )?;
        let accum = run_args.grad_accum(&recipe, seq_len, args.devices * args.nodes);
        let mut plan = run_args.plan(accum, 4);
        plan.peak_flops = args
            .peak_tflops
            .map(|t| t * 1e12)
            .or_else(|| (args.device.backend == BackendName::Cuda).then(detected_peak_flops)?)
            .map(|one| one * args.devices as f64);
        eprintln!(
            "recipe {}, config {} ({:.1}M parameters), {} steps of {} × {accum} × {seq_len} tokens \
             on {} device(s), peak lr {:e}, checkpoint every {} steps{}",
            recipe.name,
            args.config,
            config.num_parameters() as f64 / 1e6,
            run_args.steps,
            run_args.batch,
            args.devices,
            recipe.schedule.peak,
            run_args.checkpoint_every,
            plan.resume_epoch
                .map(|e| format!(", resuming after epoch {e}"))
                .unwrap_or_default()
        );
        AB::seed(&device, run_args.seed);
        let phi = Phi::<AB>::new(&config, &device).with_matmul_dtype(matmul);
        let mut trainee = Trainee::new(recipe.apply_dropout(phi), recipe.step_settings());
        if args.nodes > 1 {
            eprintln!(
                "node {} of {}: joining the run at {}",
                args.node_rank, args.nodes, args.node_address
            );
            let group = NodeGroup::join(
                args.node_rank,
                args.nodes,
                &args.node_address,
                Duration::from_secs(600),
            )?;
            trainee.set_gradient_sync(Some(Arc::new(group)));
        }
        let devices = phi_zoo::backend::devices_like::<AB>(&device, args.devices);
        let started = Instant::now();
        let trained = run(
            trainee,
            recipe.optimizer(),
            recipe.scheduler(accum),
            Arc::new(data.train),
            Arc::new(data.valid),
            &plan,
            &devices,
        );
        let seconds = started.elapsed().as_secs_f64();
        let done_steps =
            run_args.steps - plan.resume_epoch.unwrap_or(0) * run_args.checkpoint_every;
        let tokens = done_steps * run_args.batch * accum * seq_len * args.devices * args.nodes;

        let report = RunReport::read(&plan.dir, plan.epochs, plan.steps_per_epoch, accum);
        let curve = run_args.out.join("loss.svg");
        report.write_svg(&curve, run_args.log_scale)?;
        report.write_png(&curve.with_extension("png"), run_args.log_scale)?;
        let final_dir = run_args.out.join("final");
        phi_zoo::training::export_model(&trained.phi, &tokenizer, &final_dir)?;
        let mfu = plan
            .peak_flops
            .map(|peak| (config.training_flops_per_token(seq_len), peak));
        println!("{}", report.summary(done_steps, seconds, tokens, mfu));
        println!("  (validation: {}, held out)", data.validation);
        println!(
            "model: {} (HF safetensors + config.json + tokenizer.json); curve: {}",
            final_dir.display(),
            curve.display()
        );

        // Sampled, with a repetition penalty: a model this small and this briefly trained
        // repeats its likeliest token (a newline) when decoded greedily.
        let prompt_text = "def add(a, b):";
        let generation = GenerationConfig {
            max_new_tokens: 40,
            sampling: Some(Sampling {
                temperature: 0.7,
                top_k: Some(40),
                top_p: None,
                min_p: None,
            }),
            repetition_penalty: 1.3,
            seed: run_args.seed,
            ..GenerationConfig::for_model(trained.phi.config(), Some(&tokenizer))
        };
        let prompt = tokenizer.encode(prompt_text)?;
        let sample = cli::complete(&trained.phi, &tokenizer, &prompt, &generation, &device)?;
        println!(
            "sample (temperature 0.7, top-k 40, repetition penalty 1.3):\n{prompt_text}{sample}"
        );
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    args.run.check()?;
    if args.devices == 0 {
        anyhow::bail!("--devices must be at least 1");
    }
    if args.nodes == 0 || args.node_rank >= args.nodes {
        anyhow::bail!(
            "--node-rank {} must be below --nodes {} (at least 1)",
            args.node_rank,
            args.nodes
        );
    }
    let recipe = args.run.recipe(NamedRecipe::Tiny)?;
    let seq_len = args.seq_len.unwrap_or(recipe.seq_len);
    let context = args.config.config().max_position_embeddings;
    if seq_len > context {
        anyhow::bail!(
            "--seq-len {seq_len} exceeds {}'s context of {context}",
            args.config
        );
    }
    let (device, matmul) = args.device.for_training()?;
    device.run(Pretrain {
        args,
        recipe,
        seq_len,
        matmul,
    })?
}
