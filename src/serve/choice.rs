//! One completion choice, from submission to text: the engine's token events become text through
//! a `TextStream` (stop strings cut, UTF-8 kept whole) and OpenAI's `logprobs` object (`tokens`,
//! `token_logprobs`, `top_logprobs`, `text_offset`), piece by piece for streams.

use phi_zoo_common::generation::continuous::{Event, Finish, Request, TokenLogprobs};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::engine::ChannelSink;
use super::error::ApiError;
use super::state::AppState;
use crate::{PhiTokenizer, TextStream, TokenPicker};

/// What to generate for one choice.
pub(crate) struct ChoiceSpec {
    /// The choice's index in the response.
    pub index: usize,
    pub prompt: Vec<u32>,
    /// The prompt's text, sent first when `echo`.
    pub prompt_text: String,
    pub echo: bool,
    /// Alternatives per token, when log-probabilities are asked.
    pub logprobs: Option<usize>,
    pub max_tokens: usize,
    pub picker: TokenPicker,
    pub stop: Vec<String>,
    /// Tokens in `logprobs` as `token_id:N` rather than text.
    pub ids_as_tokens: bool,
}

/// OpenAI's completion `logprobs` object (for a whole choice, or one streamed piece).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Logprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f64>>,
    pub top_logprobs: Vec<Option<Map<String, Value>>>,
    pub text_offset: Vec<usize>,
}

impl Logprobs {
    fn append(&mut self, other: Logprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }
}

/// A piece of a choice as it is produced.
#[derive(Debug, Default)]
pub(crate) struct Piece {
    pub text: String,
    pub logprobs: Option<Logprobs>,
}

/// A finished choice.
#[derive(Debug)]
pub(crate) struct ChoiceOut {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<Logprobs>,
    /// `stop` (EOS or a stop string) or `length`.
    pub finish_reason: &'static str,
    pub completion_tokens: usize,
}

/// Queues the choice with the engine; its events arrive on the returned channel.
pub(crate) fn submit(
    state: &AppState,
    spec: &ChoiceSpec,
) -> Result<UnboundedReceiver<Event>, ApiError> {
    let (events, received) = unbounded_channel();
    let request = Request {
        prompt: spec.prompt.clone(),
        max_new_tokens: spec.max_tokens,
        picker: spec.picker.clone(),
        eos_token_ids: state.eos_token_ids.clone(),
        logprobs: spec.logprobs,
        prompt_logprobs: spec.logprobs.filter(|_| spec.echo),
        sink: Box::new(ChannelSink(events)),
    };
    state.submit(request)?;
    Ok(received)
}

