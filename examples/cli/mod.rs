//! The argument groups the examples share, flattened into each example's `Args`, so a flag means
//! the same thing (and is spelt the same way) everywhere. Examples that differ only in a default
//! change it with `#[command(mut_arg(...))]`.

#![allow(dead_code)] // each example uses the groups it needs

use std::path::PathBuf;

use anyhow::Result;
use phi_zoo::backend::{BackendJob, BackendName, FloatType, run_on};
use phi_zoo::common::model::WeightFormat;
use phi_zoo::{Checkpoint, PhiTokenizer};

/// The text `phi` generates after `prompt` (no stop strings, nothing streamed).
pub fn complete<B: burn::prelude::Backend>(
    phi: &phi_zoo::Phi<B>,
    tokenizer: &PhiTokenizer,
    prompt: &[u32],
    generation: &phi_zoo::GenerationConfig,
    device: &B::Device,
) -> Result<String> {
    let out = phi_zoo::generate_text(phi, tokenizer, prompt, generation, &[], device, |_| {})?;
    Ok(out.text)
}

/// Warms a GPU backend's decode kernels for batches of `rows` rows and up to `capacity`
/// positions (`phi_zoo::warm_up_decode`), with a progress line on stderr; nothing on the CPU.
pub fn warm_up<B: burn::prelude::Backend>(
    model: &(impl phi_zoo::LanguageModel<B> + ?Sized),
    rows: &[usize],
    capacity: usize,
    device: &B::Device,
) -> Result<()> {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let steps = phi_zoo::warm_up_decode(model, rows, capacity, device, |done, total| {
        if terminal || done == total {
            eprint!("\rwarming decode kernels: {done}/{total} shapes");
        }
    })?;
    if steps > 0 {
        eprintln!(" ({:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The timed pass of `bench` and `gpu_check`: prefills `prompt`, decodes `new_tokens` greedily with a cache of `capacity` slots; returns
/// the prefill's seconds and each decode step's. Tokens are picked as generation picks them (on
/// GPU backends only the ids come back). `mark` sees the reads so far after the prefill and
/// after the last step.
pub fn decode_pass<B: burn::prelude::Backend>(
    model: &phi_zoo::Phi<B>,
    prompt: &[u32],
    new_tokens: usize,
    capacity: usize,
    device: &B::Device,
    mark: &mut dyn FnMut(phi_zoo::common::generation::select::HostReads),
) -> Result<(f64, Vec<f64>)> {
    use phi_zoo::common::generation::select::{Readback, RowPick, host_reads, pick_tokens};
    let mut picker = phi_zoo::TokenPicker::new(None, 1.0, None, 0);
    let readback = Readback::for_backend::<B>();
    let mut pick = |logits| {
        let mut row = [RowPick {
            picker: &mut picker,
            history: &[],
            want_logits: false,
        }];
        pick_tokens(logits, &mut row, readback)[0].token
    };
    let mut cache = model.new_cache(1, capacity, device);
    let started = std::time::Instant::now();
    let logits =
        model.forward_cached_last(model.ids_tensor(&[prompt.to_vec()], device)?, &mut cache)?;
    let mut next = pick(logits);
    let prefill_s = started.elapsed().as_secs_f64();
    mark(host_reads());
    let mut steps = Vec::with_capacity(new_tokens);
    for _ in 0..new_tokens {
        let started = std::time::Instant::now();
        let logits =
            model.forward_cached_last(model.ids_tensor(&[vec![next]], device)?, &mut cache)?;
        next = pick(logits);
        steps.push(started.elapsed().as_secs_f64());
    }
    mark(host_reads());
    Ok((prefill_s, steps))
}

/// Which model: `--model`, `--revision`, `--tokenizer`.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model folder (config.json + weights), a published variant (phi-1, phi-1.5, phi-2) or a hub
    /// id (microsoft/phi-2); the last two need `--features hub`.
    #[arg(long)]
    pub model: String,
    /// Hub revision when --model is a hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// A tokenizer.json to use instead of the model's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    /// The checkpoint, opened (its weights are read when loaded).
    pub fn open(&self) -> Result<Checkpoint> {
        Ok(phi_zoo::open_model(&self.model, self.revision.as_deref())?)
    }

    /// `--tokenizer`, else the library's rule ([`PhiTokenizer::for_model`]).
    pub fn tokenizer(&self, checkpoint: &Checkpoint) -> Result<Option<PhiTokenizer>> {
        Ok(match &self.tokenizer {
            Some(path) => Some(PhiTokenizer::from_file(path)?),
            None => checkpoint.tokenizer()?,
        })
    }

    /// As `tokenizer`, for programs that need text.
    pub fn text_tokenizer(&self, checkpoint: &Checkpoint) -> Result<PhiTokenizer> {
        self.tokenizer(checkpoint)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no tokenizer.json and a vocabulary of {}, not Phi's: give --tokenizer",
                self.model,
                checkpoint.config().vocab_size
            )
        })
    }
}

