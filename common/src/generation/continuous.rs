//! Continuous batching: requests join and leave one running decode batch between steps, as a
//! server needs when clients come and go.
//!
//! Every step does at most two things: up to `prefill_chunk` tokens of waiting prompts' prefill
//! (each prompt in a one-row cache of its own, read in pieces of `prefill_chunk` tokens counted
//! from its start; a long prompt takes several steps, short ones share one), and one decode
//! step for every running row (one token each, in one batched forward pass). A prompt whose
//! prefill completes joins the batch: its cached keys and values are copied into a free row of
//! the batch cache, right-aligned with the others' (left padding before it, as `generate_batch`
//! pads), so from then on it decodes in step with them. A row that finishes, or whose client is
//! gone, leaves at the next step; its slot is reused.
//!
//! The batch cache grows by doubling, in rows up to `max_batch` and in slots up to `max_context`;
//! when its slots run out it reclaims the padding every row shares (`KvCache::shift`).
//!
//! A request's tokens do not depend on what else runs, or when: its prompt is cut into the same
//! pieces whatever the timing (a piece is never split to fill a step's budget, which would make
//! the cut depend on which prompts happened to wait together), decoding a row is the same
//! arithmetic in any batch of up to 8 rows (padding is masked out, and on the CPU the few-row
//! projection computes each row alone; from 9 rows the faster blocked product rounds by row
//! count), and each request has its own picker and seed. So with `max_batch` at most 8 a sampled
//! request gives the same text under any load, bit for bit. It is also `generate`'s
//! result for the prompt alone (the same picker, seed and stopping rules) when the prompt fits
//! one piece; a longer prompt, which `generate` reads at once, may round differently in the last
//! bits, which greedy decoding does not see unless two logits tie that closely.

use std::collections::VecDeque;
use std::time::Instant;

use burn::prelude::*;

use crate::error::{PhiError, Result};
use crate::model::{KvCache, LanguageModel, Options};

use super::sampling::TokenPicker;
use super::select::{Picked, Readback, RowPick, pick_tokens};

/// Log-probabilities at one position: the token's own, and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// log p(token | everything before it), under the model's distribution (before sampling's
    /// penalties and temperature).
    pub logprob: f32,
    /// The `top` most likely tokens and their log-probabilities, most likely first (the same
    /// floats as `logprob` where the token is among them).
    pub top: Vec<(u32, f32)>,
}

/// Why a request's generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-sequence token (the last token sent).
    Eos,
    /// `max_new_tokens` were generated, or the context is full.
    Length,
}

/// What a request receives, in order: its prompt's log-probabilities (when asked), each new
/// token, then exactly one `Finished` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One entry per prompt token; the first is `None` (nothing predicts it).
    PromptLogprobs(Vec<Option<TokenLogprobs>>),
    /// A new token, with its log-probabilities when asked.
    Token {
        /// The token id.
        id: u32,
        /// Its log-probabilities (`Request::logprobs`).
        logprobs: Option<TokenLogprobs>,
    },
    /// Generation ended normally.
    Finished(Finish),
    /// The request failed; the message says why.
    Failed(String),
}

/// Where a request's events go: a channel to its client, usually.
pub trait EventSink: Send {
    /// Delivers an event; `false` when the receiver is gone (the request is then dropped).
    fn send(&mut self, event: Event) -> bool;
    /// Whether the receiver is gone, asked between steps so an abandoned request frees its row.
    fn is_closed(&self) -> bool;
}

/// One generation to run.
pub struct Request {
    /// The prompt's token ids (at least one).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// Greedy or sampling, seeded (see `GenerationConfig::picker`).
    pub picker: TokenPicker,
    /// Generation stops after any of these (sent as the last token).
    pub eos_token_ids: Vec<u32>,
    /// Log-probabilities of each new token with this many alternatives (`None`: none).
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt's tokens with this many alternatives (`None`: none).
    pub prompt_logprobs: Option<usize>,
    /// Where its events go.
    pub sink: Box<dyn EventSink>,
}

