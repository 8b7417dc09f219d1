//! Text generation, one sequence at a time, with the KV cache: prefill the prompt once, then one
//! cached step per new token. Token choice is `TokenPicker`'s; stopping is EOS, the token budget,
//! the context length, or the caller's callback (how stop strings and streaming plug in).

use std::ops::ControlFlow;

use burn::prelude::*;

use crate::config::PhiConfig;
use crate::error::{PhiError, Result};
use crate::model::{LanguageModel, Options};
pub mod continuous;
pub mod sampling;
pub mod select;
pub mod streaming;
pub mod warm_up;

use crate::tokenizer::PhiTokenizer;
use sampling::{Sampling, TokenPicker};
use select::{Readback, RowPick, pick_tokens};
use streaming::TextStream;

/// What to generate and how.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Tokens to generate at most (the prompt not counted).
    pub max_new_tokens: usize,
    /// `None`: greedy decoding.
    pub sampling: Option<Sampling>,
    /// 1.0 is off.
    pub repetition_penalty: f32,
    /// Seed of the sampler's random numbers (runs with the same seed repeat exactly).
    pub seed: u64,
    /// Generation stops after any of these (the EOS id is kept in the output, as transformers does).
    pub eos_token_ids: Vec<u32>,
    /// Ids at or above this are never produced: the tokenizer's length, since Phi pads its
    /// vocabulary from 50295 to 51200 with untrained rows (ARCHITECTURE.md §4).
    pub vocab_limit: Option<usize>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: None,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_ids: Vec::new(),
            vocab_limit: None,
        }
    }
}

impl GenerationConfig {
    /// A token picker with these settings, checked; every row of a batch gets its own, seeded
    /// alike, so it draws what the row would draw alone.
    pub fn picker(&self) -> Result<TokenPicker> {
        let picker = TokenPicker::new(
            self.sampling.clone(),
            self.repetition_penalty,
            self.vocab_limit,
            self.seed,
        );
        picker.validate().map_err(PhiError::Input)?;
        Ok(picker)
    }

