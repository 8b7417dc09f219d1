//! Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p and
//! min-p, after a repetition penalty, applied in transformers' order. Runs on the host over one
//! row of f32 logits, so every backend samples identically from the same seed.

/// How to pick among the candidates once the logits are processed.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Logits are divided by this; must be > 0.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability sums to at least p.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` × the most likely one's probability.
    pub min_p: Option<f32>,
}

/// Picks tokens one at a time; owns the random state, so a seed reproduces a whole generation.
#[derive(Clone, Debug)]
pub struct TokenPicker {
    /// `None`: greedy (argmax; the first of equal maxima, as `torch.argmax`).
    sampling: Option<Sampling>,
    /// 1.0 is off; > 1 discourages tokens already seen (CTRL's rule, as transformers applies it).
    repetition_penalty: f32,
    /// Ids at or above this are never picked (the untrained padding of the vocabulary).
    vocab_limit: Option<usize>,
    rng: SplitMix64,
}

impl TokenPicker {
    /// A picker for `sampling` (greedy when `None`) with `repetition_penalty` over the tokens
    /// seen, never picking ids at or above `vocab_limit`, seeded with `seed`.
    pub fn new(
        sampling: Option<Sampling>,
        repetition_penalty: f32,
        vocab_limit: Option<usize>,
        seed: u64,
    ) -> Self {
        Self {
            sampling,
            repetition_penalty,
            vocab_limit,
            rng: SplitMix64(seed),
        }
    }

