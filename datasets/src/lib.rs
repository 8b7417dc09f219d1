//! phi-zoo-datasets: corpora to tokens for training, as the Phi papers did it. Documents are
//! read ([`reader`]), tokenized and joined with `<|endoftext|>` into token stores ([`prepare`],
//! [`store`]), cut into `seq_len + 1` windows and drawn from several stores with exact weights
//! ([`mixture`]), and batched for burn ([`batch`]). [`corpora`] ships small default corpora.

pub mod batch;
pub mod corpora;
pub mod error;
pub mod finetune;
pub mod loader;
pub mod mixture;
pub mod permutation;
pub mod prepare;
pub mod reader;
pub mod store;

pub use batch::{LmBatch, LmBatcher, MixtureDataset, TokenWindow};
pub use error::{DataError, Result};
pub use finetune::{FinetuneExample, FinetuneFormat, FinetuneReport, FinetuneSet};
pub use loader::{SampleStream, StreamLoader};
pub use mixture::{Mixture, MixtureSource, SampleLocation};
pub use prepare::{PrepareOptions, PrepareReport, prepare, tokenizer_sha256};
pub use reader::{Corpus, CorpusFormat, OnMalformed, ReadReport};
pub use store::{StoreHeader, StoreWriter, TokenStore, TokenWidth};