    /// Defaults for a model: EOS from its config, else `<|endoftext|>` from the tokenizer (Phi-1
    /// and Phi-1.5 configs say null, ARCHITECTURE.md §2); padded ids masked when a tokenizer tells the
    /// real vocabulary. Without either, generation runs to `max_new_tokens`.
    pub fn for_model(config: &PhiConfig, tokenizer: Option<&PhiTokenizer>) -> Self {
        let eos = config
            .eos_token_id
            .or_else(|| tokenizer.and_then(PhiTokenizer::eos_id));
        Self {
            eos_token_ids: eos.into_iter().collect(),
            vocab_limit: tokenizer.map(PhiTokenizer::len),
            ..Self::default()
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The context (`max_position_embeddings`) is full.
    ContextFull,
    /// The callback asked to stop.
    Callback,
    /// A stop string appeared in the text.
    StopString,
}

/// The new tokens and why generation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The generated token ids (the prompt not included; a stop token not included).
    pub ids: Vec<u32>,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// Generates a continuation of `prompt`. `on_token` sees each new id as soon as it is chosen and
/// may end generation by returning `ControlFlow::Break`.
pub fn generate<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    prompt: &[u32],
    config: &GenerationConfig,
    device: &B::Device,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generated> {
    let (phi, adapters) = (model.phi(), model.adapters());
    let mut picker = config.picker()?;
    let context = phi.config().max_position_embeddings;
    if prompt.is_empty() {
        return Err(PhiError::Input(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    if prompt.len() > context {
        return Err(PhiError::Input(format!(
            "the prompt has {} tokens but the model's context is {context}",
            prompt.len()
        )));
    }
    let capacity = (prompt.len() + config.max_new_tokens).min(context);
    let mut cache = phi.new_cache(1, capacity, device);
    let readback = Readback::for_backend::<B>();
    let mut history = prompt.to_vec();
    let mut ids = Vec::new();
    let mut input = phi.ids_tensor(&[prompt.to_vec()], device)?;
    let stop = loop {
        if ids.len() == config.max_new_tokens {
            break StopReason::MaxNewTokens;
        }
        let logits = phi.last_logits(input, Options::cached(&mut cache).with_adapters(adapters))?;
        let mut row = [RowPick {
            picker: &mut picker,
            history: &history,
            want_logits: false,
        }];
        let token = pick_tokens(logits, &mut row, readback)[0].token;
        ids.push(token);
        history.push(token);
        if on_token(token).is_break() {
            break StopReason::Callback;
        }
        if config.eos_token_ids.contains(&token) {
            break StopReason::Eos;
        }
        if cache.len() == context {
            break StopReason::ContextFull;
        }
        input = phi.ids_tensor(&[vec![token]], device)?;
    };
    Ok(Generated { ids, stop })
}

/// Fills the left padding of batched prompts. Any id works: padding is masked out of attention.
const PAD_ID: u32 = 0;

/// Generates continuations of several prompts of any lengths at once, left-padded into one batch.
/// Each row's result is `generate`'s for that prompt alone (the same ids for greedy decoding, the
/// same draws for a seed), except that all rows share the context: a row stops with
/// `ContextFull` when the longest prompt plus the tokens so far fill it.
pub fn generate_batch<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Vec<Generated>> {
    let seeds = vec![config.seed; prompts.len()];
    generate_batch_until(model, prompts, config, &seeds, device, |_, _| false)
}

/// `generate_batch` with a seed per row (samples of one prompt that differ), and `stop(row,
/// new_ids)` asked after each of a row's tokens: `true` ends that row (`StopReason::Callback`)
/// while the others go on; the batch ends when every row has.
pub fn generate_batch_until<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    seeds: &[u64],
    device: &B::Device,
    mut stop: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Generated>> {
    let (phi, adapters) = (model.phi(), model.adapters());
    let context = phi.config().max_position_embeddings;
    if seeds.len() != prompts.len() {
        return Err(PhiError::Input(format!(
            "{} seeds for {} prompts",
            seeds.len(),
            prompts.len()
        )));
    }
    let mut pickers = Vec::with_capacity(prompts.len());
    for (row, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(PhiError::Input(format!("prompt {row} is empty")));
        }
        if prompt.len() > context {
            return Err(PhiError::Input(format!(
                "prompt {row} has {} tokens but the model's context is {context}",
                prompt.len()
            )));
        }
        let picker = GenerationConfig {
            seed: seeds[row],
            ..config.clone()
        }
        .picker()?;
        pickers.push(picker);
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &pad)| {
            std::iter::repeat_n(PAD_ID, pad)
                .chain(p.iter().copied())
                .collect()
        })
        .collect();
    let mut cache = phi.new_padded_cache(
        &pads,
        (longest + config.max_new_tokens).min(context),
        device,
    );
    let readback = Readback::for_backend::<B>();
    let mut histories: Vec<Vec<u32>> = prompts.to_vec();
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut stops: Vec<Option<StopReason>> = vec![None; prompts.len()];
    let mut input = phi.ids_tensor(&padded, device)?;
    loop {
        for (out, stop) in outputs.iter().zip(stops.iter_mut()) {
            if stop.is_none() && out.len() == config.max_new_tokens {
                *stop = Some(StopReason::MaxNewTokens);
            }
        }
        if stops.iter().all(Option::is_some) {
            break;
        }
        let logits = phi.last_logits(input, Options::cached(&mut cache).with_adapters(adapters))?;
        // Rows that have stopped still run and pick (their pickers are done with, and the
        // batch keeps its shape); their picks are dropped.
        let mut rows: Vec<RowPick<'_>> = pickers
            .iter_mut()
            .zip(&histories)
            .map(|(picker, history)| RowPick {
                picker,
                history,
                want_logits: false,
            })
            .collect();
        let picked = pick_tokens(logits, &mut rows, readback);
        let mut next = vec![PAD_ID; prompts.len()];
        for (row, picked) in picked.into_iter().enumerate() {
            if stops[row].is_some() {
                continue;
            }
            let token = picked.token;
            histories[row].push(token);
            outputs[row].push(token);
            next[row] = token;
            if config.eos_token_ids.contains(&token) {
                stops[row] = Some(StopReason::Eos);
            } else if stop(row, &outputs[row]) {
                stops[row] = Some(StopReason::Callback);
            } else if cache.len() == context {
                stops[row] = Some(StopReason::ContextFull);
            }
        }
        let columns: Vec<Vec<u32>> = next.into_iter().map(|t| vec![t]).collect();
        input = phi.ids_tensor(&columns, device)?;
    }
    Ok(outputs
        .into_iter()
        .zip(stops)
        .map(|(ids, stop)| Generated {
            ids,
            stop: stop.expect("every row has stopped"),
        })
        .collect())
}

/// New tokens, their text (cut before a stop string), and why generation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedText {
    /// Every new token, including those that formed a stop string and a final EOS.
    pub ids: Vec<u32>,
    /// The generated text (a matched stop string and what follows it cut off).
    pub text: String,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// Generates from `prompt` ids and streams the text: `on_text` receives each piece as soon as it
/// is whole UTF-8 and cannot be part of a stop string. EOS is not shown as text.
pub fn generate_text<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    tokenizer: &PhiTokenizer,
    prompt: &[u32],
    config: &GenerationConfig,
    stop_strings: &[String],
    device: &B::Device,
    mut on_text: impl FnMut(&str),
) -> Result<GeneratedText> {
    let mut stream = TextStream::new(tokenizer, stop_strings.to_vec());
    let mut failure = None;
    let generated = generate(model, prompt, config, device, |token| {
        if config.eos_token_ids.contains(&token) {
            return ControlFlow::Continue(());
        }
        match stream.push(token) {
            Ok(step) => {
                on_text(&step.text);
                if step.stop {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let stop = match generated.stop {
        StopReason::Callback => StopReason::StopString,
        other => other,
    };
    on_text(&stream.finish()?);
    Ok(GeneratedText {
        ids: generated.ids,
        text: stream.text().to_owned(),
        stop,
    })
}