/// The batcher's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// Rows decoded together at most; more requests wait.
    pub max_batch: usize,
    /// Positions (prompt and generated) per request at most; also the cache's slots per row.
    pub max_context: usize,
    /// Prompt tokens read per step (over one or several waiting prompts), and the length of
    /// the pieces prompts are read in: how long a running stream waits for joining prompts at
    /// most.
    pub prefill_chunk: usize,
}

/// Counts of what the batcher has done to its cache, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct BatchStats {
    /// Decode steps run (one token for every running row each).
    pub decode_steps: usize,
    /// Rows decoded, summed over steps.
    pub rows_decoded: usize,
    /// Prefills that joined the batch.
    pub joins: usize,
    /// Times the batch's rows moved later to line up with a longer joining prompt.
    pub realignments: usize,
    /// Times the shared padding was reclaimed because the slots ran out.
    pub compactions: usize,
    /// Times the cache was reallocated larger.
    pub growths: usize,
    /// Prompt tokens read.
    pub prefill_tokens: usize,
    /// Seconds spent reading prompts.
    pub prefill_seconds: f64,
    /// Seconds spent in decode steps (cache moves included).
    pub decode_seconds: f64,
}

/// The last position's logits of a prompt: on the host when the prompt's log-probabilities
/// were read with them, else still on the device.
enum Last<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 2>),
}

/// A request whose prompt is being read into its own cache.
struct Prefill<B: Backend> {
    request: Request,
    cache: KvCache<B>,
    done: usize,
    prompt_logprobs: Vec<Option<TokenLogprobs>>,
}

/// A request in the decode batch; row `i` of `Batcher::rows` is row `i` of the batch cache.
struct Row {
    request: Request,
    /// The prompt and every token so far (the repetition penalty's history).
    history: Vec<u32>,
    generated: usize,
    /// The last token picked, fed at the next step.
    next: u32,
}

/// Runs requests as they come, batching their decode steps (see the module's documentation).
pub struct Batcher<'m, B: Backend, M: LanguageModel<B> + ?Sized> {
    model: &'m M,
    device: B::Device,
    settings: BatchSettings,
    waiting: VecDeque<Request>,
    prefill: Option<Prefill<B>>,
    rows: Vec<Row>,
    cache: Option<KvCache<B>>,
    stats: BatchStats,
}

impl<'m, B: Backend, M: LanguageModel<B> + ?Sized> Batcher<'m, B, M> {
    /// A batcher for `model` on `device`; `max_context` is capped at the model's context.
    pub fn new(model: &'m M, settings: BatchSettings, device: &B::Device) -> Result<Self> {
        let context = model.phi().config().max_position_embeddings;
        settings.check()?;
        Ok(Self {
            model,
            device: device.clone(),
            settings: BatchSettings {
                max_context: settings.max_context.min(context),
                ..settings
            },
            waiting: VecDeque::new(),
            prefill: None,
            rows: Vec::new(),
            cache: None,
            stats: BatchStats::default(),
        })
    }

    /// The limits in force (`max_context` capped at the model's).
    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    /// Queues a request; it starts when a row is free. A request that cannot run (an empty
    /// prompt, or one that leaves no room for a new token in the context) fails at once.
    pub fn submit(&mut self, mut request: Request) {
        let context = self.settings.max_context;
        let problem = if request.prompt.is_empty() {
            Some("the prompt is empty: give at least one token".to_string())
        } else if request.prompt.len() > context {
            Some(format!(
                "the prompt has {} tokens but the context holds {context}",
                request.prompt.len()
            ))
        } else if let Some(&id) = request
            .prompt
            .iter()
            .find(|&&id| id as usize >= self.model.phi().config().vocab_size)
        {
            Some(format!("token id {id} is outside the vocabulary"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                request.sink.send(Event::Failed(message));
            }
            None if request.max_new_tokens == 0 && request.prompt_logprobs.is_none() => {
                request.sink.send(Event::Finished(Finish::Length));
            }
            None => self.waiting.push_back(request),
        }
    }

    /// What the batcher has done so far.
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Nothing waiting, reading or decoding.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.prefill.is_none() && self.rows.is_empty()
    }

