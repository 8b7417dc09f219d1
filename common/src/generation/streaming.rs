//! Turning generated tokens into text as they come: only whole UTF-8 characters are released
//! (a byte-level token can end mid-character), and text that could be the start of a stop string
//! is held back until it is known not to be one, so a stop string never reaches the reader.

use crate::error::Result;
use crate::tokenizer::PhiTokenizer;

/// A token whose bytes cannot complete a character within this many tokens is released as is
/// (with U+FFFD), so a model producing invalid UTF-8 cannot stall the stream.
const MAX_PENDING_TOKENS: usize = 8;

/// Decodes generated ids to text piece by piece, holding back what could still become a stop string or an incomplete UTF-8 character.
pub struct TextStream<'a> {
    tokenizer: &'a PhiTokenizer,
    stop_strings: Vec<String>,
    /// Tokens whose bytes do not yet end on a character boundary.
    pending: Vec<u32>,
    /// All complete text so far (up to a stop string, once one is found).
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    stopped: bool,
}

/// What one new token gives the reader.
#[derive(Debug, Default, PartialEq)]
pub struct StreamStep {
    /// Text that is safe to show now (possibly empty).
    pub text: String,
    /// A stop string was completed: generation should end; `text` stops before it.
    pub stop: bool,
}

impl<'a> TextStream<'a> {
    /// A stream that stops at any of `stop_strings`.
    pub fn new(tokenizer: &'a PhiTokenizer, stop_strings: Vec<String>) -> Self {
        let stop_strings = stop_strings.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            tokenizer,
            stop_strings,
            pending: Vec::new(),
            text: String::new(),
            released: 0,
            stopped: false,
        }
    }

    /// Adds one generated token.
    pub fn push(&mut self, token: u32) -> Result<StreamStep> {
        if self.stopped {
            return Ok(StreamStep {
                text: String::new(),
                stop: true,
            });
        }
        self.pending.push(token);
        let piece = self.tokenizer.decode(&self.pending)?;
        if piece.ends_with('\u{FFFD}') && self.pending.len() < MAX_PENDING_TOKENS {
            return Ok(StreamStep::default());
        }
        self.pending.clear();
        // A stop string may straddle what was released and the new piece; search from where it could start.
        let longest = self.stop_strings.iter().map(String::len).max().unwrap_or(0);
        let mut search_from = self.text.len().saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1;
        }
        self.text.push_str(&piece);
        let hit = self
            .stop_strings
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|at| search_from + at)
            })
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            self.stopped = true;
            return Ok(StreamStep {
                text: self.release(at),
                stop: true,
            });
        }
        let safe = self.text.len() - self.held_back();
        Ok(StreamStep {
            text: self.release(safe),
            stop: false,
        })
    }

    /// Everything still held back, once generation has ended for another reason.
    pub fn finish(&mut self) -> Result<String> {
        if !self.pending.is_empty() && !self.stopped {
            let piece = self.tokenizer.decode(&self.pending)?;
            self.pending.clear();
            self.text.push_str(&piece);
        }
        Ok(self.release(self.text.len()))
    }

    /// The whole text so far (cut before the stop string, if one was hit).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Length of the longest tail of the text that is a proper prefix of some stop string.
    fn held_back(&self) -> usize {
        let unreleased = &self.text[self.released..];
        let mut longest = 0;
        for stop in &self.stop_strings {
            for (end, _) in stop.char_indices().skip(1) {
                if end <= unreleased.len() && unreleased.ends_with(&stop[..end]) {
                    longest = longest.max(end);
                }
            }
        }
        longest
    }

    fn release(&mut self, up_to: usize) -> String {
        let out = self.text[self.released..up_to].to_owned();
        self.released = up_to;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(text: &str, stops: &[&str]) -> (Vec<String>, String, bool) {
        let tokenizer = PhiTokenizer::bundled();
        let ids = tokenizer.encode(text).unwrap();
        let mut stream = TextStream::new(&tokenizer, stops.iter().map(|s| s.to_string()).collect());
        let mut pieces = Vec::new();
        let mut stopped = false;
        for id in ids {
            let step = stream.push(id).unwrap();
            pieces.push(step.text);
            if step.stop {
                stopped = true;
                break;
            }
        }
        pieces.push(stream.finish().unwrap());
        (pieces, stream.text().to_owned(), stopped)
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let text = "a 🦀 crab, 中文, é, 𝄞 clef";
        let (pieces, whole, stopped) = stream_all(text, &[]);
        assert!(!stopped);
        assert_eq!(pieces.concat(), text);
        assert_eq!(whole, text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }

    #[test]
    fn a_stop_string_ends_the_stream_and_is_not_shown() {
        let (pieces, whole, stopped) =
            stream_all("def f():\n    return 1\ndef g():\n    pass", &["\ndef"]);
        assert!(stopped);
        assert_eq!(whole, "def f():\n    return 1");
        assert_eq!(pieces.concat(), whole);
    }

    #[test]
    fn text_resembling_a_stop_string_is_released_once_it_diverges() {
        let (pieces, whole, stopped) = stream_all("Alice: hi\nAlbert: hello\nBob: yo", &["\nBob:"]);
        assert!(stopped);
        assert_eq!(whole, "Alice: hi\nAlbert: hello");
        assert_eq!(pieces.concat(), whole);
    }
}
