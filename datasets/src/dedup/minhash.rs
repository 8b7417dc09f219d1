//! MinHash signatures and their LSH bands. A document's shingles are its word n-grams (of the
//! simplified text), each hashed to 64 bits; the signature keeps, for each of `bands × rows`
//! random permutations `h ↦ (a·h + b) mod p` (p = 2^61 − 1), the smallest permuted shingle. Two
//! documents agree on one signature entry with probability equal to their shingle sets' Jaccard
//! similarity, so they share a whole band of `rows` entries with probability `J^rows`, and at
//! least one of `bands` bands with `1 − (1 − J^rows)^bands`: with 14 × 8, 0.92 at J = 0.8 and
//! 0.03 at J = 0.5.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{DataError, Result};
use crate::permutation::mix;
use crate::text_norm::{ngram_hashes, simplify_with, words};

/// The Mersenne prime 2^61 − 1: permutations are taken modulo it, reduction is two folds.
const MERSENNE_61: u64 = (1 << 61) - 1;

/// How documents are shingled and banded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinHashConfig {
    /// Words per shingle.
    pub ngram: usize,
    /// LSH bands: documents sharing any band are candidates.
    pub bands: usize,
    /// Signature entries per band.
    pub rows: usize,
    /// Seed of the permutations; every shard of a run must use the same.
    pub seed: u64,
    /// Fold every number to `0` before shingling (datatrove's default). Off for corpora whose
    /// documents differ mostly in their numbers (templated exercises), which folding would make
    /// exact copies.
    #[serde(default = "folds_numbers")]
    pub fold_numbers: bool,
}

fn folds_numbers() -> bool {
    true
}

impl Default for MinHashConfig {
    /// Word 5-grams, 14 bands of 8 rows: datatrove's defaults.
    fn default() -> Self {
        Self {
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
            fold_numbers: true,
        }
    }
}

impl MinHashConfig {
    /// Checks that the sizes make sense (the signature stays under 4,096 entries).
    pub fn check(&self) -> Result<()> {
        let fail = |what: String| Err(DataError::Invalid(format!("minhash: {what}")));
        if self.ngram == 0 || self.ngram > 64 {
            return fail(format!("ngram {} must be in 1..=64", self.ngram));
        }
        if self.bands == 0 || self.rows == 0 {
            return fail(format!(
                "bands {} and rows {} must be at least 1",
                self.bands, self.rows
            ));
        }
        if self.bands * self.rows > 4096 {
            return fail(format!(
                "bands × rows = {} permutations; at most 4096",
                self.bands * self.rows
            ));
        }
        Ok(())
    }

