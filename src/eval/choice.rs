//! Multiple choice by log-likelihood, with lm-evaluation-harness' definitions. Each choice is a
//! request: a context and a continuation (the target delimiter, a single space by default,
//! followed by the choice). A request is encoded as lm-eval encodes it: trailing spaces of the
//! context move to the continuation, the pair is encoded whole and split at the context's own
//! token count. Its score is Σ log p(continuation token | everything before it). `acc`: the
//! highest-scoring choice is the gold one; `acc_norm`: the same after dividing each score by its
//! choice's length in characters.
//!
//! Choices that share their context are scored as continuations of one cached context: the
//! context runs through the model once, its KV cache is copied to one row per choice, and the
//! continuations run as one batch. The naive count is what scoring each request alone computes.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use phi_zoo_common::{LanguageModel, Options, PhiError, PhiTokenizer, Result};
use serde::Serialize;

/// One choice: what the model reads, and what it is scored on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// The text before the continuation.
    pub context: String,
    /// The scored text: the target delimiter and the choice (for WinoGrande: the shared suffix).
    pub continuation: String,
    /// Characters `acc_norm` divides by: the choice's, the delimiter not counted.
    pub norm_chars: usize,
}

/// A multiple-choice question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceItem {
    /// An identifier for results files.
    pub id: String,
    /// One request per choice.
    pub requests: Vec<Request>,
    /// The index of the right choice.
    pub gold: usize,
}

impl ChoiceItem {
    /// A question whose choices all continue one context, each after `delimiter`.
    pub fn shared(
        id: String,
        context: String,
        choices: &[String],
        gold: usize,
        delimiter: &str,
    ) -> Self {
        Self {
            id,
            requests: choices
                .iter()
                .map(|choice| Request {
                    context: context.clone(),
                    continuation: format!("{delimiter}{choice}"),
                    norm_chars: choice.chars().count(),
                })
                .collect(),
            gold,
        }
    }
}

/// How one question was scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemScore {
    /// The question's id.
    pub id: String,
    /// Σ log p of each choice's continuation.
    pub scores: Vec<f64>,
    /// The gold index.
    pub gold: usize,
    /// The highest score's index.
    pub pick: usize,
    /// The highest length-normalised score's index.
    pub pick_norm: usize,
}

impl ItemScore {
    /// The picks of `scores` (each choice's Σ log p), raw and divided by `norm_chars`.
    pub fn new(id: String, scores: Vec<f64>, norm_chars: &[usize], gold: usize) -> Self {
        let normalised = scores
            .iter()
            .zip(norm_chars)
            .map(|(s, &chars)| s / chars.max(1) as f64);
        Self {
            id,
            pick: argmax(scores.iter().copied()),
            pick_norm: argmax(normalised),
            scores,
            gold,
        }
    }
}

/// A question as token ids: each choice's (context, continuation) tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenItem {
    /// The question's id.
    pub id: String,
    /// (context ids, continuation ids) per choice.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    /// Characters each choice's score is divided by for `acc_norm`.
    pub norm_chars: Vec<usize>,
    /// The index of the right choice.
    pub gold: usize,
}

/// Tokens run through the model, against what scoring every request alone would run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TokenCounts {
    /// Positions computed (padding included).
    pub computed: usize,
    /// Σ over requests of (context + continuation − 1): lm-eval's count.
    pub naive: usize,
}

/// The accuracy figures of a set of questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChoiceSummary {
    /// Questions scored.
    pub items: usize,
    /// Fraction answered right by raw score.
    pub acc: f64,
    /// The standard error of `acc` (sample standard deviation / √n).
    pub acc_stderr: f64,
    /// Fraction answered right by length-normalised score.
    pub acc_norm: f64,
    /// The standard error of `acc_norm`.
    pub acc_norm_stderr: f64,
}

