//! The CodeGen-mono tokenizer every Phi model uses (ARCHITECTURE.md §4): GPT-2's byte-level BPE plus
//! whitespace-run tokens, read from a hub `tokenizer.json` or the copy bundled with this crate
//! (built by tools/make_tokenizer.py from GPT-2's MIT-licensed files).

use std::path::Path;

use crate::error::{PhiError, Result};

/// The bundled tokenizer.json (50295 tokens).
static BUNDLED: &[u8] = include_bytes!("../assets/tokenizer.json");

/// `<|endoftext|>`: separates documents and ends generations.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Phi's tokenizer (CodeGen's byte-level BPE), from a tokenizer.json or the bundled copy.
pub struct PhiTokenizer {
    inner: tokenizers::Tokenizer,
    /// Cached: `tokenizers` builds the whole vocabulary map to answer its size.
    len: usize,
}

impl PhiTokenizer {
    /// The copy that ships with phi-zoo, identical in behaviour to the hub's for Phi.
    pub fn bundled() -> Self {
        let inner =
            tokenizers::Tokenizer::from_bytes(BUNDLED).expect("the bundled tokenizer.json parses");
        Self::new(inner)
    }

    fn new(inner: tokenizers::Tokenizer) -> Self {
        let len = inner.get_vocab_size(true);
        Self { inner, len }
    }

    /// The bundled tokenizer's length (50295), without loading it.
    pub const fn bundled_len() -> usize {
        50295
    }

    /// Reads a tokenizer.json.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| PhiError::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| PhiError::Config {
            origin: path.display().to_string(),
            field: "(file)".into(),
            message: format!("not a usable tokenizer.json: {e}"),
        })?;
        Ok(Self::new(inner))
    }

    /// A tokenizer from tokenizer.json text (`origin` names where it came from in errors).
    pub fn from_json(json: &str, origin: &str) -> Result<Self> {
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| PhiError::Config {
                origin: origin.to_owned(),
                field: "(tokenizer)".into(),
                message: format!("not a usable tokenizer: {e}"),
            })?;
        Ok(Self::new(inner))
    }

    /// The folder's tokenizer.json, if it has one.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = dir.as_ref().join("tokenizer.json");
        if path.is_file() {
            Self::from_file(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The tokenizer of a model: the `tokenizer.json` in its folder, else the bundled one when the
    /// model has Phi's vocabulary (every Phi uses CodeGen's), else none (some other, test-sized
    /// model, which then takes and gives token ids). The one rule every program applies.
    pub fn for_model(dir: impl AsRef<Path>, vocab_size: usize) -> Result<Option<Self>> {
        Ok(match Self::from_model_dir(dir)? {
            Some(tokenizer) => Some(tokenizer),
            None if vocab_size >= Self::bundled_len() => Some(Self::bundled()),
            None => None,
        })
    }

    /// Token ids for `text`; no BOS is prepended (Phi has none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| PhiError::Input(format!("cannot tokenize: {e}")))
    }

    /// Text for `ids`, special tokens included; invalid UTF-8 (a character split across the end
    /// of `ids`) shows as U+FFFD. Ids the vocabulary lacks are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.len) {
            return Err(PhiError::Input(format!(
                "id {bad} is outside the tokenizer's {} tokens",
                self.len()
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| PhiError::Input(format!("cannot decode: {e}")))
    }

    /// Tokens the tokenizer knows, added ones included (50295 for Phi; the model pads to 51200).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a tokenizer with no vocabulary.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of `<|endoftext|>`.
    pub fn eos_id(&self) -> Option<u32> {
        self.token_to_id(END_OF_TEXT)
    }

    /// The tokenizer as canonical tokenizer.json text: two tokenizers that tokenize alike give the
    /// same text, whatever the formatting of the files they came from (token stores keep its hash).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| PhiError::Input(format!("cannot serialise the tokenizer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_from_the_spec() {
        let t = PhiTokenizer::bundled();
        assert_eq!(t.len(), PhiTokenizer::bundled_len());
        assert_eq!(t.eos_id(), Some(50256));
        assert_eq!(t.encode("Hello world").unwrap(), [15496, 995]);
        assert_eq!(t.encode(" the").unwrap(), [262]);
        assert_eq!(t.encode("    return x").unwrap(), [50284, 7783, 2124]);
        assert_eq!(t.encode(&" ".repeat(32)).unwrap(), [50257, 220]);
        assert_eq!(t.encode("<|endoftext|>").unwrap(), [50256]);
    }

    #[test]
    fn whitespace_runs_use_the_added_tokens() {
        let t = PhiTokenizer::bundled();
        for n in 2..=31 {
            assert_eq!(
                t.encode(&" ".repeat(n)).unwrap(),
                [50257 + 31 - n as u32],
                "{n} spaces"
            );
        }
        for n in 2..=9 {
            assert_eq!(
                t.encode(&"\t".repeat(n)).unwrap(),
                [50287 + 9 - n as u32],
                "{n} tabs"
            );
        }
    }

    #[test]
    fn decode_inverts_encode() {
        let t = PhiTokenizer::bundled();
        for text in [
            "def f(x):\n    return x * 2\n",
            "\t\tindented\twith tabs",
            "Ünïcödé — 中文 🦀 emoji",
            "Instruct: Write a poem.\nOutput:",
            "trailing spaces   \n\n<|endoftext|>next",
        ] {
            let ids = t.encode(text).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), text);
        }
        assert!(matches!(t.decode(&[50295]), Err(PhiError::Input(_))));
    }

    #[test]
    fn a_broken_tokenizer_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{\"model\": 3}").unwrap();
        match PhiTokenizer::from_model_dir(dir.path()) {
            Err(PhiError::Config { origin, .. }) => assert_eq!(origin, path.display().to_string()),
            other => panic!("{:?}", other.map(|t| t.map(|t| t.len()))),
        }
        assert!(
            PhiTokenizer::from_model_dir(tempfile::tempdir().unwrap().path())
                .unwrap()
                .is_none()
        );
    }
}
