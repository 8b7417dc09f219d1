//! Weighted mixtures of token stores, as the papers train (phi-1.5: 20% code, 80% synthetic
//! textbooks).
//!
//! Sample `i` of a mixture is a pure function of (weights, seed, `i`): which source it comes from
//! follows a fixed periodic schedule, and which window of that source a per-pass permutation. So
//! training resumes from the step alone, and any sample can be computed without the ones before it.
//!
//! The schedule is smooth weighted round robin over the weights as small integers (`1:4` for
//! 20/80), repeated with period `Σ weights`. From the start of the stream, each source's count
//! after `N` samples is within one sample of `weight × N`; over any span of `N` samples it is within
//! one for two sources and for the named recipes, and under two in general (exactness over every
//! span is impossible for most weight triples).

use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::permutation::{Permutation, mix};
use crate::store::TokenStore;

/// Weights are rounded to integers out of this (after normalising), then reduced.
const WEIGHT_RESOLUTION: u64 = 10_000;

/// The papers' mixtures by name: (source name, weight).
pub fn named_mixture(name: &str) -> Option<&'static [(&'static str, f64)]> {
    match name {
        // phi-1 trained on its two corpora as they came, about 6B code tokens to under 1B of
        // synthetic textbooks; the paper gives no weights, so these are the corpora's proportions.
        "phi-1" => Some(&[("code", 0.86), ("synthetic", 0.14)]),
        "phi-1.5" | "phi-1_5" => Some(&[("code", 0.2), ("synthetic", 0.8)]),
        "phi-1.5-web" | "phi-1_5-web" => Some(&[("code", 0.2), ("web", 0.4), ("synthetic", 0.4)]),
        _ => None,
    }
}

/// One source of a mixture.
#[derive(Debug, Clone)]
pub struct MixtureSource {
    pub name: String,
    pub store: Arc<TokenStore>,
    pub weight: f64,
}

/// Where sample `i` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleLocation {
    /// Index into the mixture's sources.
    pub source: usize,
    /// Window of that source's store.
    pub window: u64,
    /// How many times the source had been used up before this sample (its epoch).
    pub pass: u64,
}

#[derive(Debug, Clone)]
pub struct Mixture {
    sources: Vec<MixtureSource>,
    seq_len: usize,
    seed: u64,
    /// Integer weights; their sum is the schedule's period.
    shares: Vec<u64>,
    /// For each position of one period: the source, and how many times that source came before
    /// it in the period.
    schedule: Vec<(usize, u64)>,
    windows: Vec<u64>,
}

impl Mixture {
    pub fn new(sources: Vec<MixtureSource>, seq_len: usize, seed: u64) -> Result<Self> {
        if sources.is_empty() {
            return Err(DataError::Invalid(
                "a mixture needs at least one source".into(),
            ));
        }
        if seq_len == 0 {
            return Err(DataError::Invalid("seq_len must be at least 1".into()));
        }
        let mut windows = Vec::with_capacity(sources.len());
        for source in &sources {
            if !(source.weight.is_finite() && source.weight > 0.0) {
                return Err(DataError::Invalid(format!(
                    "source `{}`: weight {} is not a positive number",
                    source.name, source.weight
                )));
            }
            let count = source.store.num_windows(seq_len);
            if count == 0 {
                return Err(DataError::Invalid(format!(
                    "source `{}` ({}) holds {} tokens, fewer than one window of {}",
                    source.name,
                    source.store.path().display(),
                    source.store.len(),
                    seq_len + 1
                )));
            }
            windows.push(count);
        }
        let shares = integer_shares(&sources.iter().map(|s| s.weight).collect::<Vec<_>>());
        let schedule = smooth_round_robin(&shares);
        Ok(Self {
            sources,
            seq_len,
            seed,
            shares,
            schedule,
            windows,
        })
    }

    pub fn sources(&self) -> &[MixtureSource] {
        &self.sources
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The weights as used: each source's share of a period.
    pub fn effective_weights(&self) -> Vec<f64> {
        let period = self.schedule.len() as f64;
        self.shares.iter().map(|&s| s as f64 / period).collect()
    }

    /// Windows of `seq_len + 1` tokens in each source.
    pub fn windows(&self) -> &[u64] {
        &self.windows
    }

    /// Where sample `index` comes from.
    pub fn locate(&self, index: u64) -> SampleLocation {
        let period = self.schedule.len() as u64;
        let (cycle, position) = (index / period, (index % period) as usize);
        let (source, rank) = self.schedule[position];
        // This is the source's k-th sample since the start of the stream.
        let k = cycle * self.shares[source] + rank;
        let count = self.windows[source];
        let (pass, within) = (k / count, k % count);
        let key = mix(self.seed ^ mix(source as u64 ^ mix(pass)));
        SampleLocation {
            source,
            window: Permutation::new(count, key).apply(within),
            pass,
        }
    }

    /// The `seq_len + 1` tokens of sample `index`.
    pub fn get(&self, index: u64) -> Result<Vec<u32>> {
        let at = self.locate(index);
        self.sources[at.source]
            .store
            .window(at.window, self.seq_len)
    }
}

/// `weights` as small integers in the same proportions (to 1 part in 10 000), reduced by their
/// greatest common divisor; every source keeps at least 1.
fn integer_shares(weights: &[f64]) -> Vec<u64> {
    let total: f64 = weights.iter().sum();
    let shares: Vec<u64> = weights
        .iter()
        .map(|w| ((w / total * WEIGHT_RESOLUTION as f64).round() as u64).max(1))
        .collect();
    let divisor = shares.iter().copied().fold(0, gcd);
    shares.into_iter().map(|s| s / divisor).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One period of smooth weighted round robin: each step every source gains its share, the source
/// with the most credit (first on ties) is chosen and pays the period back. Returns, per position,
/// the source and its count so far in the period.
fn smooth_round_robin(shares: &[u64]) -> Vec<(usize, u64)> {
    let period: u64 = shares.iter().sum();
    let mut credit = vec![0i64; shares.len()];
    let mut used = vec![0u64; shares.len()];
    let mut schedule = Vec::with_capacity(period as usize);
    for _ in 0..period {
        for (c, &s) in credit.iter_mut().zip(shares) {
            *c += s as i64;
        }
        let chosen = (0..shares.len())
            .max_by_key(|&j| (credit[j], std::cmp::Reverse(j)))
            .expect("at least one source");
        credit[chosen] -= period as i64;
        schedule.push((chosen, used[chosen]));
        used[chosen] += 1;
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_reduced_integers() {
        assert_eq!(integer_shares(&[0.2, 0.8]), vec![1, 4]);
        assert_eq!(integer_shares(&[0.2, 0.4, 0.4]), vec![1, 2, 2]);
        assert_eq!(integer_shares(&[1.0, 1.0, 1.0]), vec![1, 1, 1]);
        assert_eq!(integer_shares(&[3.0, 7.0]), vec![3, 7]);
    }

    #[test]
    fn one_period_uses_each_source_its_share() {
        for shares in [vec![1, 4], vec![1, 2, 2], vec![5, 3, 2], vec![13, 29, 58]] {
            let schedule = smooth_round_robin(&shares);
            for (j, &s) in shares.iter().enumerate() {
                assert_eq!(
                    schedule.iter().filter(|(src, _)| *src == j).count() as u64,
                    s
                );
            }
        }
    }
}
