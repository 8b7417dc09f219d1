//! The request bodies of OpenAI's completion and chat endpoints, read strictly: a body that is not
//! JSON, a field of the wrong type or a value out of range becomes an `ApiError` naming the field.
//! Unknown fields are ignored, as OpenAI's server ignores them.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::Sampling;

/// The most completions one request may ask for (`n`), and the most alternatives per token.
pub const MAX_CHOICES: usize = 32;
/// The most alternatives per token (`logprobs`, `top_logprobs`).
pub const MAX_LOGPROBS: usize = 20;
/// The most stop strings, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 256;

/// Parses a JSON body: a syntax error, or anything but an object, is a 400.
pub fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// Reads `T`'s fields from a parsed body; a field of the wrong type is a 400 naming it. Several
/// types may read one body (each ignores the others' fields).
pub fn fields<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let message = e.inner().to_string();
        // A missing field is reported at its parent; the message names it.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let path = match (e.path().to_string(), missing) {
            (path, Some(field)) if path == "." => field.to_string(),
            (path, Some(field)) => format!("{path}.{field}"),
            (path, None) => path,
        };
        ApiError::invalid(path.clone(), format!("{path}: {message}"))
    })
}

/// `prompt`: text, texts, token ids, or lists of token ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text.
    Text(String),
    /// Several texts, one completion each.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<i64>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<i64>>),
}

/// `stop`: one string or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    pub include_usage: Option<bool>,
}

/// The generation settings both endpoints share (read from the same body as the endpoint's own).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationFields {
    /// The served model's name.
    pub model: Option<String>,
    /// New tokens at most.
    pub max_tokens: Option<i64>,
    /// 0 is greedy; OpenAI's default is 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling's mass.
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (-1 or 0: off), as vLLM and llama.cpp take it.
    pub top_k: Option<i64>,
    /// Drop tokens below this fraction of the most likely one's probability.
    pub min_p: Option<f64>,
    /// CTRL's repetition penalty (1 is off).
    pub repetition_penalty: Option<f64>,
    /// Not supported: must be 0 when given.
    pub frequency_penalty: Option<f64>,
    /// Not supported: must be 0 when given.
    pub presence_penalty: Option<f64>,
    /// Stop strings (not included in the text).
    pub stop: Option<StopInput>,
    /// The sampler's seed (choice `i` of a request uses `seed + i`).
    pub seed: Option<i64>,
    /// Completions per prompt.
    pub n: Option<i64>,
    /// Server-sent events instead of one response.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Not supported: must be absent or empty.
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Option<PromptInput>,
    /// Return the prompt before the completion (with its log-probabilities when asked).
    pub echo: Option<bool>,
    /// Log-probabilities with this many alternatives per token.
    pub logprobs: Option<i64>,
    /// Not supported: must be absent or 1.
    pub best_of: Option<i64>,
    /// Not supported: must be absent.
    pub suffix: Option<String>,
    /// vLLM's extension: name tokens in `logprobs` as `token_id:N` instead of their text.
    pub return_tokens_as_token_ids: Option<bool>,
}

/// One chat message.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text (a string, or OpenAI's list of `{"type": "text", "text"}` parts).
    pub content: ChatContent,
}

/// A message's content.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    /// Plain text.
    Text(String),
    /// Parts; only text parts are accepted.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// Must be `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Not supported: must be absent or false.
    pub logprobs: Option<bool>,
}

/// Validated generation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// New tokens at most (`None`: what the context leaves, decided per prompt).
    pub max_tokens: Option<usize>,
    /// `None`: greedy.
    pub sampling: Option<Sampling>,
    /// 1.0 is off.
    pub repetition_penalty: f32,
    /// The first choice's seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Completions per prompt.
    pub n: usize,
    /// Stream the result.
    pub stream: bool,
    /// Send the usage as a last streamed chunk.
    pub include_usage: bool,
}

impl GenerationFields {
    /// Checks every field.
    pub fn plan(&self) -> Result<Plan, ApiError> {
        let max_tokens = match self.max_tokens {
            None => None,
            Some(m) if m < 0 => {
                return Err(ApiError::invalid("max_tokens", "max_tokens must be >= 0"));
            }
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {temperature} must be in [0, 2]"),
            ));
        }
        let top_p = match self.top_p {
            Some(p) if !(p > 0.0 && p <= 1.0) => {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("top_p {p} must be in (0, 1]"),
                ));
            }
            Some(p) if p < 1.0 => Some(p as f32),
            _ => None,
        };
        let top_k = match self.top_k {
            Some(k) if k < -1 => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("top_k {k} must be >= 1, or -1 or 0 for no limit"),
                ));
            }
            Some(k) if k >= 1 => Some(k as usize),
            _ => None,
        };
        let min_p = match self.min_p {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                return Err(ApiError::invalid(
                    "min_p",
                    format!("min_p {p} must be in [0, 1]"),
                ));
            }
            Some(p) if p > 0.0 => Some(p as f32),
            _ => None,
        };
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("repetition_penalty {repetition_penalty} must be in (0, 10]"),
            ));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} is not supported (use repetition_penalty)"),
                ));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::invalid(
                "logit_bias",
                "logit_bias is not supported",
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                "stop",
                format!("at most {MAX_STOPS} stop strings of at most {MAX_STOP_BYTES} bytes"),
            ));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES as i64).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("n {n} must be between 1 and {MAX_CHOICES}"),
            ));
        }
        let seed = self.seed.map_or_else(fresh_seed, |s| s as u64);
        Ok(Plan {
            max_tokens,
            sampling: (temperature > 0.0).then_some(Sampling {
                temperature: temperature as f32,
                top_k,
                top_p,
                min_p,
            }),
            repetition_penalty: repetition_penalty as f32,
            seed,
            stop,
            n: n as usize,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

impl CompletionRequest {
    /// `logprobs` checked: alternatives per token, `None` when not asked.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            None => Ok(None),
            Some(k) if (0..=MAX_LOGPROBS as i64).contains(&k) => Ok(Some(k as usize)),
            Some(k) => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs {k} must be between 0 and {MAX_LOGPROBS}"),
            )),
        }
    }

    /// Refuses the options this server does not implement.
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid("best_of", "best_of is not supported"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid("suffix", "suffix is not supported"));
        }
        Ok(())
    }
}

/// A seed for requests that give none: different every time.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