/// Where it computes: `--backend`, `--dtype`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct DeviceArgs {
    /// flex (cpu), wgpu or cuda (the last two when compiled in with `--features`).
    #[arg(long, default_value = "flex")]
    pub backend: BackendName,
    /// f32, f16, bf16, q8_0 or q4_0. On the CPU backend the linear layers' weights are stored
    /// so (packed, computed in f32); on GPU backends f16 and bf16 are the compute type. In
    /// training bf16 is mixed precision (products in bf16, f32 master weights). Default: a GGUF
    /// file's own type on the CPU backend (its blocks used as stored), else f32.
    #[arg(long)]
    pub dtype: Option<WeightFormat>,
}

impl DeviceArgs {
    /// `--dtype`, f32 when not given.
    pub fn dtype(&self) -> WeightFormat {
        self.dtype.unwrap_or(WeightFormat::F32)
    }

    /// The backend's float type: f32 on the CPU backend (packed weights are read as f32), the
    /// `--dtype` on GPU backends.
    pub fn float_type(&self) -> Result<FloatType> {
        Ok(match (self.backend, self.dtype()) {
            (BackendName::Flex, _) | (_, WeightFormat::F32) => FloatType::F32,
            (_, WeightFormat::F16) => FloatType::F16,
            (_, WeightFormat::Bf16) => FloatType::Bf16,
            (backend, format) => {
                anyhow::bail!("{format} weights run on the CPU backend (flex), not on {backend:?}")
            }
        })
    }

    /// How the linear layers' weights are stored: `--dtype` on the CPU backend, the backend's
    /// own float tensors (f32 format) on GPU backends.
    pub fn weights(&self) -> WeightFormat {
        match self.backend {
            BackendName::Flex => self.dtype(),
            _ => WeightFormat::F32,
        }
    }

    /// As `weights`, for `checkpoint`: without `--dtype`, the format its file stores the
    /// linear layers in (a GGUF file's `Q8_0`, `Q4_0`, f16 or bf16), which loads with no
    /// conversion.
    pub fn weights_for(&self, checkpoint: &Checkpoint) -> WeightFormat {
        match (self.backend, self.dtype) {
            (BackendName::Flex, None) => checkpoint.stored_format(),
            _ => self.weights(),
        }
    }

    /// Runs `job` on the chosen backend and float type.
    pub fn run<J: BackendJob>(&self, job: J) -> Result<J::Output> {
        Ok(run_on(self.backend, self.float_type()?, job)?)
    }

    /// What training runs in: the device arguments to run on (f32 parameters always) and the
    /// type of the matrix products. `--dtype bf16` is mixed precision: f32 master weights,
    /// gradients, optimizer state and loss, products in bf16 (`Phi::with_matmul_dtype`).
    pub fn for_training(&self) -> Result<(DeviceArgs, Option<burn::tensor::FloatDType>)> {
        let matmul = match self.dtype() {
            WeightFormat::F32 => None,
            WeightFormat::Bf16 if self.backend == BackendName::Wgpu => {
                anyhow::bail!("wgpu has no bf16 arithmetic: train in f32 there")
            }
            WeightFormat::Bf16 => Some(burn::tensor::FloatDType::BF16),
            WeightFormat::F16 => anyhow::bail!(
                "training in f16 needs loss scaling, which phi-zoo does not do: use --dtype bf16 \
                 (mixed precision, f32 master weights) or f32"
            ),
            format @ (WeightFormat::Q8_0 | WeightFormat::Q4_0) => {
                anyhow::bail!("{format} weights are for inference: train in f32 or bf16")
            }
        };
        let run_on = DeviceArgs {
            dtype: Some(WeightFormat::F32),
            ..*self
        };
        Ok((run_on, matmul))
    }
}

