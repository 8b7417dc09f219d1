//! Fine-tuning data: prompt-completion pairs (loss on the completion only, as phi-1 was tuned on
//! CodeExercises) or plain documents (loss on everything), tokenized once and served as padded
//! batches whose mask excludes prompt and padding positions from the loss and the token counts.

use std::ops::Range;
use std::path::Path;

use burn::prelude::*;
use phi_zoo_common::LmBatch;
use phi_zoo_common::PhiTokenizer;

use crate::error::{DataError, Result};
use crate::loader::SampleStream;
use crate::permutation::{Permutation, mix};
use crate::reader::{Corpus, OnMalformed, ReadReport};

/// How a fine-tuning file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinetuneFormat {
    /// JSONL, one `{"prompt": "...", "completion": "..."}` object per line.
    PromptCompletion,
    /// Documents (JSONL with a `text` field, plain text, or Parquet), each trained on in full.
    Text,
}

impl std::str::FromStr for FinetuneFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "prompt-completion" => Ok(Self::PromptCompletion),
            "text" => Ok(Self::Text),
            _ => Err(format!("unknown format {s:?}: prompt-completion or text")),
        }
    }
}

/// One tokenized example (or, packed, a window of several): `learn[t]` says whether predicting
/// `ids[t]` enters the loss (`learn[0]` is never used: nothing predicts the first token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinetuneExample {
    /// The example's token ids, prompt first.
    pub ids: Vec<u32>,
    /// Whether the loss counts the token predicted at each position.
    pub learn: Vec<bool>,
}

impl FinetuneExample {
    /// A prompt of `prompt_len` tokens (not learned) followed by what is learned.
    pub fn new(ids: Vec<u32>, prompt_len: usize) -> Self {
        let learn = (0..ids.len()).map(|t| t >= prompt_len).collect();
        Self { ids, learn }
    }

    /// Tokens before the first learned one.
    pub fn prompt_len(&self) -> usize {
        self.learn.iter().position(|&l| l).unwrap_or(self.ids.len())
    }

    /// Target positions that count: `target_mask()[i]` says whether predicting `ids[i + 1]`
    /// enters the loss.
    pub fn target_mask(&self) -> Vec<bool> {
        self.learn.iter().skip(1).copied().collect()
    }
}

/// What reading a fine-tuning file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinetuneReport {
    /// Examples read.
    pub examples: usize,
    /// Completions cut to fit `max_len`.
    pub truncated: usize,
    /// Documents split into several examples to fit `max_len`.
    pub split_documents: usize,
}

/// Tokenized examples of at most `max_len + 1` tokens, served in shuffled passes.
#[derive(Debug, Clone)]
pub struct FinetuneSet {
    examples: Vec<FinetuneExample>,
    max_len: usize,
    pad_id: u32,
    seed: u64,
}

impl FinetuneSet {
    /// Examples as given; each must have at least one counted target and at most `max_len + 1`
    /// tokens. `pad_id` fills the inputs of padded positions (which no loss reads).
    pub fn new(
        examples: Vec<FinetuneExample>,
        max_len: usize,
        pad_id: u32,
        seed: u64,
    ) -> Result<Self> {
        if examples.is_empty() {
            return Err(DataError::Invalid("no fine-tuning examples".into()));
        }
        for (i, example) in examples.iter().enumerate() {
            if example.learn.len() != example.ids.len() {
                return Err(DataError::Invalid(format!(
                    "example {i}: {} learn flags for {} tokens",
                    example.learn.len(),
                    example.ids.len()
                )));
            }
            if example.ids.len() > max_len + 1 {
                return Err(DataError::Invalid(format!(
                    "example {i}: {} tokens exceed max_len + 1 = {}",
                    example.ids.len(),
                    max_len + 1
                )));
            }
            if !example.target_mask().contains(&true) {
                return Err(DataError::Invalid(format!(
                    "example {i}: no token to learn (prompt {} of {} tokens)",
                    example.prompt_len(),
                    example.ids.len()
                )));
            }
        }
        Ok(Self {
            examples,
            max_len,
            pad_id,
            seed,
        })
    }

