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
    let eos = tokenizer
        .eos_id()
        .ok_or_else(|| DataError::Tokenizer("the tokenizer has no <|endoftext|>".into()))?;
    let corpus = Corpus::detect(path, field)?;
    let (mut ids, mut bytes) = (vec![], 0u64);
    let mut report = ReadReport::default();
    corpus.read(OnMalformed::Fail, &mut report, &mut |document| {
        if !ids.is_empty() {
            ids.push(eos);
        }
        bytes += document.len() as u64;
        ids.extend(tokenizer.encode(&document).map_err(tokenizer_error)?);
        Ok(())
    })?;
    Ok((ids, bytes))
}
