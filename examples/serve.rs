//! Serve a Phi model behind OpenAI's API, batching concurrent requests.
//!
//! cargo run --release --example serve -- --model <DIR or hub id> --port 8000
//! curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
//!     -d '{"model": "phi-2", "prompt": "def fib(n):", "max_tokens": 32, "temperature": 0}'
//!
//! Endpoints: `POST /v1/completions` (text, texts or token-id prompts; sampling, `stop`, `seed`,
//! `n`, `echo`, `logprobs`, `stream`), `POST /v1/chat/completions` (phi-2's `Instruct: …\nOutput:`
//! format, or `--chat-template FILE`), `GET /v1/models`, `GET /health`, and lm-evaluation-harness'
//! tokenizer endpoints `GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`. With no
//! `--model` it serves what `examples/pretrain` wrote, or a freshly initialised tiny model.

mod cli;

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::Backend;
use clap::Parser;
use phi_zoo::backend::BackendJob;
use phi_zoo::serve::{ChatTemplate, ServeOptions, Server};
use phi_zoo::{Checkpoint, Phi, PhiTokenizer, Variant};

#[derive(Parser)]
#[command(
    about = "Serve a Phi model with OpenAI's API",
    mut_arg("model", |a| a.default_value("runs/pretrain/final").required(false)),
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Requests decoded together at most (lowered if their KV cache would not fit in memory).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Positions (prompt and completion) per request at most; default: the model's context.
    #[arg(long)]
    max_context: Option<usize>,
    /// Prompt tokens read per step while other requests decode (prompts are read in pieces of
    /// this many tokens).
    #[arg(long, default_value_t = 64)]
    prefill_chunk: usize,
    /// Requests that may wait for a free row; more are refused with 503.
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// Require `Authorization: Bearer KEY` (also read from PHI_ZOO_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// The model name clients send; default: the --model argument's last part.
    #[arg(long)]
    served_model_name: Option<String>,
    /// A chat format as JSON: {"system", "user", "assistant"} patterns with `{content}`, and
    /// "stop" strings. Default: phi-2's QA format.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    body_limit: usize,
    /// Print the address and serve for this many seconds, then stop (for scripts).
    #[arg(long)]
    serve_seconds: Option<u64>,
    #[command(flatten)]
    model: cli::ModelArgs,
    #[command(flatten)]
    device: cli::DeviceArgs,
}

struct Serve<'a> {
    args: &'a Args,
    checkpoint: Option<&'a Checkpoint>,
    tokenizer: PhiTokenizer,
    options: ServeOptions,
    name: String,
}

impl BackendJob for Serve<'_> {
    type Output = Result<()>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let device_args = self.args.device;
        let model = match self.checkpoint {
            Some(checkpoint) => {
                checkpoint.load_as::<B>(&device, device_args.weights_for(checkpoint))?
            }
            None => Phi::new_as(&Variant::Tiny.config(), &device, device_args.weights())?,
        };
        // The engine's batches run from one row to `max_batch`: those two sizes are warmed.
        let context = model.config().max_position_embeddings;
        let capacity = self.options.max_context.unwrap_or(context).min(context);
        cli::warm_up(&model, &[1, self.options.max_batch], capacity, &device)?;
        let server = Server::start(model, self.tokenizer, device, self.options)?;
        let settings = server.settings();
        // Scripts wait for this line and read the address from it.
        println!("listening on http://{}", server.addr());
        eprintln!(
            "serving {:?}: batches of up to {}, {} positions per request, prefill chunks of {}",
            self.name, settings.max_batch, settings.max_context, settings.prefill_chunk
        );
        match self.args.serve_seconds {
            Some(seconds) => {
                std::thread::sleep(std::time::Duration::from_secs(seconds));
                server.shutdown()?;
            }
            None => server.wait()?,
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let fresh = args.model.model == "runs/pretrain/final"
        && !std::path::Path::new(&args.model.model).exists();
    let checkpoint = if fresh {
        eprintln!(
            "no model at runs/pretrain/final (run examples/pretrain first): serving a freshly \
             initialised tiny model"
        );
        None
    } else {
        Some(args.model.open()?)
    };
    let tokenizer = match &checkpoint {
        Some(checkpoint) => args.model.text_tokenizer(checkpoint)?,
        None => PhiTokenizer::bundled(),
    };
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        let trimmed = args.model.model.trim_end_matches('/');
        trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
    });
    let chat_template = match &args.chat_template {
        Some(path) => ChatTemplate::from_file(path)?,
        None => ChatTemplate::default(),
    };
    let options = ServeOptions {
        host: args.host.clone(),
        port: args.port,
        max_batch: args.max_batch,
        max_context: args.max_context,
        prefill_chunk: args.prefill_chunk,
        max_queue: args.max_queue,
        api_key: args
            .api_key
            .clone()
            .or_else(|| std::env::var("PHI_ZOO_API_KEY").ok()),
        chat_template,
        body_limit: args.body_limit,
        ..ServeOptions::named(&name)
    };
    args.device
        .run(Serve {
            args: &args,
            checkpoint: checkpoint.as_ref(),
            tokenizer,
            options,
            name,
        })
        .context("serving")?
}
