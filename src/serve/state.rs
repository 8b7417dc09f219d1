//! What every handler shares: the way to the engine, the tokenizer, the served model's identity
//! and limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use phi_zoo_common::generation::continuous::Request;

use super::chat::ChatTemplate;
use super::engine::EngineStatus;
use super::error::ApiError;
use super::request::Plan;
use crate::{GenerationConfig, PhiTokenizer, TokenPicker};

pub(crate) struct AppState {
    pub jobs: Sender<Request>,
    pub tokenizer: PhiTokenizer,
    pub model_name: String,
    /// Positions per request (prompt and completion) at most.
    pub max_context: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub api_key: Option<String>,
    pub chat: ChatTemplate,
    pub status: Arc<Mutex<EngineStatus>>,
    /// Requests waiting for a row at most; more are refused with 503.
    pub max_queue: usize,
    /// Unix time the server started (`created` of the model).
    pub started: u64,
    next_id: AtomicU64,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        jobs: Sender<Request>,
        tokenizer: PhiTokenizer,
        model_name: String,
        max_context: usize,
        vocab_size: usize,
        eos_token_ids: Vec<u32>,
        api_key: Option<String>,
        chat: ChatTemplate,
        status: Arc<Mutex<EngineStatus>>,
        max_queue: usize,
    ) -> Self {
        Self {
            jobs,
            tokenizer,
            model_name,
            max_context,
            vocab_size,
            eos_token_ids,
            api_key,
            chat,
            status,
            max_queue,
            started: unix_now(),
            next_id: AtomicU64::new(0),
        }
    }

    /// The engine's last published status.
    pub fn status(&self) -> EngineStatus {
        self.status.lock().map(|s| *s).unwrap_or_default()
    }

    /// Hands a request to the engine, unless too many are waiting or the engine has stopped.
    pub fn submit(&self, request: Request) -> Result<(), ApiError> {
        let status = self.status();
        if status.queued >= self.max_queue {
            return Err(ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                format!(
                    "{} requests are already waiting: try again later",
                    status.queued
                ),
            ));
        }
        self.jobs.send(request).map_err(|_| {
            ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "engine_stopped",
                "the model's engine has stopped",
            )
        })
    }

    /// A fresh response id, `prefix-N`.
    pub fn response_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06}", self.started)
    }

    /// The token picker for choice `choice` of a request (seed `plan.seed + choice`), with the
    /// model's vocabulary limit, as `examples/generate` builds it.
    pub fn picker(&self, plan: &Plan, choice: usize) -> Result<TokenPicker, ApiError> {
        GenerationConfig {
            sampling: plan.sampling.clone(),
            repetition_penalty: plan.repetition_penalty,
            seed: plan.seed.wrapping_add(choice as u64),
            vocab_limit: Some(self.tokenizer.len().min(self.vocab_size)),
            ..GenerationConfig::default()
        }
        .picker()
        .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Checks that `prompt` and `max_tokens` new tokens fit the context.
    pub fn check_fits(&self, prompt: usize, max_tokens: usize) -> Result<(), ApiError> {
        if prompt == 0 {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        if prompt.saturating_add(max_tokens) > self.max_context {
            let (param, what) = if prompt >= self.max_context {
                ("prompt", "the prompt alone fills it")
            } else {
                ("max_tokens", "reduce max_tokens or the prompt")
            };
            return Err(ApiError::invalid(
                param,
                format!(
                    "the context holds {} tokens, but {prompt} prompt tokens and {max_tokens} \
                     new ones were asked: {what}",
                    self.max_context
                ),
            ));
        }
        Ok(())
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
