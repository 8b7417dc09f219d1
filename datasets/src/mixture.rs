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

/// One source of a mixture.
#[derive(Debug, Clone)]
pub struct MixtureSource {
    /// The slot it fills (`code`, `synthetic`, …).
    pub name: String,
    /// Its tokens.
    pub store: Arc<TokenStore>,
    /// Its sampling weight (weights are normalised).
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
/// A weighted mixture of token stores, cut into windows of `seq_len + 1` tokens (see the module docs).
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
    /// Index of each source's first window (non-zero for the held-out part of a split).
    first_window: Vec<u64>,
}

impl Mixture {
    /// A mixture of `sources` in windows of `seq_len` (+ 1) tokens, its window order drawn from `seed`.
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
            first_window: vec![0; windows.len()],
            windows,
        })
    }

    /// A training mixture and a validation mixture over the same sources and weights: the last
    /// `held_out` fraction of every source's windows (at least one; its final tokens) goes to
    /// validation only, the rest to training only. The validation mixture draws with `seed + 1`.
    pub fn split_held_out(
        sources: Vec<MixtureSource>,
        seq_len: usize,
        seed: u64,
        held_out: f64,
    ) -> Result<(Self, Self)> {
        if !(held_out > 0.0 && held_out < 1.0) {
            return Err(DataError::Invalid(format!(
                "held-out fraction {held_out} is not between 0 and 1"
            )));
        }
        let mut train = Self::new(sources, seq_len, seed)?;
        let mut valid = train.clone();
        valid.seed = seed.wrapping_add(1);
        for (i, &count) in train.windows.clone().iter().enumerate() {
            if count < 2 {
                return Err(DataError::Invalid(format!(
                    "source `{}` ({}) holds one window of {} tokens: too few to hold any out",
                    train.sources[i].name,
                    train.sources[i].store.path().display(),
                    seq_len + 1
                )));
            }
            let kept = count - ((count as f64 * held_out).round() as u64).clamp(1, count - 1);
            train.windows[i] = kept;
            valid.windows[i] = count - kept;
            valid.first_window[i] = kept;
        }
        Ok((train, valid))
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[MixtureSource] {
        &self.sources
    }

    /// Positions per sample (each sample holds one more token, for the targets).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The seed of its window permutations.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The weights as used: each source's share of a period.
    pub fn effective_weights(&self) -> Vec<f64> {
        let period = self.schedule.len() as f64;
        self.shares.iter().map(|&s| s as f64 / period).collect()
    }

    /// Windows of `seq_len + 1` tokens each source serves.
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
            window: self.first_window[source] + Permutation::new(count, key).apply(within),
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

    #[test]
    fn a_held_out_split_serves_disjoint_windows_of_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let sources: Vec<MixtureSource> = [("a", 50u32, 0.3), ("b", 90, 0.7)]
            .into_iter()
            .map(|(name, tokens, weight)| {
                let path = dir.path().join(name);
                let mut writer = crate::StoreWriter::create(&path, 100, 99).unwrap();
                writer
                    .push_document(&(0..tokens).collect::<Vec<_>>())
                    .unwrap();
                writer.finish("t".into(), vec![], 0).unwrap();
                MixtureSource {
                    name: name.into(),
                    store: Arc::new(TokenStore::open(&path).unwrap()),
                    weight,
                }
            })
            .collect();
        let whole = Mixture::new(sources.clone(), 4, 7).unwrap();
        let (train, valid) = Mixture::split_held_out(sources, 4, 7, 0.2).unwrap();
        for source in 0..2 {
            assert_eq!(
                train.windows()[source] + valid.windows()[source],
                whole.windows()[source]
            );
            assert!(valid.windows()[source] >= 1);
        }
        let windows = |m: &Mixture, source: usize| -> std::collections::BTreeSet<u64> {
            (0..400)
                .map(|i| m.locate(i))
                .filter(|at| at.source == source)
                .map(|at| at.window)
                .collect()
        };
        for source in 0..2 {
            let (t, v) = (windows(&train, source), windows(&valid, source));
            assert_eq!(t.len() as u64, train.windows()[source]);
            assert_eq!(v.len() as u64, valid.windows()[source]);
            assert!(t.iter().all(|w| *w < train.windows()[source]));
            assert!(v.iter().all(|w| *w >= train.windows()[source]));
        }
        assert!(Mixture::split_held_out(vec![], 4, 7, 1.5).is_err());
    }
}