/// LoRA instead of full fine-tuning: `--lora-rank` and its companions.
#[derive(clap::Args, Clone, Debug)]
pub struct LoraArgs {
    /// LoRA rank; absent: full fine-tuning.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (default 2 × rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// Projections LoRA adapts: any of q, k, v, dense, fc1, fc2 (comma-separated), or all.
    #[arg(long, default_value = "q,k,v,dense,fc1,fc2")]
    pub targets: String,
}

impl LoraArgs {
    /// The adapters' config; `None` for full fine-tuning.
    pub fn config(&self) -> Result<Option<phi_zoo::LoraConfig>> {
        Ok(match self.lora_rank {
            None => None,
            Some(0) => anyhow::bail!("--lora-rank must be at least 1"),
            Some(rank) => Some(phi_zoo::LoraConfig {
                rank,
                alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64),
                dropout: self.lora_dropout,
                targets: phi_zoo::LoraTarget::parse_list(&self.targets)
                    .map_err(anyhow::Error::msg)?,
            }),
        })
    }
}

/// A training run: its recipe, length, checkpoints and output.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// A recipe by name (phi-1, phi-1-finetune, phi-1.5, phi-1.5-web, phi-2, tiny,
    /// tiny-finetune) or a recipe file (TOML, as in `recipes/`).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Peak learning rate, instead of the recipe's.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer steps in all.
    #[arg(long)]
    pub steps: usize,
    /// Optimizer steps between checkpoints (an epoch); `--steps` must be a multiple.
    #[arg(long, default_value_t = 20)]
    pub checkpoint_every: usize,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch: usize,
    /// Micro-batches per optimizer step (default: what reaches the recipe's global batch).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Continue from the newest complete checkpoint in `--out` (from step 0 if there is none).
    #[arg(long)]
    pub resume: bool,
    /// Checkpoints, metric logs, the loss curve and the final model go here.
    #[arg(long)]
    pub out: PathBuf,
    /// Draw the loss curve with a logarithmic loss axis.
    #[arg(long)]
    pub log_scale: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl RunArgs {
    /// The run's sizes are positive and its epochs whole.
    pub fn check(&self) -> Result<()> {
        if self.steps == 0 || self.checkpoint_every == 0 || self.batch == 0 {
            anyhow::bail!("--steps, --checkpoint-every and --batch must be at least 1");
        }
        if self.grad_accum == Some(0) {
            anyhow::bail!("--grad-accum must be at least 1");
        }
        if !self.steps.is_multiple_of(self.checkpoint_every) {
            anyhow::bail!(
                "--steps must be a multiple of --checkpoint-every (checkpoints close epochs)"
            );
        }
        Ok(())
    }

    /// `--recipe` (else `default`), with `--lr`, fitted to `--steps`.
    pub fn recipe(&self, default: phi_zoo::NamedRecipe) -> Result<phi_zoo::Recipe> {
        let recipe = match &self.recipe {
            Some(name_or_path) => phi_zoo::recipe(name_or_path)?,
            None => default.recipe(),
        };
        let recipe = match self.lr {
            Some(lr) => recipe.with_peak(lr),
            None => recipe,
        };
        Ok(recipe.fitted_to(self.steps))
    }

    /// `--grad-accum`, else the recipe's global batch over `batch × seq_len × devices`.
    pub fn grad_accum(&self, recipe: &phi_zoo::Recipe, seq_len: usize, devices: usize) -> usize {
        self.grad_accum
            .unwrap_or_else(|| recipe.grad_accum(self.batch, seq_len, devices))
    }

    /// The run plan: epochs of `--checkpoint-every` steps, the two newest checkpoints kept.
    pub fn plan(&self, grad_accum: usize, valid_batches: usize) -> phi_zoo::training::RunPlan {
        phi_zoo::training::RunPlan {
            dir: self.out.clone(),
            batch: self.batch,
            grad_accum,
            steps_per_epoch: self.checkpoint_every,
            epochs: self.steps / self.checkpoint_every,
            keep: 2,
            valid_batches,
            resume_epoch: phi_zoo::training::resume_epoch(&self.out, self.resume),
            peak_flops: None,
        }
    }
}