    /// Checks the settings; names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        if let Some(s) = &self.sampling {
            if !(s.temperature.is_finite() && s.temperature > 0.0) {
                return Err(format!(
                    "temperature {} must be > 0 (use greedy for 0)",
                    s.temperature
                ));
            }
            if s.top_k == Some(0) {
                return Err("top_k must be at least 1".into());
            }
            if let Some(p) = s.top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(format!("top_p {p} must be in (0, 1]"));
            }
            if let Some(p) = s.min_p
                && !(0.0..=1.0).contains(&p)
            {
                return Err(format!("min_p {p} must be in [0, 1]"));
            }
        }
        if self.vocab_limit == Some(0) {
            return Err("vocab_limit must leave at least one token".into());
        }
        Ok(())
    }

    /// The next token given this step's logits (modified in place) and every token so far.
    pub fn pick(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if let Some(limit) = self.vocab_limit {
            logits
                .iter_mut()
                .skip(limit)
                .for_each(|l| *l = f32::NEG_INFINITY);
        }
        if self.repetition_penalty != 1.0 {
            for id in seen(history) {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = self.penalised(*l);
                }
            }
        }
        self.choose(logits, None)
            .expect("the whole vocabulary always decides") as u32
    }

    /// The repetition penalty (1.0: none).
    pub fn repetition_penalty(&self) -> f32 {
        self.repetition_penalty
    }

    /// What this picker must see of a step's logits over a `vocab`-wide vocabulary, given every
    /// token so far: every logit, or only the highest ones and those of the tokens seen.
    pub fn need(&self, history: &[u32], vocab: usize) -> Need {
        let limit = self.vocab_limit.unwrap_or(vocab).min(vocab);
        let seen = if self.repetition_penalty == 1.0 {
            Vec::new()
        } else {
            seen(history)
                .into_iter()
                .filter(|&id| (id as usize) < limit)
                .collect()
        };
        let kept = match &self.sampling {
            None => 1,
            Some(Sampling { top_k: Some(k), .. }) => *k,
            // Sampling over the whole distribution needs all of it.
            Some(_) => return Need::All,
        };
        // The chosen token is among the `kept` highest after the penalty; one more bounds every
        // logit not read.
        if kept + seen.len() + 1 >= limit.min(MAX_CANDIDATES) {
            return Need::All;
        }
        Need::Candidates { kept, limit, seen }
    }

    /// The next token from a step's candidates: `(id, raw logit)` pairs (any order, no id
    /// twice, ids below the vocabulary limit), at least `kept + 1` of them and every seen token
    /// `need` asked for among them, where every logit not among them is an unseen token's and
    /// at most `bound`. The same token,
    /// and the same random draw, as [`pick`](Self::pick) over the whole row, bit for bit; `None`
    /// (nothing drawn) when a logit not read could tie with the candidates, so the caller reads
    /// the whole row and calls `pick`.
    pub fn pick_candidates(
        &mut self,
        candidates: &mut [(u32, f32)],
        bound: f32,
        history: &[u32],
    ) -> Option<u32> {
        // In id order, as `pick` walks the row: its sums and first-of-equals follow that order.
        candidates.sort_unstable_by_key(|&(id, _)| id);
        if self.repetition_penalty != 1.0 {
            let seen = seen(history);
            for (id, l) in candidates.iter_mut() {
                if seen.binary_search(id).is_ok() {
                    *l = self.penalised(*l);
                }
            }
        }
        let mut values: Vec<f32> = candidates.iter().map(|&(_, l)| l).collect();
        let chosen = self.choose(&mut values, Some(bound))?;
        Some(candidates[chosen].0)
    }

    /// CTRL's rule, as transformers applies it: a positive logit divided, a negative one
    /// multiplied.
    fn penalised(&self, l: f32) -> f32 {
        if l < 0.0 {
            l * self.repetition_penalty
        } else {
            l / self.repetition_penalty
        }
    }

    /// The index chosen among `logits` (penalised and limited; modified in place). With a
    /// `bound`, `logits` are some of a row's and every other one is at most `bound` (none of
    /// them penalised): `None` unless those others cannot be chosen (they fall below the
    /// greedy maximum or the top-k cut, strictly), decided before anything is drawn. Zero
    /// probabilities add nothing to the sums, so the result is the whole row's.
    fn choose(&mut self, logits: &mut [f32], bound: Option<f32>) -> Option<usize> {
        let Some(sampling) = self.sampling.clone() else {
            let best = argmax(logits);
            return match bound {
                Some(bound) if logits[best] <= bound => None,
                _ => Some(best),
            };
        };
        logits.iter_mut().for_each(|l| *l /= sampling.temperature);
        if let Some(k) = sampling.top_k
            && k < logits.len()
        {
            let mut sorted: Vec<f32> = logits.to_vec();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            if let Some(bound) = bound
                && kth <= bound / sampling.temperature
            {
                return None;
            }
            logits
                .iter_mut()
                .filter(|l| **l < kth)
                .for_each(|l| *l = f32::NEG_INFINITY);
        } else if bound.is_some() {
            return None;
        }
        let mut probs = softmax(logits);
        if let Some(p) = sampling.top_p {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let mut cumulative = 0.0;
            let mut keep = order.len();
            for (rank, &i) in order.iter().enumerate() {
                cumulative += probs[i];
                if cumulative >= p {
                    keep = rank + 1;
                    break;
                }
            }
            order[keep..].iter().for_each(|&i| probs[i] = 0.0);
        }
        if let Some(min_p) = sampling.min_p {
            let top = probs.iter().copied().fold(0.0, f32::max);
            probs
                .iter_mut()
                .filter(|q| **q < min_p * top)
                .for_each(|q| *q = 0.0);
        }
        Some(self.draw(&probs))
    }

    /// A draw from unnormalised probabilities by inverse CDF: an index into `weights`.
    fn draw(&mut self, weights: &[f32]) -> usize {
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let target = self.rng.next_f64() * total;
        let mut cumulative = 0.0;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                cumulative += w as f64;
                last = i;
                if cumulative > target {
                    return i;
                }
            }
        }
        last
    }
}

fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The distinct tokens of `history`, in id order.
fn seen(history: &[u32]) -> Vec<u32> {
    let mut seen = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// Candidates read back per row at most; a picker that needs more reads the whole row.
const MAX_CANDIDATES: usize = 256;

/// What a picker must see of a step's logits (`TokenPicker::need`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Every logit.
    All,
    /// More than `kept` of the highest logits after the penalty, of ids below `limit` (with
    /// their ids), and the logits of the `seen` ids (distinct, each below `limit`, in id order).
    Candidates {
        /// How many tokens can be chosen among at most: 1 (greedy) or top-k's k.
        kept: usize,
        /// Ids from here on are never chosen.
        limit: usize,
        /// Ids whose logits the repetition penalty changes.
        seen: Vec<u32>,
    },
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A small, fast, seedable generator (Steele, Lea & Flood's SplitMix64): reproducible everywhere,
/// with no dependency whose stream could change between versions.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(s: Sampling, seed: u64) -> TokenPicker {
        TokenPicker::new(Some(s), 1.0, None, seed)
    }

    fn plain(temperature: f32) -> Sampling {
        Sampling {
            temperature,
            top_k: None,
            top_p: None,
            min_p: None,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut picker = TokenPicker::new(None, 1.0, None, 0);
        assert_eq!(picker.pick(&mut [0.0, 3.0, 1.0, 3.0], &[]), 1);
    }

    #[test]
    fn padded_ids_are_never_picked() {
        let mut picker = TokenPicker::new(None, 1.0, Some(2), 0);
        assert_eq!(picker.pick(&mut [0.0, 1.0, 9.0], &[]), 1);
        let mut picker = TokenPicker::new(Some(plain(5.0)), 1.0, Some(2), 3);
        for _ in 0..200 {
            assert!(picker.pick(&mut [0.0, 1.0, 9.0], &[]) < 2);
        }
    }

    #[test]
    fn repetition_penalty_follows_the_sign() {
        let mut picker = TokenPicker::new(None, 2.0, None, 0);
        // 4/2 = 2 < 3, and the negative logit is pushed further down.
        assert_eq!(picker.pick(&mut [4.0, 3.0, -1.0], &[0, 0, 2]), 1);
        let mut logits = [4.0, 3.0, -1.0];
        picker.pick(&mut logits, &[0, 2]);
        assert_eq!(logits, [2.0, 3.0, -2.0]);
    }

    #[test]
    fn top_k_top_p_and_min_p_restrict_the_candidates() {
        // Probabilities 0.478, 0.433, 0.065, 0.024, 0.0004.
        let logits = [2.0, 1.9, 0.0, -1.0, -5.0];
        for (s, allowed) in [
            (
                Sampling {
                    top_k: Some(2),
                    ..plain(1.0)
                },
                vec![0, 1],
            ),
            (
                Sampling {
                    top_p: Some(0.4),
                    ..plain(1.0)
                },
                vec![0],
            ),
            (
                Sampling {
                    top_p: Some(0.8),
                    ..plain(1.0)
                },
                vec![0, 1],
            ),
            (
                Sampling {
                    min_p: Some(0.1),
                    ..plain(1.0)
                },
                vec![0, 1, 2],
            ),
        ] {
            let mut picker = sampler(s.clone(), 11);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..400 {
                seen.insert(picker.pick(&mut logits.clone(), &[]));
            }
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), allowed, "{s:?}");
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let mut picker = sampler(plain(1.0), 5);
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4 and 3/4
        let ones = (0..20_000)
            .filter(|_| picker.pick(&mut logits.clone(), &[]) == 1)
            .count();
        let share = ones as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.015, "{share}");
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let draws = |seed| {
            let mut picker = sampler(
                Sampling {
                    top_k: Some(4),
                    ..plain(0.8)
                },
                seed,
            );
            (0..50)
                .map(|i| picker.pick(&mut [0.1, 0.2, 0.3, 0.4, 0.5, i as f32 * 0.01], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
    }

    #[test]
    fn settings_are_checked() {
        assert!(sampler(plain(0.0), 0).validate().is_err());
        assert!(
            sampler(
                Sampling {
                    top_p: Some(1.5),
                    ..plain(1.0)
                },
                0
            )
            .validate()
            .is_err()
        );
        assert!(
            sampler(
                Sampling {
                    top_k: Some(0),
                    ..plain(1.0)
                },
                0
            )
            .validate()
            .is_err()
        );
        assert!(TokenPicker::new(None, 0.0, None, 0).validate().is_err());
        assert!(sampler(plain(0.7), 0).validate().is_ok());
    }
}
