//! The HTTP surface: OpenAI's completion, chat and model endpoints, the tokenizer endpoints
//! lm-evaluation-harness uses (vLLM's shapes), health, and the refusals (auth, size, routes).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::future::join_all;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::choice::{ChoiceOut, ChoiceSpec, Piece, drive, submit};
use super::error::ApiError;
use super::request::{
    ChatRequest, CompletionRequest, GenerationFields, Plan, PromptInput, fields, parse_body,
};
use super::state::{AppState, unix_now};

/// The router over `state`, refusing bodies over `body_limit` bytes.
pub(crate) fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    let guarded = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::with_status(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such endpoint",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// `Authorization: Bearer KEY` when the server has a key.
async fn authorize(
    State(state): State<Arc<AppState>>,
    request: HttpRequest,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::with_status(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                if given.is_none() {
                    "no API key given: send `Authorization: Bearer KEY`"
                } else {
                    "the API key is wrong"
                },
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// The body's bytes, or OpenAI's error for one over the limit.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        ApiError::with_status(
            status,
            "invalid_request_error",
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "bad_body"
            },
            rejection.body_text(),
        )
    })
}

fn check_model(state: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(name) if name != &state.model_name => Err(ApiError {
            param: Some("model".into()),
            ..ApiError::with_status(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {name:?} does not exist here: this server serves {:?}",
                    state.model_name
                ),
            )
        }),
        _ => Ok(()),
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = state.status();
    let code = if status.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "status": if status.alive { "ok" } else { "stopped" }, "engine": status })),
    )
        .into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": state.started,
            "owned_by": "phi-zoo",
            "max_model_len": state.max_context,
        }],
    }))
}

async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let eos = crate::common::tokenizer::END_OF_TEXT;
    Json(json!({
        "tokenizer_class": "CodeGenTokenizer",
        "eos_token": eos,
        "bos_token": eos,
        "pad_token": null,
        "model_max_length": state.max_context,
        "vocab_size": state.tokenizer.len(),
    }))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    prompt: String,
    #[allow(dead_code)] // Phi's tokenizer adds no special tokens either way
    add_special_tokens: Option<bool>,
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: TokenizeRequest = fields(&parse_body(&body_bytes(body)?)?)?;
    let tokens = state
        .tokenizer
        .encode(&request.prompt)
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    Ok(Json(json!({
        "tokens": tokens,
        "count": tokens.len(),
        "max_model_len": state.max_context,
    })))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<i64>,
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: DetokenizeRequest = fields(&parse_body(&body_bytes(body)?)?)?;
    let ids = checked_ids(&state, &request.tokens, "tokens")?;
    let prompt = state
        .tokenizer
        .decode(&ids)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}

/// Token ids from a request, each inside the vocabulary.
fn checked_ids(state: &AppState, ids: &[i64], param: &str) -> Result<Vec<u32>, ApiError> {
    let ids: Vec<u32> = ids
        .iter()
        .map(|&id| u32::try_from(id).map_err(|_| outside_vocabulary(state, id, param)))
        .collect::<Result<_, _>>()?;
    check_vocabulary(state, &ids, param)?;
    Ok(ids)
}

/// Every id inside the model's vocabulary (a tokenizer larger than the model can produce others).
fn check_vocabulary(state: &AppState, ids: &[u32], param: &str) -> Result<(), ApiError> {
    match ids.iter().find(|&&id| id as usize >= state.vocab_size) {
        Some(&id) => Err(outside_vocabulary(state, i64::from(id), param)),
        None => Ok(()),
    }
}

fn outside_vocabulary(state: &AppState, id: i64, param: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!(
            "token id {id} is outside the vocabulary (size {})",
            state.vocab_size
        ),
    )
}

/// Each prompt as (ids, text).
fn prompts(state: &AppState, input: PromptInput) -> Result<Vec<(Vec<u32>, String)>, ApiError> {
    let encode = |text: String| -> Result<(Vec<u32>, String), ApiError> {
        let ids = state
            .tokenizer
            .encode(&text)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
        check_vocabulary(state, &ids, "prompt")?;
        Ok((ids, text))
    };
    let decode = |ids: Vec<i64>| -> Result<(Vec<u32>, String), ApiError> {
        let ids = checked_ids(state, &ids, "prompt")?;
        let text = state
            .tokenizer
            .decode(&ids)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
        Ok((ids, text))
    };
    let prompts: Vec<(Vec<u32>, String)> = match input {
        PromptInput::Text(text) => vec![encode(text)?],
        PromptInput::Texts(texts) => texts.into_iter().map(encode).collect::<Result<_, _>>()?,
        PromptInput::Ids(ids) => vec![decode(ids)?],
        PromptInput::IdLists(lists) => lists.into_iter().map(decode).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "no prompt given"));
    }
    if prompts.len() > super::request::MAX_CHOICES {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "at most {} prompts per request",
                super::request::MAX_CHOICES
            ),
        ));
    }
    Ok(prompts)
}

