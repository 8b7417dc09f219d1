//! Embeddings of documents by a Phi checkpoint: the final hidden states (after the final
//! LayerNorm), mean-pooled over the document's first `max_tokens` tokens. phi-1 scored its corpus
//! with a random forest on a pretrained code model's output embeddings; this is that embedding
//! for any Phi, on any backend. Documents of a batch are right-padded to the longest: causal
//! attention means a real token never sees the padding after it, and the mean is taken over the
//! real tokens only, so a document's embedding does not depend on its batch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use phi_zoo_common::{Phi, PhiTokenizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::annotate::document_hash;
use crate::atomic_file::write_json;
use crate::error::{DataError, Result};
use crate::npy::{read_f32_matrix, write_f32_matrix};
use crate::prepare::hex;
use crate::reader::{Corpus, OnMalformed};
use crate::shard::Shard;

/// Which model made an embedding, so that a classifier trained on one is never applied to
/// another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderIdentity {
    /// Where the model came from (a folder, a hub id, a name), for people.
    pub source: String,
    /// SHA-256 of the model's config and of its final LayerNorm and first embedding row: equal
    /// for the same weights, different for others.
    pub fingerprint: String,
    /// Embedding width (the hidden size).
    pub dim: usize,
    /// Tokens pooled per document at most.
    pub max_tokens: usize,
}

impl EmbedderIdentity {
    /// The identity of `model` loaded from `source`, pooling `max_tokens` tokens.
    pub fn of<B: Backend>(model: &Phi<B>, source: &str, max_tokens: usize) -> Result<Self> {
        let config = model.config().to_hf_json().to_string();
        let mut hasher = Sha256::new();
        hasher.update(config.as_bytes());
        let body = &model.model;
        let norm = &body.final_layernorm;
        let mut tensors = vec![norm.gamma.val()];
        if let Some(beta) = &norm.beta {
            tensors.push(beta.val());
        }
        let first_row = body.embed_tokens.weight.val().narrow(0, 0, 1).reshape([-1]);
        tensors.push(first_row);
        for t in tensors {
            let values = t
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| DataError::Invalid(format!("reading weights: {e:?}")))?;
            for v in values {
                hasher.update(v.to_le_bytes());
            }
        }
        Ok(Self {
            source: source.to_string(),
            fingerprint: hex(&hasher.finalize()),
            dim: model.config().hidden_size,
            max_tokens,
        })
    }

    /// Whether embeddings of `self` can go where `expected`'s went (same weights, width and
    /// pooling; the source may differ).
    pub fn check_matches(&self, expected: &Self, what: &str) -> Result<()> {
        if self.fingerprint != expected.fingerprint
            || self.dim != expected.dim
            || self.max_tokens != expected.max_tokens
        {
            return Err(DataError::Invalid(format!(
                "{what} was made with the embedder {} (dim {}, {} tokens, fingerprint {}…), \
                 not {} (dim {}, {} tokens, fingerprint {}…)",
                expected.source,
                expected.dim,
                expected.max_tokens,
                &expected.fingerprint[..12],
                self.source,
                self.dim,
                self.max_tokens,
                &self.fingerprint[..12]
            )));
        }
        Ok(())
    }
}

/// Embeds texts with a model.
pub struct Embedder<'a, B: Backend> {
    model: &'a Phi<B>,
    tokenizer: &'a PhiTokenizer,
    device: B::Device,
    identity: EmbedderIdentity,
}

impl<'a, B: Backend> Embedder<'a, B> {
    /// An embedder pooling at most `max_tokens` tokens (at most the model's context).
    pub fn new(
        model: &'a Phi<B>,
        tokenizer: &'a PhiTokenizer,
        source: &str,
        max_tokens: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let context = model.config().max_position_embeddings;
        if max_tokens == 0 || max_tokens > context {
            return Err(DataError::Invalid(format!(
                "embedding max_tokens {max_tokens}: must be in 1..={context} (the model's context)"
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            identity: EmbedderIdentity::of(model, source, max_tokens)?,
        })
    }

    /// Who embeds.
    pub fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }

    /// The embeddings of `texts`, one batch (`texts.len()` rows), each `dim` values. An empty
    /// text is embedded as the end-of-text token alone.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let eos = self.tokenizer.eos_id().unwrap_or(0);
        let mut rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let mut ids = self
                    .tokenizer
                    .encode(t)
                    .map_err(|e| DataError::Tokenizer(e.to_string()))?;
                ids.truncate(self.identity.max_tokens);
                if ids.is_empty() {
                    ids.push(eos);
                }
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let longest = *lengths.iter().max().unwrap_or(&1);
        for row in &mut rows {
            row.resize(longest, eos);
        }
        let ids = self
            .model
            .ids_tensor(&rows, &self.device)
            .map_err(|e| DataError::Invalid(e.to_string()))?;
        let hidden = self
            .model
            .forward_hidden(ids)
            .map_err(|e| DataError::Invalid(e.to_string()))?;
        let dim = self.identity.dim;
        // Mean over each row's real tokens: a mask of 1/len on them, 0 on the padding.
        let mut weights = vec![0.0f32; rows.len() * longest];
        for (r, &len) in lengths.iter().enumerate() {
            for w in &mut weights[r * longest..r * longest + len] {
                *w = 1.0 / len as f32;
            }
        }
        let mask = Tensor::<B, 1>::from_floats(weights.as_slice(), &self.device).reshape([
            rows.len(),
            longest,
            1,
        ]);
        let pooled = (hidden.cast(burn::tensor::FloatDType::F32) * mask)
            .sum_dim(1)
            .reshape([rows.len(), dim]);
        let values = pooled
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| DataError::Invalid(format!("reading embeddings: {e:?}")))?;
        Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
    }
}

