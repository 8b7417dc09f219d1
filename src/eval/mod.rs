//! Evaluation, as the Phi papers measured: perplexity, multiple choice by log-likelihood
//! (lm-evaluation-harness' definitions), and code generation scored by running the code
//! (HumanEval, MBPP) in a sandbox, with pass@k.

pub mod choice;
pub mod code;
pub mod pass_at_k;
pub mod perplexity;
pub mod run;
#[cfg(target_os = "linux")]
pub mod sandbox;
pub mod tasks;

use std::path::Path;

use phi_zoo_common::PhiTokenizer;
use phi_zoo_datasets::{Corpus, DataError, OnMalformed, ReadReport, TokenStore};

/// A corpus as one token stream, and the bytes of text it stands for: a token store folder as
/// stored (its bytes are those of its decoded text), or a text, JSONL or Parquet corpus
/// (`field`: the JSONL field or Parquet column) with documents joined by `<|endoftext|>`, as
/// stores join them.
pub fn corpus_tokens(
    path: &Path,
    field: &str,
    tokenizer: &PhiTokenizer,
) -> Result<(Vec<u32>, u64), DataError> {
    let tokenizer_error = |e: phi_zoo_common::PhiError| DataError::Tokenizer(e.to_string());
    if path.join("header.json").is_file() {
        let store = TokenStore::open(path)?;
        let mut ids = Vec::with_capacity(store.len() as usize);
        store.read_into(0..store.len(), &mut ids)?;
        let eos = tokenizer.eos_id();
        let text_ids: Vec<u32> = ids.iter().copied().filter(|&t| Some(t) != eos).collect();
        let bytes = tokenizer.decode(&text_ids).map_err(tokenizer_error)?.len() as u64;
        return Ok((ids, bytes));
    }
    let corpus = Corpus::detect(path, field)?;
    let mut joined = JoinedTokens::new(tokenizer)?;
    let mut report = ReadReport::default();
    corpus.read(OnMalformed::Fail, &mut report, &mut |document| {
        joined.push(&document).map_err(tokenizer_error)
    })?;
    Ok((joined.ids, joined.bytes))
}

/// Documents as one token stream, joined by `<|endoftext|>` as token stores join them, and the
/// bytes of text they hold.
pub struct JoinedTokens<'a> {
    tokenizer: &'a PhiTokenizer,
    eos: u32,
    /// The stream so far.
    pub ids: Vec<u32>,
    /// UTF-8 bytes of the documents so far.
    pub bytes: u64,
}

impl<'a> JoinedTokens<'a> {
    /// An empty stream; the tokenizer must have `<|endoftext|>`.
    pub fn new(tokenizer: &'a PhiTokenizer) -> Result<Self, DataError> {
        let eos = tokenizer
            .eos_id()
            .ok_or_else(|| DataError::Tokenizer("the tokenizer has no <|endoftext|>".into()))?;
        Ok(Self {
            tokenizer,
            eos,
            ids: vec![],
            bytes: 0,
        })
    }

    /// Appends `document`, after an `<|endoftext|>` unless it is the first.
    pub fn push(&mut self, document: &str) -> phi_zoo_common::Result<()> {
        if !self.ids.is_empty() {
            self.ids.push(self.eos);
        }
        self.bytes += document.len() as u64;
        self.ids.extend(self.tokenizer.encode(document)?);
        Ok(())
    }
}