    /// The probability that two documents of Jaccard similarity `j` share at least one band.
    pub fn candidate_probability(&self, j: f64) -> f64 {
        1.0 - (1.0 - j.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

/// Computes signatures for one configuration.
#[derive(Debug, Clone)]
pub struct MinHasher {
    config: MinHashConfig,
    /// `(a, b)` of each permutation, `a` in `1..p`, `b` in `0..p`.
    permutations: Vec<(u64, u64)>,
}

impl MinHasher {
    /// The permutations of `config`, drawn from its seed.
    pub fn new(config: MinHashConfig) -> Result<Self> {
        config.check()?;
        let mut state = config.seed;
        let mut below_p = || loop {
            // SplitMix64's stream from the seed; rejection keeps the draw uniform in 0..p.
            let x = mix(state) >> 3;
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            if x < MERSENNE_61 {
                return x;
            }
        };
        let permutations = (0..config.bands * config.rows)
            .map(|_| {
                loop {
                    let a = below_p();
                    if a != 0 {
                        return (a, below_p());
                    }
                }
            })
            .collect();
        Ok(Self {
            config,
            permutations,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MinHashConfig {
        &self.config
    }

    /// `text` simplified as this configuration compares texts.
    pub fn simplify(&self, text: &str) -> String {
        simplify_with(text, self.config.fold_numbers)
    }

    /// The hashed shingles of a simplified text, in order, with repeats.
    pub fn shingles(&self, simplified: &str, out: &mut Vec<u64>) {
        out.clear();
        let words: Vec<&str> = words(simplified).collect();
        out.extend(ngram_hashes(&words, self.config.ngram).map(|(_, hash)| hash));
    }

    /// The set of a text's shingles: what the Jaccard similarity is measured on.
    pub fn shingle_set(&self, text: &str) -> HashSet<u64> {
        let mut shingles = Vec::new();
        self.shingles(&self.simplify(text), &mut shingles);
        shingles.into_iter().collect()
    }

    /// The signature of a text, `bands × rows` entries; `None` for a text with fewer words than
    /// a shingle (it has no shingles, so it can only be an exact duplicate).
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        let mut shingles = Vec::new();
        self.shingles(&self.simplify(text), &mut shingles);
        self.signature_of_shingles(&shingles)
    }

    /// The signature of already hashed shingles.
    pub fn signature_of_shingles(&self, shingles: &[u64]) -> Option<Vec<u64>> {
        if shingles.is_empty() {
            return None;
        }
        let mut signature = vec![u64::MAX; self.permutations.len()];
        for &shingle in shingles {
            for (slot, &(a, b)) in signature.iter_mut().zip(&self.permutations) {
                let permuted = mod_mersenne(u128::from(a) * u128::from(shingle) + u128::from(b));
                if permuted < *slot {
                    *slot = permuted;
                }
            }
        }
        Some(signature)
    }

    /// One key per band: a hash of the band's `rows` entries and its index, so that equal keys
    /// mean equal bands (up to 64-bit collisions) and bands never collide across positions.
    pub fn band_keys(&self, signature: &[u64]) -> Vec<u64> {
        signature
            .chunks(self.config.rows)
            .enumerate()
            .map(|(band, rows)| {
                let mut bytes = Vec::with_capacity(8 * (rows.len() + 1));
                bytes.extend_from_slice(&(band as u64).to_le_bytes());
                for row in rows {
                    bytes.extend_from_slice(&row.to_le_bytes());
                }
                xxh3_64(&bytes)
            })
            .collect()
    }
}

/// `x mod (2^61 − 1)` for `x < 2^125`, by folding the high bits onto the low ones.
fn mod_mersenne(x: u128) -> u64 {
    let p = u128::from(MERSENNE_61);
    let folded = (x & p) + (x >> 61);
    let folded = (folded & p) + (folded >> 61);
    let r = folded as u64;
    if r >= MERSENNE_61 { r - MERSENNE_61 } else { r }
}

/// The exact Jaccard similarity of two shingle sets (1 for two empty sets).
pub fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(b).count();
    shared as f64 / (a.len() + b.len() - shared) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mersenne_reduction_matches_the_remainder() {
        let p = u128::from(MERSENNE_61);
        for x in [
            0u128,
            1,
            p - 1,
            p,
            p + 1,
            2 * p,
            u128::from(u64::MAX) * (p - 1) + (p - 1),
        ] {
            assert_eq!(u128::from(mod_mersenne(x)), x % p, "{x}");
        }
    }

    #[test]
    fn signature_agreement_estimates_jaccard() {
        let hasher = MinHasher::new(MinHashConfig {
            bands: 64,
            rows: 8,
            ..MinHashConfig::default()
        })
        .unwrap();
        let base: Vec<String> = (0..400).map(|i| format!("w{}", i * 7919 % 1000)).collect();
        let mut edited = base.clone();
        for i in (0..400).step_by(10) {
            edited[i] = format!("x{i}");
        }
        let (a, b) = (base.join(" "), edited.join(" "));
        let j = jaccard(&hasher.shingle_set(&a), &hasher.shingle_set(&b));
        let (sa, sb) = (hasher.signature(&a).unwrap(), hasher.signature(&b).unwrap());
        let agree = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / sa.len() as f64;
        assert!((agree - j).abs() < 0.08, "estimate {agree} vs Jaccard {j}");
        assert!(hasher.signature("too few words").is_none());
    }
}