/// One document's entry in the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddedDocument {
    /// Its position in the corpus.
    pub position: u64,
    /// Its hash ([`document_hash`]).
    pub hash: String,
}

/// The sidecar of an embeddings file: who embedded, and which document each row is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingsSidecar {
    /// The embedder.
    pub embedder: EmbedderIdentity,
    /// The corpus read.
    pub corpus: PathBuf,
    /// The shard.
    pub shard: String,
    /// Row `i` of the array is `documents[i]`.
    pub documents: Vec<EmbeddedDocument>,
}

/// Embeddings read back.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The sidecar.
    pub sidecar: EmbeddingsSidecar,
    /// Row-major, `documents × dim`.
    pub values: Vec<f32>,
}

impl Embeddings {
    /// Reads `<stem>.npy` and `<stem>.json`, checking that they agree.
    pub fn read(npy: &Path) -> Result<Self> {
        let json = npy.with_extension("json");
        let text = std::fs::read_to_string(&json).map_err(|e| DataError::io(&json, e))?;
        let sidecar: EmbeddingsSidecar =
            serde_json::from_str(&text).map_err(|e| DataError::corpus(&json, e.to_string()))?;
        let (rows, cols, values) = read_f32_matrix(npy)?;
        if rows != sidecar.documents.len() || cols != sidecar.embedder.dim {
            return Err(DataError::corpus(
                npy,
                format!(
                    "shape ({rows}, {cols}) but the sidecar lists {} documents of width {}",
                    sidecar.documents.len(),
                    sidecar.embedder.dim
                ),
            ));
        }
        Ok(Self { sidecar, values })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let dim = self.sidecar.embedder.dim;
        &self.values[i * dim..(i + 1) * dim]
    }
}

/// What `embed_corpus` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedReport {
    /// The array written.
    pub path: PathBuf,
    /// Documents embedded.
    pub documents: u64,
    /// Documents per second.
    pub documents_per_second: f64,
}

/// The embeddings file of `shard` under `out`.
pub fn embeddings_path(out: &Path, shard: Shard) -> PathBuf {
    out.join(format!("embeddings-{}.npy", shard.file_stem()))
}

/// Embeds `shard` of `corpus` in batches of `batch` documents into `out/embeddings-<shard>.npy`
/// (`documents × dim` f32) and its sidecar `.json`. A shard already written by the same
/// embedder is not redone.
pub fn embed_corpus<B: Backend>(
    embedder: &Embedder<'_, B>,
    corpus: &Corpus,
    out: &Path,
    shard: Shard,
    batch: usize,
) -> Result<EmbedReport> {
    let start = Instant::now();
    let path = embeddings_path(out, shard);
    if path.exists()
        && let Ok(done) = Embeddings::read(&path)
        && done
            .sidecar
            .embedder
            .check_matches(embedder.identity(), "")
            .is_ok()
    {
        return Ok(EmbedReport {
            path,
            documents: done.sidecar.documents.len() as u64,
            documents_per_second: 0.0,
        });
    }
    let mut documents = Vec::new();
    let mut values = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let flush = |pending: &mut Vec<String>, values: &mut Vec<f32>| -> Result<()> {
        for row in embedder.embed(pending)? {
            values.extend(row);
        }
        pending.clear();
        Ok(())
    };
    shard.read(corpus, OnMalformed::Fail, &mut |position, text| {
        documents.push(EmbeddedDocument {
            position,
            hash: document_hash(&text),
        });
        pending.push(text);
        if pending.len() >= batch.max(1) {
            flush(&mut pending, &mut values)?;
        }
        Ok(())
    })?;
    flush(&mut pending, &mut values)?;
    let dim = embedder.identity().dim;
    write_f32_matrix(&path, documents.len(), dim, &values)?;
    let sidecar = EmbeddingsSidecar {
        embedder: embedder.identity().clone(),
        corpus: corpus.path.clone(),
        shard: shard.to_string(),
        documents,
    };
    write_json(path.with_extension("json"), &sidecar)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(EmbedReport {
        path,
        documents: sidecar.documents.len() as u64,
        documents_per_second: sidecar.documents.len() as f64 / seconds,
    })
}
