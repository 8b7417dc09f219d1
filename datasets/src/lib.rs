//! phi-zoo-datasets: corpora to tokens for training, as the Phi papers did it. Documents are
//! read ([`Corpus`]), tokenized and joined with `<|endoftext|>` into token stores ([`prepare`],
//! [`TokenStore`]), cut into `seq_len + 1` windows and drawn from several stores with exact
//! weights ([`Mixture`]), and batched for burn ([`LmBatcher`], [`StreamLoader`]); fine-tuning
//! reads prompt-completion pairs ([`FinetuneSet`]). [`corpora`] ships small default corpora.

#![warn(missing_docs)]

pub mod annotate;
mod atomic_file;
mod batch;
pub mod classifier;
pub mod corpora;
pub mod decontaminate;
pub mod dedup;
pub mod embed;
pub mod endpoint;
mod error;
pub mod filter;
mod finetune;
mod histogram;
mod journal;
mod loader;
mod mixture;
mod npy;
mod permutation;
mod pool;
mod prepare;
mod progress;
mod rank_shard;
mod reader;
mod shard;
mod store;
pub mod synthesize;
mod template_file;
pub mod text_norm;

pub use atomic_file::{AtomicFile, write_json};
pub use batch::{LmBatch, LmBatcher, MixtureDataset, TokenWindow};
pub use error::{DataError, Result};
pub use finetune::{FinetuneExample, FinetuneFormat, FinetuneReport, FinetuneSet};
pub use journal::Journal;
pub use loader::{SampleStream, StreamLoader};
pub use mixture::{Mixture, MixtureSource, SampleLocation};
pub use npy::{read_f32_matrix, write_f32_matrix};
pub use pool::run_pool;
pub use prepare::{PrepareOptions, PrepareReport, prepare, tokenizer_sha256};
pub use rank_shard::RankShard;
pub use reader::{Corpus, CorpusFormat, OnMalformed, ReadReport};
pub use shard::Shard;
pub use store::{StoreHeader, StoreWriter, TokenStore, TokenWidth};