impl ChoiceSummary {
    /// The figures of `scores`.
    pub fn of(scores: &[ItemScore]) -> Self {
        let acc: Vec<f64> = scores
            .iter()
            .map(|s| f64::from(u8::from(s.pick == s.gold)))
            .collect();
        let acc_norm: Vec<f64> = scores
            .iter()
            .map(|s| f64::from(u8::from(s.pick_norm == s.gold)))
            .collect();
        let (acc, acc_stderr) = mean_and_stderr(&acc);
        let (acc_norm, acc_norm_stderr) = mean_and_stderr(&acc_norm);
        Self {
            items: scores.len(),
            acc,
            acc_stderr,
            acc_norm,
            acc_norm_stderr,
        }
    }
}

/// Mean and its standard error with the sample variance (n − 1), as lm-eval reports it.
fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// The index of the largest value (the first on ties, as numpy's argmax).
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// A request as token ids: lm-eval's `_encode_pair`.
fn encode_pair(
    tokenizer: &PhiTokenizer,
    eot: u32,
    request: &Request,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = request.context.trim_end_matches(' ');
    let moved = &request.context[trimmed.len()..];
    let continuation = format!("{moved}{}", request.continuation);
    if trimmed.is_empty() {
        // An empty context is the end-of-text token, as lm-eval does for an unconditional score.
        return Ok((vec![eot], tokenizer.encode(&continuation)?));
    }
    let context = tokenizer.encode(trimmed)?;
    let whole = tokenizer.encode(&format!("{trimmed}{continuation}"))?;
    let split = context.len().min(whole.len());
    Ok((context, whole[split..].to_vec()))
}

/// Encodes every question as lm-eval does (see the module docs).
pub fn encode_items(tokenizer: &PhiTokenizer, items: &[ChoiceItem]) -> Result<Vec<TokenItem>> {
    let eot = tokenizer
        .eos_id()
        .ok_or_else(|| PhiError::Input("the tokenizer has no <|endoftext|>".into()))?;
    items
        .iter()
        .map(|item| {
            Ok(TokenItem {
                id: item.id.clone(),
                pairs: item
                    .requests
                    .iter()
                    .map(|r| encode_pair(tokenizer, eot, r))
                    .collect::<Result<_>>()?,
                norm_chars: item.requests.iter().map(|r| r.norm_chars).collect(),
                gold: item.gold,
            })
        })
        .collect()
}

/// Scores every question; `share_prefix` runs shared contexts once (the scores are the same
/// either way). `progress(done, total)` after each question.
pub fn score_items<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    items: &[TokenItem],
    share_prefix: bool,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<ItemScore>, TokenCounts)> {
    let context_limit = model.phi().config().max_position_embeddings;
    let mut counts = TokenCounts::default();
    let mut results = Vec::with_capacity(items.len());
    for (done, item) in items.iter().enumerate() {
        if item.pairs.is_empty() || item.gold >= item.pairs.len() {
            return Err(PhiError::Input(format!(
                "question {}: {} choices and gold {}",
                item.id,
                item.pairs.len(),
                item.gold
            )));
        }
        let mut pairs = item.pairs.clone();
        for (i, (context, continuation)) in pairs.iter_mut().enumerate() {
            if context.is_empty() || continuation.is_empty() {
                return Err(PhiError::Input(format!(
                    "question {} choice {i}: an empty context or continuation",
                    item.id
                )));
            }
            // Too long for the model: the context loses its oldest tokens, as lm-eval cuts.
            let excess = (context.len() + continuation.len()).saturating_sub(context_limit + 1);
            if excess >= context.len() {
                return Err(PhiError::Input(format!(
                    "question {} choice {i}: the continuation alone fills the context",
                    item.id
                )));
            }
            context.drain(..excess);
            counts.naive += context.len() + continuation.len() - 1;
        }
        let shared = pairs.windows(2).all(|w| w[0].0 == w[1].0);
        let scores = if share_prefix && shared {
            score_shared(model, &pairs, &mut counts, device)?
        } else {
            score_alone(model, &pairs, &mut counts, device)?
        };
        results.push(ItemScore::new(
            item.id.clone(),
            scores,
            &item.norm_chars,
            item.gold,
        ));
        progress(done + 1, items.len());
    }
    Ok((results, counts))
}

