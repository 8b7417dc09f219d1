//! Token stores: a corpus tokenized once, on disk as one flat little-endian token file that is
//! memory-mapped for reading, plus a small JSON header that says what it holds.
//!
//! A store is a folder (`tokens.bin`, `header.json`). It is written under `<name>.partial` and
//! renamed at the end, so an interrupted write never leaves a folder that looks complete; opening
//! checks the header and that the token file has exactly the size the header promises.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

const FORMAT: &str = "phi-zoo-token-store";
const VERSION: u32 = 1;
const TOKENS_FILE: &str = "tokens.bin";
const HEADER_FILE: &str = "header.json";

/// Bytes per stored token: u16 whenever the vocabulary fits (Phi's 50295 tokens do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    /// Two bytes per token (vocabularies up to 65,536).
    U16,
    /// Four bytes per token.
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            Self::U16
        } else {
            Self::U32
        }
    }

    /// Bytes per token.
    pub fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// `header.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHeader {
    /// The format's name.
    pub format: String,
    /// The format's version.
    pub version: u32,
    /// Bytes per token on disk.
    pub token_width: TokenWidth,
    /// sha256 of the tokenizer's canonical JSON (`PhiTokenizer::to_json`).
    pub tokenizer_sha256: String,
    /// The tokenizer's vocabulary size.
    pub vocab_size: usize,
    /// The id appended after every document.
    pub eos_id: u32,
    /// Documents stored.
    pub documents: u64,
    /// Tokens stored (an end-of-text token after each document included).
    pub tokens: u64,
    /// The files the documents came from, in order.
    pub sources: Vec<String>,
    /// Malformed records skipped while reading the sources.
    pub skipped: u64,
}

/// A finished store, memory-mapped.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    header: StoreHeader,
    map: Option<Mmap>,
}

impl TokenStore {
    /// Opens the store in folder `dir`, checking its header and the token file's size.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let header_path = dir.join(HEADER_FILE);
        let text = std::fs::read_to_string(&header_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::store(
                    dir,
                    "no header.json: not a token store, or an unfinished one",
                )
            } else {
                DataError::io(&header_path, e)
            }
        })?;
        let header: StoreHeader = serde_json::from_str(&text)
            .map_err(|e| DataError::store(dir, format!("header.json is malformed: {e}")))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(DataError::store(
                dir,
                format!(
                    "header.json describes {:?} version {}, not {FORMAT:?} version {VERSION}",
                    header.format, header.version
                ),
            ));
        }
        let tokens_path = dir.join(TOKENS_FILE);
        let file = File::open(&tokens_path).map_err(|e| DataError::io(&tokens_path, e))?;
        let size = file
            .metadata()
            .map_err(|e| DataError::io(&tokens_path, e))?
            .len();
        let expected = header.tokens * header.token_width.bytes() as u64;
        if size != expected {
            return Err(DataError::store(
                dir,
                format!(
                    "tokens.bin has {size} bytes but the header promises {} tokens of {} bytes \
                     ({expected} bytes): the store is truncated or corrupt",
                    header.tokens,
                    header.token_width.bytes()
                ),
            ));
        }
        // An empty file cannot be mapped on every platform, and holds nothing to read anyway.
        let map = if size == 0 {
            None
        } else {
            // SAFETY: the store is immutable once renamed into place; phi-zoo never writes to a
            // finished store, so the mapping is not modified while it is read.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(&tokens_path, e))?)
        };
        Ok(Self {
            path: dir.to_path_buf(),
            header,
            map,
        })
    }

    /// Opens a store and checks it was made with the tokenizer whose hash is `tokenizer_sha256`.
    pub fn open_for(dir: impl AsRef<Path>, tokenizer_sha256: &str) -> Result<Self> {
        let store = Self::open(dir)?;
        if store.header.tokenizer_sha256 != tokenizer_sha256 {
            return Err(DataError::store(
                &store.path,
                format!(
                    "made with tokenizer {} but this run uses {tokenizer_sha256}",
                    store.header.tokenizer_sha256
                ),
            ));
        }
        Ok(store)
    }

    /// The store's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's header.
    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    /// Tokens stored, EOS separators included.
    pub fn len(&self) -> u64 {
        self.header.tokens
    }

    /// True for a store with no tokens.
    pub fn is_empty(&self) -> bool {
        self.header.tokens == 0
    }

    /// Appends tokens `range` to `out`.
    pub fn read_into(&self, range: Range<u64>, out: &mut Vec<u32>) -> Result<()> {
        if range.start > range.end || range.end > self.len() {
            return Err(DataError::Invalid(format!(
                "tokens {range:?} requested from {}, which holds {}",
                self.path.display(),
                self.len()
            )));
        }
        let width = self.header.token_width.bytes();
        let bytes = match &self.map {
            Some(map) => &map[range.start as usize * width..range.end as usize * width],
            None => &[],
        };
        match self.header.token_width {
            TokenWidth::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            ),
            TokenWidth::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
        Ok(())
    }

    /// Non-overlapping windows of `seq_len + 1` tokens (inputs and the targets one to the right).
    pub fn num_windows(&self, seq_len: usize) -> u64 {
        self.len() / (seq_len as u64 + 1)
    }

    /// Window `index` of `seq_len + 1` tokens: tokens `index·(seq_len+1) ..` of the stream.
    pub fn window(&self, index: u64, seq_len: usize) -> Result<Vec<u32>> {
        let count = self.num_windows(seq_len);
        if index >= count {
            return Err(DataError::Invalid(format!(
                "window {index} of {} tokens requested from {}, which has {count}",
                seq_len + 1,
                self.path.display()
            )));
        }
        let width = seq_len as u64 + 1;
        let mut out = Vec::with_capacity(seq_len + 1);
        self.read_into(index * width..(index + 1) * width, &mut out)?;
        Ok(out)
    }
}