/// `max_tokens` when a completion request gives none (OpenAI's default); chat requests default
/// to what the context leaves.
const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// What both endpoints send once generation is planned.
struct Planned {
    specs: Vec<ChoiceSpec>,
    prompt_tokens: usize,
    plan: Plan,
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(&body_bytes(body)?)?;
    let generation: GenerationFields = fields(&body)?;
    let mut request: CompletionRequest = fields(&body)?;
    check_model(&state, &generation.model)?;
    request.check_unsupported()?;
    let plan = generation.plan()?;
    let logprobs = request.logprobs()?;
    let echo = request.echo.unwrap_or(false);
    let input = request
        .prompt
        .take()
        .ok_or_else(|| ApiError::invalid("prompt", "prompt is required"))?;
    let prompts = prompts(&state, input)?;
    let max_tokens = plan.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS);
    if prompts.len() * plan.n > super::request::MAX_CHOICES {
        return Err(ApiError::invalid(
            "n",
            format!(
                "{} prompts × n = {} is more than {} choices",
                prompts.len(),
                plan.n,
                super::request::MAX_CHOICES
            ),
        ));
    }
    let mut specs = Vec::new();
    for (p, (ids, text)) in prompts.iter().enumerate() {
        state.check_fits(ids.len(), max_tokens)?;
        for c in 0..plan.n {
            specs.push(ChoiceSpec {
                index: p * plan.n + c,
                prompt: ids.clone(),
                prompt_text: text.clone(),
                echo,
                logprobs,
                max_tokens,
                picker: state.picker(&plan, c)?,
                stop: plan.stop.clone(),
                ids_as_tokens: request.return_tokens_as_token_ids.unwrap_or(false),
            });
        }
    }
    let planned = Planned {
        prompt_tokens: prompts.iter().map(|p| p.0.len()).sum(),
        specs,
        plan,
    };
    respond(state, planned, Kind::Completion).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(&body_bytes(body)?)?;
    let mut generation: GenerationFields = fields(&body)?;
    let request: ChatRequest = fields(&body)?;
    check_model(&state, &generation.model)?;
    if request.logprobs == Some(true) {
        return Err(ApiError::invalid(
            "logprobs",
            "chat log-probabilities are not supported: use /v1/completions",
        ));
    }
    if generation.max_tokens.is_none() {
        generation.max_tokens = request.max_completion_tokens;
    }
    let mut plan = generation.plan()?;
    plan.stop.extend(state.chat.stop.iter().cloned());
    let text = state.chat.render(&request.messages)?;
    let ids = state
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let max_tokens = plan
        .max_tokens
        .unwrap_or(state.max_context.saturating_sub(ids.len()));
    state.check_fits(ids.len(), max_tokens)?;
    let mut specs = Vec::new();
    for c in 0..plan.n {
        specs.push(ChoiceSpec {
            index: c,
            prompt: ids.clone(),
            prompt_text: text.clone(),
            echo: false,
            logprobs: None,
            max_tokens,
            picker: state.picker(&plan, c)?,
            stop: plan.stop.clone(),
            ids_as_tokens: false,
        });
    }
    let planned = Planned {
        prompt_tokens: ids.len(),
        specs,
        plan,
    };
    respond(state, planned, Kind::Chat).await
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
        }
    }

    /// The response's `object`, whole or as a streamed chunk.
    fn object(self, streamed: bool) -> &'static str {
        match (self, streamed) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }
}

/// What every response and streamed chunk of one request carries around its choices.
#[derive(Clone)]
struct Envelope {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
}

impl Envelope {
    fn with(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        body
    }