    /// Reads and tokenizes `path`. Prompt-completion examples are `prompt + completion + EOS`
    /// (tokenized apart, so the boundary is exact); completions that do not fit `max_len` are
    /// cut, and a prompt that leaves no room for any completion token is an error naming its
    /// line. Documents are `text + EOS`, split into pieces of `max_len + 1` tokens.
    pub fn read(
        path: &Path,
        format: FinetuneFormat,
        tokenizer: &PhiTokenizer,
        max_len: usize,
        seed: u64,
    ) -> Result<(Self, FinetuneReport)> {
        let eos = tokenizer
            .eos_id()
            .ok_or_else(|| DataError::Tokenizer("the tokenizer has no <|endoftext|>".into()))?;
        let encode = |text: &str| {
            tokenizer
                .encode(text)
                .map_err(|e| DataError::Tokenizer(e.to_string()))
        };
        let mut report = FinetuneReport::default();
        let mut examples = vec![];
        match format {
            FinetuneFormat::PromptCompletion => {
                let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let (prompt, completion) = prompt_completion(line)
                        .map_err(|message| DataError::malformed(path, n + 1, message))?;
                    let mut ids = encode(&prompt)?;
                    let prompt_len = ids.len();
                    if prompt_len > max_len {
                        return Err(DataError::malformed(
                            path,
                            n + 1,
                            format!(
                                "the prompt has {prompt_len} tokens: no room for the completion \
                                 within max_len {max_len}"
                            ),
                        ));
                    }
                    ids.extend(encode(&completion)?);
                    ids.push(eos);
                    if ids.len() > max_len + 1 {
                        ids.truncate(max_len + 1);
                        report.truncated += 1;
                    }
                    examples.push(FinetuneExample::new(ids, prompt_len));
                }
            }
            FinetuneFormat::Text => {
                let corpus = Corpus::detect(path, "text")?;
                let mut documents = vec![];
                corpus.read(OnMalformed::Fail, &mut ReadReport::default(), &mut |doc| {
                    documents.push(doc);
                    Ok(())
                })?;
                for document in documents {
                    let mut ids = encode(&document)?;
                    ids.push(eos);
                    let pieces: Vec<&[u32]> = ids.chunks(max_len + 1).collect();
                    if pieces.len() > 1 {
                        report.split_documents += 1;
                    }
                    examples.extend(
                        pieces
                            .into_iter()
                            .filter(|p| p.len() >= 2)
                            .map(|p| FinetuneExample::new(p.to_vec(), 0)),
                    );
                }
            }
        }
        if examples.is_empty() {
            return Err(DataError::Corpus {
                path: path.to_path_buf(),
                message: "no examples".into(),
            });
        }
        report.examples = examples.len();
        Ok((Self::new(examples, max_len, eos, seed)?, report))
    }

    /// Examples in the set.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// True for a set with no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The examples, in order.
    pub fn examples(&self) -> &[FinetuneExample] {
        &self.examples
    }

    /// The longest example allowed, in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The examples joined end to end (each ends with `<|endoftext|>`) and cut into windows of
    /// `max_len + 1` tokens, as pretraining reads its data: no padding, and every learn flag kept
    /// (a window may hold a prompt of one example and the completion of the one before). Only the
    /// first token of each window stops being a target. A final window with nothing to learn is
    /// dropped.
    pub fn packed(self) -> Result<Self> {
        let ids: Vec<u32> = self.examples.iter().flat_map(|e| e.ids.clone()).collect();
        let learn: Vec<bool> = self.examples.iter().flat_map(|e| e.learn.clone()).collect();
        let width = self.max_len + 1;
        let windows = ids
            .chunks(width)
            .zip(learn.chunks(width))
            .map(|(ids, learn)| FinetuneExample {
                ids: ids.to_vec(),
                learn: learn.to_vec(),
            })
            .filter(|w| w.target_mask().contains(&true))
            .collect();
        Self::new(windows, self.max_len, self.pad_id, self.seed)
    }

    /// The last `fraction` of the examples (at least one, and one left to train on) apart: a
    /// training set and a held-out validation set (drawn with `seed + 1`).
    pub fn split_held_out(mut self, fraction: f64) -> Result<(Self, Self)> {
        if self.examples.len() < 2 {
            return Err(DataError::Invalid(
                "one example: too few to hold any out for validation".into(),
            ));
        }
        let n = self.examples.len();
        let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        let valid = self.examples.split_off(n - held);
        let seed = self.seed;
        let valid = Self {
            examples: valid,
            seed: seed.wrapping_add(1),
            ..self.clone()
        };
        Ok((self, valid))
    }

    /// Which example stream sample `index` is: the examples in a fresh shuffle every pass.
    pub fn example_at(&self, index: u64) -> &FinetuneExample {
        let n = self.examples.len() as u64;
        let (pass, within) = (index / n, index % n);
        let order = Permutation::new(n, mix(self.seed ^ mix(pass)));
        &self.examples[order.apply(within) as usize]
    }
}

impl SampleStream for FinetuneSet {
    /// Right-padded to the longest example of the batch: padding sits after every real token, so
    /// causal attention never lets a real position see it, and the mask keeps it out of the loss.
    fn batch<B: Backend>(&self, indices: Range<u64>, device: &B::Device) -> LmBatch<B> {
        let examples: Vec<&FinetuneExample> = indices.map(|i| self.example_at(i)).collect();
        let seq = examples.iter().map(|e| e.ids.len() - 1).max().unwrap_or(1);
        let batch = examples.len();
        let mut inputs = vec![self.pad_id as i64; batch * seq];
        let mut targets = vec![0i64; batch * seq];
        let mut mask = vec![false; batch * seq];
        for (row, example) in examples.iter().enumerate() {
            let at = row * seq;
            let n = example.ids.len() - 1;
            for (i, &id) in example.ids[..n].iter().enumerate() {
                inputs[at + i] = id as i64;
            }
            for (i, &id) in example.ids[1..].iter().enumerate() {
                targets[at + i] = id as i64;
            }
            for (i, &keep) in example.learn[1..].iter().enumerate() {
                mask[at + i] = keep;
            }
        }
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [batch, seq]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, seq]), device),
            loss_mask: Some(Tensor::from_data(
                TensorData::new(mask, [batch, seq]),
                device,
            )),
        }
    }
}

/// The two string fields of a prompt-completion line.
fn prompt_completion(line: &str) -> std::result::Result<(String, String), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let field = |name: &str| -> std::result::Result<String, String> {
        match value.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{name}` is not a string")),
            None => Err(format!("no `{name}` field")),
        }
    };
    Ok((field("prompt")?, field("completion")?))
}