    /// Requests in the decode batch.
    pub fn running(&self) -> usize {
        self.rows.len()
    }

    /// Requests not yet in the batch (waiting or being read).
    pub fn queued(&self) -> usize {
        self.waiting.len() + usize::from(self.prefill.is_some())
    }

    /// One step: drop abandoned requests, read one chunk of a waiting prompt, decode one token
    /// for every running row. An error is the model's, and fails every request in flight.
    pub fn step(&mut self) -> Result<()> {
        let outcome = self.try_step();
        if let Err(e) = &outcome {
            let message = format!("generation failed: {e}");
            for mut row in self.rows.drain(..) {
                row.request.sink.send(Event::Failed(message.clone()));
            }
            if let Some(mut prefill) = self.prefill.take() {
                prefill.request.sink.send(Event::Failed(message));
            }
            self.cache = None;
        }
        outcome
    }

    fn try_step(&mut self) -> Result<()> {
        self.drop_abandoned();
        // Up to `prefill_chunk` prompt tokens per step, in whole pieces, over as many waiting
        // prompts as they cover: short prompts join several at a time, a long one takes several
        // steps.
        let mut budget = self.settings.prefill_chunk;
        let started = Instant::now();
        while budget > 0 {
            if self.prefill.is_none() {
                if self.rows.len() >= self.settings.max_batch {
                    break;
                }
                let Some(request) = self.waiting.pop_front() else {
                    break;
                };
                self.prefill = Some(Prefill {
                    cache: self
                        .model
                        .phi()
                        .new_cache(1, request.prompt.len(), &self.device),
                    request,
                    done: 0,
                    prompt_logprobs: Vec::new(),
                });
            }
            match self.prefill_piece(budget)? {
                0 => break,
                read => budget -= read,
            }
        }
        self.stats.prefill_tokens += self.settings.prefill_chunk - budget;
        self.stats.prefill_seconds += started.elapsed().as_secs_f64();
        if !self.rows.is_empty() {
            let started = Instant::now();
            self.decode_step()?;
            self.stats.decode_seconds += started.elapsed().as_secs_f64();
        }
        if self.rows.is_empty() {
            // Idle memory goes back; the next batch allocates what it needs.
            self.cache = None;
        }
        Ok(())
    }

    fn drop_abandoned(&mut self) {
        self.waiting.retain(|r| !r.sink.is_closed());
        if self
            .prefill
            .as_ref()
            .is_some_and(|p| p.request.sink.is_closed())
        {
            self.prefill = None;
        }
        let mut r = 0;
        while r < self.rows.len() {
            if self.rows[r].request.sink.is_closed() {
                self.remove_row(r);
            } else {
                r += 1;
            }
        }
    }

    fn remove_row(&mut self, r: usize) {
        self.rows.swap_remove(r);
        if let Some(cache) = &mut self.cache {
            cache.swap_remove_row(r);
        }
    }