    /// One chunk of a stream: `choice` alone.
    fn chunk(&self, choice: Value) -> SseEvent {
        SseEvent::default().data(self.with(json!([choice]), None).to_string())
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

async fn respond(state: Arc<AppState>, planned: Planned, kind: Kind) -> Result<Response, ApiError> {
    let mut receivers = Vec::with_capacity(planned.specs.len());
    for spec in &planned.specs {
        receivers.push(submit(&state, spec)?);
    }
    let envelope = Envelope {
        id: state.response_id(kind.id_prefix()),
        object: kind.object(planned.plan.stream),
        created: unix_now(),
        model: state.model_name.clone(),
    };
    if planned.plan.stream {
        return Ok(stream_response(state, planned, receivers, kind, envelope).into_response());
    }
    let outs = join_all(
        planned
            .specs
            .iter()
            .zip(receivers)
            .map(|(spec, events)| drive(&state, spec, events, |_| true)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<ChoiceOut>, ApiError>>()?;
    let completion_tokens = outs.iter().map(|o| o.completion_tokens).sum();
    let choices: Vec<Value> = outs
        .into_iter()
        .map(|o| match kind {
            Kind::Completion => json!({
                "index": o.index,
                "text": o.text,
                "logprobs": o.logprobs,
                "finish_reason": o.finish_reason,
            }),
            Kind::Chat => json!({
                "index": o.index,
                "message": { "role": "assistant", "content": o.text },
                "logprobs": null,
                "finish_reason": o.finish_reason,
            }),
        })
        .collect();
    let usage = usage(planned.prompt_tokens, completion_tokens);
    Ok(Json(envelope.with(Value::from(choices), Some(usage))).into_response())
}

/// Server-sent events: a chunk per piece of each choice (choices interleave), a last chunk per
/// choice with its finish reason, the usage when asked, then `data: [DONE]`. A client that goes
/// away drops the stream, which drops every choice's receiver.
fn stream_response(
    state: Arc<AppState>,
    planned: Planned,
    receivers: Vec<
        tokio::sync::mpsc::UnboundedReceiver<phi_zoo_common::generation::continuous::Event>,
    >,
    kind: Kind,
    envelope: Envelope,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (chunks, received) = unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let Planned {
            specs,
            prompt_tokens,
            plan,
        } = planned;
        let drives = specs.iter().zip(receivers).map(|(spec, events)| {
            let chunks = chunks.clone();
            let (index, state, envelope) = (spec.index, &state, &envelope);
            async move {
                if kind == Kind::Chat {
                    let first = json!({"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null});
                    if chunks.send(envelope.chunk(first)).is_err() {
                        return None;
                    }
                }
                let sent = |piece: &Piece| -> bool {
                    if piece.text.is_empty() && piece.logprobs.is_none() {
                        return true;
                    }
                    let body = match kind {
                        Kind::Completion => json!({"index": index, "text": piece.text, "logprobs": piece.logprobs, "finish_reason": null}),
                        Kind::Chat => json!({"index": index, "delta": {"content": piece.text}, "finish_reason": null}),
                    };
                    chunks.send(envelope.chunk(body)).is_ok()
                };
                let out = drive(state, spec, events, sent).await;
                finish_chunk(&chunks, envelope, kind, index, out)
            }
        });
        let done = join_all(drives).await;
        if done.iter().any(Option::is_none) {
            return; // the client is gone
        }
        if plan.include_usage {
            let completion_tokens: usize = done.iter().flatten().sum();
            let usage = usage(prompt_tokens, completion_tokens);
            let last = envelope.with(json!([]), Some(usage));
            let _ = chunks.send(SseEvent::default().data(last.to_string()));
        }
        let _ = chunks.send(SseEvent::default().data("[DONE]"));
    });
    let events = stream::unfold(received, |mut received| async move {
        received.recv().await.map(|e| (Ok(e), received))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Sends a choice's last chunk (its finish reason, or its error object); its completion tokens,
/// `None` when the client is gone.
fn finish_chunk(
    chunks: &UnboundedSender<SseEvent>,
    envelope: &Envelope,
    kind: Kind,
    index: usize,
    out: Result<ChoiceOut, ApiError>,
) -> Option<usize> {
    match out {
        Ok(out) => {
            let body = match kind {
                Kind::Completion => {
                    json!({"index": index, "text": "", "logprobs": null, "finish_reason": out.finish_reason})
                }
                Kind::Chat => {
                    json!({"index": index, "delta": {}, "finish_reason": out.finish_reason})
                }
            };
            chunks.send(envelope.chunk(body)).ok()?;
            Some(out.completion_tokens)
        }
        Err(error) => {
            chunks
                .send(SseEvent::default().data(error.body().to_string()))
                .ok()?;
            Some(0)
        }
    }
}