/// Turns a choice's events into text and log-probabilities, handing each piece to `on_piece`
/// (which returns `false` when its reader is gone; the choice is then abandoned). Dropping the
/// events' receiver on return is what frees the engine's row early (stop strings, hang-ups).
pub(crate) async fn drive(
    state: &AppState,
    spec: &ChoiceSpec,
    mut events: UnboundedReceiver<Event>,
    mut on_piece: impl FnMut(&Piece) -> bool,
) -> Result<ChoiceOut, ApiError> {
    let mut out = ChoiceOut {
        index: spec.index,
        text: String::new(),
        logprobs: spec.logprobs.map(|_| Logprobs::default()),
        finish_reason: "length",
        completion_tokens: 0,
    };
    // Offsets count characters of the returned text; without echo the text follows the prompt.
    let mut offset = if spec.echo {
        0
    } else {
        spec.prompt_text.chars().count()
    };
    let tokenizer = &state.tokenizer;
    let mut stream = TextStream::new(tokenizer, spec.stop.clone());
    if spec.echo && spec.logprobs.is_none() {
        let piece = Piece {
            text: spec.prompt_text.clone(),
            logprobs: None,
        };
        if !emit(&mut out, piece, &mut on_piece) {
            return Ok(out);
        }
    }
    while let Some(event) = events.recv().await {
        match event {
            Event::PromptLogprobs(entries) => {
                let mut lp = Logprobs::default();
                for (&id, entry) in spec.prompt.iter().zip(&entries) {
                    push_token(tokenizer, spec, &mut lp, &mut offset, id, entry.as_ref())?;
                }
                let piece = Piece {
                    text: spec.prompt_text.clone(),
                    logprobs: Some(lp),
                };
                if !emit(&mut out, piece, &mut on_piece) {
                    return Ok(out);
                }
            }
            Event::Token { id, logprobs } => {
                out.completion_tokens += 1;
                if state.eos_token_ids.contains(&id) {
                    continue; // no text; `Finished` follows
                }
                let step = stream
                    .push(id)
                    .map_err(|e| ApiError::server(e.to_string()))?;
                let mut piece = Piece {
                    text: step.text,
                    logprobs: None,
                };
                if spec.logprobs.is_some() {
                    let mut lp = Logprobs::default();
                    push_token(tokenizer, spec, &mut lp, &mut offset, id, logprobs.as_ref())?;
                    piece.logprobs = Some(lp);
                }
                if !emit(&mut out, piece, &mut on_piece) {
                    return Ok(out);
                }
                if step.stop {
                    out.finish_reason = "stop";
                    return Ok(out);
                }
            }
            Event::Finished(finish) => {
                let rest = stream
                    .finish()
                    .map_err(|e| ApiError::server(e.to_string()))?;
                out.finish_reason = match finish {
                    Finish::Eos => "stop",
                    Finish::Length => "length",
                };
                if !rest.is_empty() {
                    emit(
                        &mut out,
                        Piece {
                            text: rest,
                            logprobs: None,
                        },
                        &mut on_piece,
                    );
                }
                return Ok(out);
            }
            Event::Failed(message) => return Err(ApiError::server(message)),
        }
    }
    Err(ApiError::server(
        "the engine stopped before the request finished",
    ))
}

/// Hands a piece on, then records it in the choice.
fn emit(out: &mut ChoiceOut, piece: Piece, on_piece: &mut impl FnMut(&Piece) -> bool) -> bool {
    let delivered = on_piece(&piece);
    out.text.push_str(&piece.text);
    if let (Some(all), Some(lp)) = (&mut out.logprobs, piece.logprobs) {
        all.append(lp);
    }
    delivered
}

/// One token's entry: its text, log-probability, alternatives (keyed by their text; of two
/// alternatives with one text the likelier is kept) and offset.
fn push_token(
    tokenizer: &PhiTokenizer,
    spec: &ChoiceSpec,
    lp: &mut Logprobs,
    offset: &mut usize,
    id: u32,
    entry: Option<&TokenLogprobs>,
) -> Result<(), ApiError> {
    let text = token_text(tokenizer, id)?;
    lp.text_offset.push(*offset);
    *offset += text.chars().count();
    let name = |id: u32, text: String| {
        if spec.ids_as_tokens {
            format!("token_id:{id}")
        } else {
            text
        }
    };
    lp.tokens.push(name(id, text));
    // f64 in both places, so the token's value and its top entry print as one number.
    lp.token_logprobs.push(entry.map(|e| f64::from(e.logprob)));
    let top = match entry {
        None => None,
        Some(e) => {
            let mut map = Map::new();
            for &(alt, value) in &e.top {
                let key = name(alt, token_text(tokenizer, alt)?);
                if !map.contains_key(&key) {
                    map.insert(key, Value::from(f64::from(value)));
                }
            }
            Some(map)
        }
    };
    lp.top_logprobs.push(top);
    Ok(())
}

/// A token's text; ids past the tokenizer's (Phi pads its vocabulary with untrained rows, which
/// can still rank among the alternatives) are named `token_id:N`.
fn token_text(tokenizer: &PhiTokenizer, id: u32) -> Result<String, ApiError> {
    if id as usize >= tokenizer.len() {
        return Ok(format!("token_id:{id}"));
    }
    tokenizer
        .decode(&[id])
        .map_err(|e| ApiError::server(format!("decoding token {id}: {e}")))
}