    /// Reads the next piece of the prompt being prefilled (its next `prefill_chunk` tokens, or
    /// the rest) when it fits in `budget` tokens, and returns its length (0: it did not fit);
    /// after the last, picks the first new token and moves the row into the batch.
    fn prefill_piece(&mut self, budget: usize) -> Result<usize> {
        let phi = self.model.phi();
        let adapters = self.model.adapters();
        let piece = self.settings.prefill_chunk;
        let prefill = self.prefill.as_mut().expect("a prefill is running");
        let prompt = &prefill.request.prompt;
        let end = (prefill.done + piece).min(prompt.len());
        let read = end - prefill.done;
        if read > budget {
            return Ok(0);
        }
        let chunk = phi.ids_tensor(&[prompt[prefill.done..end].to_vec()], &self.device)?;
        let options = Options::cached(&mut prefill.cache).with_adapters(adapters);
        let last_logits = match prefill.request.prompt_logprobs {
            Some(top) => {
                // Position i's distribution scores prompt token i + 1; the last one's is the
                // first new token's.
                let logits = phi.logits(chunk, options)?;
                let [_, seq, vocab] = logits.dims();
                let rows: Vec<f32> = logits.into_data().iter::<f32>().collect();
                if prefill.done == 0 {
                    prefill.prompt_logprobs.push(None);
                }
                for (i, row) in rows.chunks(vocab).enumerate() {
                    let next = prefill.done + i + 1;
                    if next < prompt.len() {
                        let lp = log_probs(row);
                        prefill
                            .prompt_logprobs
                            .push(Some(token_logprobs(&lp, prompt[next], top)));
                    }
                }
                (end == prompt.len()).then(|| Last::Host(rows[(seq - 1) * vocab..].to_vec()))
            }
            None if end == prompt.len() => Some(Last::Device(phi.last_logits(chunk, options)?)),
            None => {
                phi.hidden_states(chunk, options)?;
                None
            }
        };
        prefill.done = end;
        let Some(last_logits) = last_logits else {
            return Ok(read);
        };
        let mut prefill = self.prefill.take().expect("a prefill is running");
        if prefill.request.prompt_logprobs.is_some() {
            let sent = prefill
                .request
                .sink
                .send(Event::PromptLogprobs(std::mem::take(
                    &mut prefill.prompt_logprobs,
                )));
            if !sent {
                return Ok(read);
            }
        }
        if prefill.request.max_new_tokens == 0 {
            prefill.request.sink.send(Event::Finished(Finish::Length));
            return Ok(read);
        }
        let mut row = Row {
            history: prefill.request.prompt.clone(),
            request: prefill.request,
            generated: 0,
            next: 0,
        };
        let content = row.history.len();
        let mut pick = row.pick_request();
        let picked = match last_logits {
            Last::Host(raw) => pick.pick(&raw),
            Last::Device(logits) => {
                let readback = Readback::for_backend::<B>();
                pick_tokens(logits, std::slice::from_mut(&mut pick), readback).remove(0)
            }
        };
        if !row.take_token(picked, content, self.settings.max_context) {
            return Ok(read);
        }
        self.join(row, &prefill.cache)?;
        Ok(read)
    }

    /// Adds a prefilled row to the batch cache, lining the batch up with it.
    fn join(&mut self, row: Row, single: &KvCache<B>) -> Result<()> {
        let content = single.len();
        let rows = self.rows.len();
        let cache = self.cache.get_or_insert_with(|| {
            KvCache::new(self.model.phi().config(), Vec::new(), 0, &self.device)
        });
        let rows_allocated = cache.rows_allocated();
        let grown_rows = if rows < rows_allocated {
            rows_allocated
        } else {
            (2 * rows_allocated).clamp(rows + 1, self.settings.max_batch.max(rows + 1))
        };
        let slots = if rows == 0 {
            content
        } else {
            cache.len().max(content)
        };
        let grown_slots = if slots <= cache.capacity() {
            cache.capacity()
        } else {
            (2 * cache.capacity()).clamp(slots, self.settings.max_context.max(slots))
        };
        if (grown_rows, grown_slots) != (rows_allocated, cache.capacity()) {
            self.stats.growths += 1;
            cache.reserve(grown_rows, grown_slots);
        }
        if rows > 0 && content > cache.len() {
            self.stats.realignments += 1;
            cache.shift(content)?;
        }
        cache.push_row(single)?;
        self.stats.joins += 1;
        self.rows.push(row);
        Ok(())
    }

