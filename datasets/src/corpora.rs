//! Small default corpora that ship inside the crate, so training runs with no network: Python
//! exercises (code), textbook-style units (synthetic) and web-like pages (web), the three slots of
//! the phi-1.5 mixtures, and prompt-completion exercises for fine-tuning. `tools/make_corpora.py`
//! generated them from templates with a fixed seed, running every exercise's code first; no text
//! comes from the web.

use std::path::Path;

use phi_zoo_common::PhiTokenizer;

use crate::error::{DataError, Result};
use crate::prepare::{PrepareOptions, prepare, tokenizer_sha256};
use crate::reader::Corpus;
use crate::store::TokenStore;

/// Prompt-completion pairs in the CodeExercises manner (a function's signature and docstring,
/// then its tested body), as JSONL: the default fine-tuning set.
pub const EXERCISES_JSONL: &str = include_str!("../assets/exercises.jsonl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddedCorpus {
    Code,
    Synthetic,
    Web,
}

impl EmbeddedCorpus {
    pub const ALL: [Self; 3] = [Self::Code, Self::Synthetic, Self::Web];

    /// The mixture slot it fills (`code`, `synthetic`, `web`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Synthetic => "synthetic",
            Self::Web => "web",
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The corpus as JSONL, documents in the `text` field.
    pub fn jsonl(self) -> &'static str {
        match self {
            Self::Code => include_str!("../assets/code.jsonl"),
            Self::Synthetic => include_str!("../assets/synthetic.jsonl"),
            Self::Web => include_str!("../assets/web.jsonl"),
        }
    }

    pub fn num_documents(self) -> u64 {
        self.jsonl()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64
    }

    /// The token store of this corpus under `dir` (`<name>.store`), prepared on first use and
    /// reused while it matches the tokenizer.
    pub fn store(self, dir: &Path, tokenizer: &PhiTokenizer) -> Result<TokenStore> {
        let store_dir = dir.join(format!("{}.store", self.name()));
        let sha = tokenizer_sha256(tokenizer)?;
        if let Ok(store) = TokenStore::open_for(&store_dir, &sha)
            && store.header().documents == self.num_documents()
        {
            return Ok(store);
        }
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let source = dir.join(format!("{}.jsonl", self.name()));
        std::fs::write(&source, self.jsonl()).map_err(|e| DataError::io(&source, e))?;
        prepare(
            &[Corpus::jsonl(&source, "text")],
            tokenizer,
            &store_dir,
            &PrepareOptions::default(),
        )?;
        TokenStore::open_for(&store_dir, &sha)
    }
}