/// Writes a store: tokens are appended to `<dir>.partial/tokens.bin`; `finish` writes the header
/// and renames the folder into place.
pub struct StoreWriter {
    dir: PathBuf,
    partial: PathBuf,
    tokens: BufWriter<File>,
    width: TokenWidth,
    eos_id: u32,
    vocab_size: usize,
    token_count: u64,
    documents: u64,
}

impl StoreWriter {
    /// Starts a store at `dir` for a vocabulary of `vocab_size` tokens, `eos_id` after each
    /// document. A leftover `<dir>.partial` from an interrupted run is removed first.
    pub fn create(dir: impl AsRef<Path>, vocab_size: usize, eos_id: u32) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let partial = partial_path(&dir);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| DataError::io(&partial, e))?;
        let tokens_path = partial.join(TOKENS_FILE);
        let file = File::create(&tokens_path).map_err(|e| DataError::io(&tokens_path, e))?;
        Ok(Self {
            dir,
            partial,
            tokens: BufWriter::with_capacity(1 << 20, file),
            width: TokenWidth::for_vocab(vocab_size),
            eos_id,
            vocab_size,
            token_count: 0,
            documents: 0,
        })
    }

    /// Appends one document's tokens and the EOS after them.
    pub fn push_document(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids.iter().chain(std::iter::once(&self.eos_id)) {
            if id as usize >= self.vocab_size {
                return Err(DataError::Invalid(format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    self.vocab_size
                )));
            }
            let written = match self.width {
                TokenWidth::U16 => self.tokens.write_all(&(id as u16).to_le_bytes()),
                TokenWidth::U32 => self.tokens.write_all(&id.to_le_bytes()),
            };
            written.map_err(|e| DataError::io(self.partial.join(TOKENS_FILE), e))?;
        }
        self.token_count += ids.len() as u64 + 1;
        self.documents += 1;
        Ok(())
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.token_count
    }

    /// Documents written so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Flushes the tokens, writes the header, and moves the store into place (replacing an older
    /// store at the same path only once the new one is complete).
    pub fn finish(
        self,
        tokenizer_sha256: String,
        sources: Vec<String>,
        skipped: u64,
    ) -> Result<StoreHeader> {
        let tokens_path = self.partial.join(TOKENS_FILE);
        let file = self
            .tokens
            .into_inner()
            .map_err(|e| DataError::io(&tokens_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io(&tokens_path, e))?;
        let header = StoreHeader {
            format: FORMAT.into(),
            version: VERSION,
            token_width: self.width,
            tokenizer_sha256,
            vocab_size: self.vocab_size,
            eos_id: self.eos_id,
            documents: self.documents,
            tokens: self.token_count,
            sources,
            skipped,
        };
        let header_path = self.partial.join(HEADER_FILE);
        let text = serde_json::to_string_pretty(&header).expect("the header serialises");
        std::fs::write(&header_path, text).map_err(|e| DataError::io(&header_path, e))?;
        if self.dir.exists() {
            let old = sibling(&self.dir, ".replaced");
            std::fs::rename(&self.dir, &old).map_err(|e| DataError::io(&self.dir, e))?;
            std::fs::rename(&self.partial, &self.dir).map_err(|e| DataError::io(&self.dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
        } else {
            std::fs::rename(&self.partial, &self.dir).map_err(|e| DataError::io(&self.dir, e))?;
        }
        Ok(header)
    }
}

fn partial_path(dir: &Path) -> PathBuf {
    sibling(dir, ".partial")
}

/// `dir` with `suffix` added to its last component.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}