    /// One token for every running row.
    fn decode_step(&mut self) -> Result<()> {
        let phi = self.model.phi();
        let max_context = self.settings.max_context;
        let cache = self.cache.as_mut().expect("running rows have a cache");
        if cache.len() == cache.capacity() {
            // Reclaim the padding every row shares when it is a good part of the slots (or the
            // slots cannot grow); otherwise grow.
            let shared = cache.padding().iter().copied().min().unwrap_or(0);
            if cache.capacity() < max_context && shared < (cache.capacity() / 4).max(1) {
                let rows = cache.rows_allocated();
                cache.reserve(rows, (2 * cache.capacity()).min(max_context));
                self.stats.growths += 1;
            } else {
                cache.shift(cache.len() - shared)?;
                self.stats.compactions += 1;
            }
        }
        let inputs: Vec<Vec<u32>> = self.rows.iter().map(|r| vec![r.next]).collect();
        let logits = phi.last_logits(
            phi.ids_tensor(&inputs, &self.device)?,
            Options::cached(cache).with_adapters(self.model.adapters()),
        )?;
        let mut picks: Vec<RowPick<'_>> = self.rows.iter_mut().map(Row::pick_request).collect();
        let picked = pick_tokens(logits, &mut picks, Readback::for_backend::<B>());
        self.stats.decode_steps += 1;
        self.stats.rows_decoded += self.rows.len();
        let (len, pads) = (cache.len(), cache.padding().to_vec());
        let mut finished = Vec::new();
        for (r, (row, picked)) in self.rows.iter_mut().zip(picked).enumerate() {
            if !row.take_token(picked, len - pads[r], max_context) {
                finished.push(r);
            }
        }
        // Highest first, so each swap_remove moves a row that stays.
        for &r in finished.iter().rev() {
            self.remove_row(r);
        }
        Ok(())
    }
}

impl BatchSettings {
    /// Refuses limits nothing can run with.
    pub fn check(&self) -> Result<()> {
        if self.max_batch == 0 || self.max_context < 2 || self.prefill_chunk == 0 {
            return Err(PhiError::Input(format!(
                "batch settings {self:?}: max_batch and prefill_chunk must be at least 1, \
                 max_context at least 2"
            )));
        }
        Ok(())
    }
}

impl Row {
    /// What picking this row's next token needs: its picker and history, and its logits when
    /// it reports log-probabilities.
    fn pick_request(&mut self) -> RowPick<'_> {
        RowPick {
            picker: &mut self.request.picker,
            history: &self.history,
            want_logits: self.request.logprobs.is_some(),
        }
    }

    /// Takes the token picked for this row, sends it, and says whether the row goes on
    /// (`content`: positions the row's cache holds; the new token would take the next one, and
    /// `max_context` is the most there may be).
    fn take_token(&mut self, picked: Picked, content: usize, max_context: usize) -> bool {
        let id = picked.token;
        let logprobs = self
            .request
            .logprobs
            .zip(picked.logits)
            .map(|(top, logits)| token_logprobs(&log_probs(&logits), id, top));
        self.history.push(id);
        self.generated += 1;
        self.next = id;
        if !self.request.sink.send(Event::Token { id, logprobs }) {
            return false;
        }
        let finish = if self.request.eos_token_ids.contains(&id) {
            Some(Finish::Eos)
        } else if self.generated == self.request.max_new_tokens || content >= max_context {
            Some(Finish::Length)
        } else {
            None
        };
        match finish {
            Some(finish) => {
                self.request.sink.send(Event::Finished(finish));
                false
            }
            None => true,
        }
    }
}

/// `log_softmax` of one row of logits, in f64 sums for a stable normaliser.
pub fn log_probs(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let norm = max + sum.ln() as f32;
    logits.iter().map(|&l| l - norm).collect()
}

/// `token`'s entry of `log_probs` and the `top` largest entries, largest first (ties: lower id).
pub fn token_logprobs(log_probs: &[f32], token: u32, top: usize) -> TokenLogprobs {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &lp) in log_probs.iter().enumerate() {
            if best.len() == top && lp <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, v)| v >= lp);
            best.insert(at, (id as u32, lp));
            best.truncate(top);
        }
    }
    TokenLogprobs {
        logprob: log_probs[token as usize],
        top: best,
    }
}
