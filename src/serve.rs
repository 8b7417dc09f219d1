//! An OpenAI-compatible server (feature `serve`): `/v1/completions`, `/v1/chat/completions`,
//! `/v1/models`, `/health`, and the tokenizer endpoints lm-evaluation-harness uses.
//!
//! One engine thread owns the model and batches every request's decode steps together
//! (`generation::continuous`); axum on tokio serves HTTP and streams tokens as server-sent events.
//!
//! ```no_run
//! use phi_zoo::serve::{ServeOptions, Server};
//! use phi_zoo::{Checkpoint, PhiTokenizer, backend::Cpu};
//!
//! let checkpoint = Checkpoint::open("path/to/phi-2")?;
//! let device = Default::default();
//! let model = checkpoint.load::<Cpu>(&device)?;
//! let tokenizer = PhiTokenizer::bundled();
//! let server = Server::start(model, tokenizer, device, ServeOptions::named("phi-2"))?;
//! println!("listening on {}", server.addr());
//! server.wait()?;
//! # Ok::<(), phi_zoo::PhiError>(())
//! ```

mod chat;
mod choice;
mod engine;
mod error;
mod request;
mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::prelude::Backend;
use phi_zoo_common::generation::continuous::BatchSettings;

pub use chat::ChatTemplate;
pub use engine::EngineStatus;
pub use error::ApiError;

use crate::{GenerationConfig, Phi, PhiError, PhiTokenizer, Result};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub host: String,
    /// Port (0: any free one; `Server::addr` tells which).
    pub port: u16,
    /// Requests decoded together at most.
    pub max_batch: usize,
    /// Positions (prompt and completion) per request at most (`None`: the model's context).
    pub max_context: Option<usize>,
    /// Prompt tokens per prefill step, and the pieces prompts are read in: the longest a running
    /// stream waits for a new prompt.
    pub prefill_chunk: usize,
    /// Requests waiting for a row at most; more get 503.
    pub max_queue: usize,
    /// Clients must send `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// The name clients give as `model`.
    pub model_name: String,
    /// How chat messages become a prompt.
    pub chat_template: ChatTemplate,
    /// Request bodies larger than this are refused (413).
    pub body_limit: usize,
    /// Bytes the KV cache may take at most (`None`: half the memory available at start).
    pub cache_memory: Option<u64>,
}

impl ServeOptions {
    /// Defaults for a model served under `name`: 127.0.0.1:8000, batches of 16, the model's
    /// context, 64-token prefill chunks, phi-2's QA chat format, 8 MiB bodies.
    pub fn named(name: &str) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            max_batch: 16,
            max_context: None,
            prefill_chunk: 64,
            max_queue: 1024,
            api_key: None,
            model_name: name.into(),
            chat_template: ChatTemplate::default(),
            body_limit: 8 << 20,
            cache_memory: None,
        }
    }
}

/// A running server: HTTP on a tokio runtime thread, the model on an engine thread.
pub struct Server {
    addr: SocketAddr,
    settings: BatchSettings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<Result<()>>>,
    engine: Option<JoinHandle<Result<()>>>,
}

impl Server {
    /// Binds the address and starts serving `model` (moved to the engine thread) with `tokenizer`.
    pub fn start<B: Backend>(
        model: Phi<B>,
        tokenizer: PhiTokenizer,
        device: B::Device,
        options: ServeOptions,
    ) -> Result<Self> {
        let config = model.config().clone();
        let max_context = options
            .max_context
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let settings = BatchSettings {
            max_batch: options.max_batch.min(max_batch_for_memory(
                &model,
                max_context,
                options.cache_memory,
            )),
            max_context,
            prefill_chunk: options.prefill_chunk,
        };
        // Checked here too, so a bad setting fails the start and not the engine thread.
        settings.check().map_err(|e| {
            let memory = settings.max_batch == 0 && options.max_batch > 0;
            PhiError::Input(format!(
                "cannot serve: {e}{}",
                if memory {
                    " (not one row's KV cache fits in the memory allowed)"
                } else {
                    ""
                }
            ))
        })?;
        let listener =
            std::net::TcpListener::bind((options.host.as_str(), options.port)).map_err(|e| {
                PhiError::Input(format!(
                    "cannot listen on {}:{}: {e}",
                    options.host, options.port
                ))
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| PhiError::Input(format!("listener: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PhiError::Input(format!("listener: {e}")))?;

        let (jobs, job_queue) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(EngineStatus::default()));
        let generation = GenerationConfig::for_model(&config, Some(&tokenizer));
        let state = Arc::new(state::AppState::new(
            jobs,
            tokenizer,
            options.model_name.clone(),
            max_context,
            config.vocab_size,
            generation.eos_token_ids,
            options.api_key.clone(),
            options.chat_template.clone(),
            status.clone(),
            options.max_queue,
        ));
        let engine = std::thread::Builder::new()
            .name("phi-zoo-engine".into())
            .spawn(move || engine::run(&model, settings, &device, job_queue, status))
            .map_err(|e| PhiError::Input(format!("engine thread: {e}")))?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let router = routes::router(state, options.body_limit);
        let http = std::thread::Builder::new()
            .name("phi-zoo-http".into())
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| PhiError::Input(format!("tokio runtime: {e}")))?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| PhiError::Input(format!("listener: {e}")))?;
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.await;
                        })
                        .await
                        .map_err(|e| PhiError::Input(format!("server: {e}")))
                })
            })
            .map_err(|e| PhiError::Input(format!("http thread: {e}")))?;
        Ok(Self {
            addr,
            settings,
            shutdown: Some(shutdown),
            http: Some(http),
            engine: Some(engine),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The batch limits in force (`max_batch` lowered when the cache would not fit in memory).
    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    /// Serves until the process is interrupted (or the server fails).
    pub fn wait(mut self) -> Result<()> {
        let http = self.http.take().expect("a started server has its thread");
        join(http)
    }

    /// Stops accepting, lets open requests finish, and stops the engine.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(http) = self.http.take() {
            join(http)?;
        }
        if let Some(engine) = self.engine.take() {
            join(engine)?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn join(thread: JoinHandle<Result<()>>) -> Result<()> {
    thread
        .join()
        .map_err(|_| PhiError::Input("a server thread panicked".into()))?
}

/// The most rows whose KV cache (`max_context` positions each) fits in `budget` bytes (default:
/// half the memory available now).
fn max_batch_for_memory<B: Backend>(
    model: &Phi<B>,
    max_context: usize,
    budget: Option<u64>,
) -> usize {
    let config = model.config();
    let element = model.lm_head.weight.val().dtype().size() as u64;
    let per_position = 2
        * config.num_hidden_layers as u64
        * config.num_key_value_heads as u64
        * config.head_dim() as u64
        * element;
    let per_row = per_position * max_context as u64;
    let budget = budget
        .or_else(|| crate::memory::available_bytes().map(|b| b / 2))
        .unwrap_or(u64::MAX);
    usize::try_from(budget / per_row.max(1)).unwrap_or(usize::MAX)
}
