//! Small default corpora that ship inside the crate, so training runs with no network: Python
//! exercises (code), textbook-style units (synthetic) and web-like pages (web), the three slots of
//! the phi-1.5 mixtures, and prompt-completion exercises for fine-tuning. `tools/make_corpora.py`
//! generated them from templates with a fixed seed, running every exercise's code first; no text
//! comes from the web.

use std::path::Path;
use std::str::FromStr;

use phi_zoo_common::PhiTokenizer;

use crate::error::{DataError, Result};
use crate::prepare::{PrepareOptions, prepare, tokenizer_sha256};
use crate::reader::Corpus;
use crate::store::TokenStore;

impl FromStr for EmbeddedCorpus {
    type Err = DataError;

    /// A corpus by the mixture slot it fills (`code`, `synthetic`, `web`).
    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "no embedded corpus fills the slot {name:?}: code, synthetic, web"
                ))
            })
    }
}

/// Documents of each embedded corpus held out for validation (its last ones): pretraining
/// validates on them and evaluation measures perplexity on them.
pub const HELD_OUT_DOCUMENTS: usize = 100;

/// Prompt-completion pairs in the CodeExercises manner (a function's signature and docstring,
/// then its tested body), as JSONL: the default fine-tuning set.
pub const EXERCISES_JSONL: &str = include_str!("../assets/exercises.jsonl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A corpus shipped inside the crate.
pub enum EmbeddedCorpus {
    /// Python exercises with tested solutions.
    Code,
    /// Textbook-style units.
    Synthetic,
    /// Web-like pages.
    Web,
}

impl EmbeddedCorpus {
    /// Every embedded corpus.
    pub const ALL: [Self; 3] = [Self::Code, Self::Synthetic, Self::Web];

    /// The mixture slot it fills (`code`, `synthetic`, `web`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Synthetic => "synthetic",
            Self::Web => "web",
        }
    }

    /// The corpus as JSONL, documents in the `text` field.
    pub fn jsonl(self) -> &'static str {
        match self {
            Self::Code => include_str!("../assets/code.jsonl"),
            Self::Synthetic => include_str!("../assets/synthetic.jsonl"),
            Self::Web => include_str!("../assets/web.jsonl"),
        }
    }

    /// Documents in the corpus.
    pub fn num_documents(self) -> u64 {
        self.documents().count() as u64
    }

    /// The token store of this corpus under `dir` (`<name>.store`), prepared on first use and
    /// reused while it matches the tokenizer.
    pub fn store(self, dir: &Path, tokenizer: &PhiTokenizer) -> Result<TokenStore> {
        let documents: Vec<&str> = self.documents().collect();
        stored_documents(dir, self.name(), &documents, tokenizer)
    }

    /// Training and validation stores of this corpus under `dir` (`<name>-train.store`,
    /// `<name>-valid.store`): the last `held_out` documents for validation only, the rest for
    /// training. Prepared on first use and reused while they match the tokenizer.
    pub fn split_stores(
        self,
        dir: &Path,
        tokenizer: &PhiTokenizer,
        held_out: usize,
    ) -> Result<(TokenStore, TokenStore)> {
        let documents: Vec<&str> = self.documents().collect();
        if held_out == 0 || held_out >= documents.len() {
            return Err(DataError::Invalid(format!(
                "cannot hold out {held_out} of the {} documents of the {} corpus",
                documents.len(),
                self.name()
            )));
        }
        let (train, valid) = documents.split_at(documents.len() - held_out);
        Ok((
            stored_documents(dir, &format!("{}-train", self.name()), train, tokenizer)?,
            stored_documents(dir, &format!("{}-valid", self.name()), valid, tokenizer)?,
        ))
    }

    /// The text of the last `n` documents: the part `split_stores` holds out for validation.
    pub fn held_out_texts(self, n: usize) -> Result<Vec<String>> {
        let mut texts = self.texts()?;
        Ok(texts.split_off(texts.len().saturating_sub(n)))
    }

    /// The text of every document, in order.
    pub fn texts(self) -> Result<Vec<String>> {
        self.documents()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("text")?.as_str().map(str::to_string))
                    .ok_or_else(|| {
                        DataError::Invalid(format!(
                            "the {} corpus has a line without text",
                            self.name()
                        ))
                    })
            })
            .collect()
    }

    /// The JSONL lines, one document each.
    fn documents(self) -> impl Iterator<Item = &'static str> {
        self.jsonl().lines().filter(|l| !l.trim().is_empty())
    }
}

/// The token store `dir/<name>.store` of `documents` (JSONL lines with a `text` field): opened if
/// it holds as many documents and was made with `tokenizer`, else written (through
/// `dir/<name>.jsonl`) and prepared.
fn stored_documents(
    dir: &Path,
    name: &str,
    documents: &[&str],
    tokenizer: &PhiTokenizer,
) -> Result<TokenStore> {
    let store_dir = dir.join(format!("{name}.store"));
    let sha = tokenizer_sha256(tokenizer)?;
    if let Ok(store) = TokenStore::open_for(&store_dir, &sha)
        && store.header().documents == documents.len() as u64
    {
        return Ok(store);
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let source = dir.join(format!("{name}.jsonl"));
    std::fs::write(&source, documents.join("\n") + "\n").map_err(|e| DataError::io(&source, e))?;
    prepare(
        &[Corpus::jsonl(&source, "text")],
        tokenizer,
        &store_dir,
        &PrepareOptions::default(),
    )?;
    TokenStore::open_for(&store_dir, &sha)
}