/// Every (context, continuation) as one right-padded batch of full sequences.
fn score_alone<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    pairs: &[(Vec<u32>, Vec<u32>)],
    counts: &mut TokenCounts,
    device: &B::Device,
) -> Result<Vec<f64>> {
    let full: Vec<Vec<u32>> = pairs
        .iter()
        .map(|(c, k)| c.iter().chain(k).copied().collect())
        .collect();
    let inputs: Vec<Vec<u32>> = full.iter().map(|f| f[..f.len() - 1].to_vec()).collect();
    let targets: Vec<Vec<u32>> = full.iter().map(|f| f[1..].to_vec()).collect();
    let (log_probs, computed) = target_log_probs(model, &inputs, &targets, None, device)?;
    counts.computed += computed;
    // Position p predicts token p + 1: the continuation's tokens are predicted from the context's
    // last position on.
    Ok(pairs
        .iter()
        .zip(&log_probs)
        .map(|((context, continuation), row)| {
            let from = context.len() - 1;
            row[from..from + continuation.len()]
                .iter()
                .map(|&v| v as f64)
                .sum()
        })
        .collect())
}

/// One context, then every continuation from a copy of its cache.
fn score_shared<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    pairs: &[(Vec<u32>, Vec<u32>)],
    counts: &mut TokenCounts,
    device: &B::Device,
) -> Result<Vec<f64>> {
    let phi = model.phi();
    let context = &pairs[0].0;
    let longest = pairs.iter().map(|p| p.1.len()).max().unwrap_or(1);
    let mut cache = phi.new_cache(1, context.len() + longest - 1, device);
    let last = phi.last_logits(
        phi.ids_tensor(std::slice::from_ref(context), device)?,
        Options::cached(&mut cache).with_adapters(model.adapters()),
    )?;
    counts.computed += context.len();
    let first_tokens: Vec<i64> = pairs.iter().map(|(_, k)| k[0] as i64).collect();
    let first_tokens =
        Tensor::<B, 2, Int>::from_data(TensorData::new(first_tokens, [1, pairs.len()]), device);
    let first: Vec<f32> = log_softmax(last, 1)
        .gather(1, first_tokens)
        .into_data()
        .iter::<f32>()
        .collect();
    let mut scores: Vec<f64> = first.iter().map(|&v| v as f64).collect();
    if longest > 1 {
        let inputs: Vec<Vec<u32>> = pairs
            .iter()
            .map(|(_, k)| k[..k.len() - 1].to_vec())
            .collect();
        let targets: Vec<Vec<u32>> = pairs.iter().map(|(_, k)| k[1..].to_vec()).collect();
        let mut rows = cache.repeat_rows(pairs.len());
        let (log_probs, computed) =
            target_log_probs(model, &inputs, &targets, Some(&mut rows), device)?;
        counts.computed += computed;
        for ((score, target), row) in scores.iter_mut().zip(&targets).zip(&log_probs) {
            *score += row[..target.len()].iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    Ok(scores)
}

/// Runs right-padded `inputs` (after `cache`'s positions when given) and returns, per row and
/// position, log p(the target at that position); and the positions computed. Rows may differ in
/// length: padding goes after each row's tokens, where causal attention keeps it from changing
/// them, and its values are meaningless.
fn target_log_probs<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    inputs: &[Vec<u32>],
    targets: &[Vec<u32>],
    cache: Option<&mut phi_zoo_common::KvCache<B>>,
    device: &B::Device,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let phi = model.phi();
    let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
    if longest == 0 {
        return Ok((vec![vec![]; inputs.len()], 0));
    }
    let pad = |rows: &[Vec<u32>]| -> Vec<Vec<u32>> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, longest - r.len()))
                    .collect()
            })
            .collect()
    };
    let options = match cache {
        Some(cache) => Options::cached(cache),
        None => Options::default(),
    }
    .with_adapters(model.adapters());
    let logits = phi.logits(phi.ids_tensor(&pad(inputs), device)?, options)?;
    let [batch, seq, _] = logits.dims();
    let targets = phi
        .ids_tensor(&pad(targets), device)?
        .reshape([batch, seq, 1]);
    let values: Vec<f32> = log_softmax(logits, 2)
        .gather(2, targets)
        .into_data()
        .iter::<f32>()
        .collect();
    Ok((
        values.chunks(seq).map(<[f32]>::to_vec).collect(),
        batch * seq,
    ))
}
