//! Text as the duplicate and contamination checks compare it: two copies that differ only in
//! case, punctuation, spacing, accents or the digits of a number are the same text. The rules
//! follow the ones datatrove documents for its MinHash stage (lowercase, every number one `0`,
//! punctuation to spaces, whitespace collapsed, diacritics dropped), so that the two find the
//! same clusters.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use xxhash_rust::xxh3::xxh3_64;

/// `text` reduced for comparison: lowercase, diacritics dropped, each number (digits, with one
/// decimal part after `.` or `,`) replaced by `0`, punctuation, symbols of ASCII and control
/// characters turned into spaces, runs of whitespace into one space, no space at either end.
pub fn simplify(text: &str) -> String {
    simplify_with(text, true)
}

/// `simplify`, with numbers folded to `0` or kept digit for digit (`fold_numbers: false`, which
/// decontamination uses: literal values are what tell one test case from another).
pub fn simplify_with(text: &str, fold_numbers: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut chars = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .peekable();
    while let Some(c) = chars.next() {
        if fold_numbers && c.is_numeric() {
            skip_number(&mut chars);
            push_word_char(&mut out, &mut pending_space, '0');
        } else if is_separator(c) {
            pending_space = true;
        } else {
            push_word_char(&mut out, &mut pending_space, c);
        }
    }
    out
}

/// The first `chars` characters of `text` (all of it when shorter).
pub fn first_chars(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The words of `simplify(text)`.
pub fn words(simplified: &str) -> impl Iterator<Item = &str> {
    simplified.split(' ').filter(|w| !w.is_empty())
}

/// Each run of `n` consecutive `words` with its hash (xxh3 of the words joined by single
/// spaces), in order: dedup's shingles and decontamination's n-grams.
pub fn ngram_hashes<'a>(
    words: &'a [&'a str],
    n: usize,
) -> impl Iterator<Item = (&'a [&'a str], u64)> + 'a {
    let mut joined = String::new();
    words.windows(n).map(move |gram| {
        joined.clear();
        for (i, word) in gram.iter().enumerate() {
            if i > 0 {
                joined.push(' ');
            }
            joined.push_str(word);
        }
        (gram, xxh3_64(joined.as_bytes()))
    })
}

fn push_word_char(out: &mut String, pending_space: &mut bool, c: char) {
    if *pending_space && !out.is_empty() {
        out.push(' ');
    }
    *pending_space = false;
    out.push(c);
}

/// Consumes the rest of a number whose first digit was just read: more digits, then at most one
/// decimal separator followed by digits.
fn skip_number(chars: &mut std::iter::Peekable<impl Iterator<Item = char> + Clone>) {
    while chars.peek().is_some_and(|c| c.is_numeric()) {
        chars.next();
    }
    if chars.peek().is_some_and(|c| matches!(c, '.' | ',')) {
        let mut ahead = chars.clone();
        ahead.next();
        if ahead.peek().is_some_and(|c| c.is_numeric()) {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_numeric()) {
                chars.next();
            }
        }
    }
}

/// Whitespace, control characters, ASCII punctuation and symbols, and the punctuation blocks of
/// Unicode (general punctuation, CJK punctuation, full-width ASCII forms, guillemets and the like).
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || c.is_ascii_punctuation()
        || matches!(c,
            '\u{a1}' | '\u{ab}' | '\u{b4}' | '\u{b7}' | '\u{bb}' | '\u{bf}'
            | '\u{2010}'..='\u{2027}'
            | '\u{2030}'..='\u{205e}'
            | '\u{3000}'..='\u{3003}'
            | '\u{3008}'..='\u{3011}'
            | '\u{3014}'..='\u{301f}'
            | '\u{ff01}'..='\u{ff0f}'
            | '\u{ff1a}'..='\u{ff20}'
            | '\u{ff3b}'..='\u{ff40}'
            | '\u{ff5b}'..='\u{ff65}'
            | '\u{25ba}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_punctuation_numbers_accents_and_spaces_fold() {
        assert_eq!(simplify("  Hello,   World!\n"), "hello world");
        assert_eq!(
            simplify("Pi is 3.14 and e is 2,71828."),
            "pi is 0 and e is 0"
        );
        assert_eq!(simplify("1,000,000 items"), "0 0 items");
        assert_eq!(simplify("Café — naïve «déjà vu»"), "cafe naive deja vu");
        assert_eq!(
            simplify("def f(x_1):\n\treturn x_1+2"),
            "def f x 0 return x 0 0"
        );
        assert_eq!(simplify("..."), "");
        assert_eq!(simplify_with("Pi is 3.14", false), "pi is 3 14");
    }

    #[test]
    fn words_split_the_simplified_text() {
        let s = simplify("A  b,c");
        assert_eq!(words(&s).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
