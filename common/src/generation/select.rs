//! From a step's logits on the device to each row's next token, reading back as little as the
//! rows' pickers need.
//!
//! On a GPU, reading the whole `[rows, vocab]` logits every step costs a transfer of 200 KB a
//! row and a full wait. Most pickers need far less: greedy decoding needs the maximum, top-k
//! sampling the k highest logits, and a repetition penalty also the logits of the tokens seen.
//! Those are gathered on the device (`argtopk` and `gather`) into one small tensor, read once,
//! and the pickers choose among them on the host: the same tokens and the same random draws as
//! from the whole row, bit for bit (`TokenPicker::pick_candidates`), so a seed still gives the
//! same text on every backend. When the candidates cannot decide (a logit outside them ties
//! with the cut) the whole row is read after all. Sampling over the whole distribution (no
//! top-k) and log-probabilities read every logit.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::prelude::*;
use burn::tensor::{DType, FloatDType, IndexingUpdateOp};

use super::sampling::{Need, TokenPicker};
use crate::model::ops;

/// Reads of device memory made by generation, and their bytes, since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostReads {
    /// Tensors read back.
    pub reads: u64,
    /// Bytes read back.
    pub bytes: u64,
}

static READS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The reads so far (benchmarks take differences).
pub fn host_reads() -> HostReads {
    HostReads {
        reads: READS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

/// `t`'s values on the host as f32: the one way generation reads the device, counted.
pub(crate) fn read_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let data = t.into_data();
    READS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(data.as_bytes().len() as u64, Ordering::Relaxed);
    data.iter::<f32>().collect()
}

/// How a step's logits reach the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readback {
    /// Every logit: on the CPU backend a read is a copy, and the host is as fast.
    Whole,
    /// Only the candidates each picker needs, chosen on the device: GPU backends.
    Candidates,
}

impl Readback {
    /// The right one for backend `B`.
    pub fn for_backend<B: Backend>() -> Self {
        if ops::is_cpu::<B>() {
            Self::Whole
        } else {
            Self::Candidates
        }
    }
}

/// One row of a step: its picker, its history (prompt and tokens so far), and whether the
/// caller needs the row's whole logits too (for log-probabilities).
pub struct RowPick<'a> {
    /// Chooses the row's token.
    pub picker: &'a mut TokenPicker,
    /// Every token so far, prompt included.
    pub history: &'a [u32],
    /// Return the row's raw logits as well.
    pub want_logits: bool,
}

/// A row's token, with its raw logits when they were asked for.
pub struct Picked {
    /// The token chosen.
    pub token: u32,
    /// The row's logits before any processing (`RowPick::want_logits`).
    pub logits: Option<Vec<f32>>,
}

/// Picks a token for each row of `logits: [rows.len(), vocab]` (f32), reading back what
/// `readback` allows.
pub fn pick_tokens<B: Backend>(
    logits: Tensor<B, 2>,
    rows: &mut [RowPick<'_>],
    readback: Readback,
) -> Vec<Picked> {
    let vocab = logits.dims()[1];
    let needs: Vec<Need> = rows
        .iter()
        .map(|row| match readback {
            Readback::Candidates if !row.want_logits => row.picker.need(row.history, vocab),
            _ => Need::All,
        })
        .collect();
    if let Some(picked) = pick_from_candidates(logits.clone(), rows, &needs) {
        return picked;
    }
    let values = read_f32(logits);
    rows.iter_mut()
        .zip(values.chunks_exact(vocab))
        .map(|(row, raw)| row.pick(raw))
        .collect()
}

impl RowPick<'_> {
    /// The row's pick from its whole row of logits, already on the host.
    pub fn pick(&mut self, raw: &[f32]) -> Picked {
        let mut processed = raw.to_vec();
        let token = self.picker.pick(&mut processed, self.history);
        Picked {
            token,
            logits: self.want_logits.then(|| raw.to_vec()),
        }
    }
}

/// Rounds a count of seen tokens up, so the gathered tensors keep their shape for many steps
/// while the history grows (each new shape can be a new kernel on a GPU).
const SEEN_BUCKET: usize = 32;

/// The candidates of every row, gathered on the device and read in one transfer, and each
/// row's pick among them; `None` if any row needs the whole logits, nothing drawn then.
///
/// Per row the device ranks the logits after an approximate repetition penalty (GPU division
/// may round differently) and keeps the `kept + 1` highest, with their ids; the raw logits of
/// the seen tokens come along, so the host applies the penalty exactly. Every logit left
/// behind is an unseen token's, untouched by the penalty, and at most the lowest kept value:
/// the bound `pick_candidates` checks the cut against.
fn pick_from_candidates<B: Backend>(
    logits: Tensor<B, 2>,
    rows: &mut [RowPick<'_>],
    needs: &[Need],
) -> Option<Vec<Picked>> {
    let mut limit = None;
    let (mut kept, mut seen_width) = (0, 0);
    let mut seen_lists = Vec::with_capacity(needs.len());
    for need in needs {
        let Need::Candidates {
            kept: k,
            limit: l,
            seen,
        } = need
        else {
            return None;
        };
        // One narrowing for the batch: rows with other limits read everything.
        if *limit.get_or_insert(*l) != *l {
            return None;
        }
        kept = kept.max(*k);
        seen_width = seen_width.max(seen.len());
        seen_lists.push(seen);
    }
    let limit = limit?;
    // One more than can be chosen: the lowest bounds every logit not read.
    let top = kept + 1;
    if top >= limit {
        return None;
    }
    let seen_width = seen_width.div_ceil(SEEN_BUCKET) * SEEN_BUCKET;
    let device = logits.device();
    let batch = rows.len();
    let narrowed = logits.narrow(1, 0, limit);
    let mut seen_raw = None;
    let ranked = if seen_width > 0 {
        // Rows with fewer seen tokens repeat one, with no penalty: one shape for the batch.
        let (mut index, mut real) = (Vec::new(), Vec::new());
        for seen in &seen_lists {
            let fill = seen.first().copied().unwrap_or(0);
            for i in 0..seen_width {
                index.push(seen.get(i).copied().unwrap_or(fill) as i64);
                real.push(if i < seen.len() { 1.0f32 } else { 0.0 });
            }
        }
        let shape = [batch, seen_width];
        let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, shape), &device);
        let real = Tensor::<B, 2>::from_data(TensorData::new(real, shape), (&device, DType::F32));
        let penalty: Vec<f32> = rows.iter().map(|r| r.picker.repetition_penalty()).collect();
        let penalty =
            Tensor::<B, 2>::from_data(TensorData::new(penalty, [batch, 1]), (&device, DType::F32));
        let raw = narrowed.clone().gather(1, index.clone());
        let penalised = (raw.clone() * penalty.clone())
            .mask_where(raw.clone().greater_equal_elem(0.0), raw.clone() / penalty);
        let change = (penalised - raw.clone()) * real;
        seen_raw = Some(raw);
        narrowed.scatter(1, index, change, IndexingUpdateOp::Add)
    } else {
        narrowed
    };
    // `k` stays the same all generation: one kernel.
    let ids = ops::top_indices(ranked.clone(), top);
    let values = ranked.gather(1, ids.clone());
    // Ids below 2²⁴ are exact in f32, so one tensor (one read) carries ids and values.
    let mut parts = vec![values, ids.cast(FloatDType::F32)];
    parts.extend(seen_raw);
    let host = read_f32(Tensor::cat(parts, 1));
    let width = 2 * top + seen_width;
    // Every row is decided before any picker draws: a row that cannot decide sends the whole
    // step to the full read, and the others must not have drawn.
    let mut decided = Vec::with_capacity(batch);
    for ((row, seen), values) in rows.iter().zip(&seen_lists).zip(host.chunks_exact(width)) {
        let (top_values, rest) = values.split_at(top);
        let (top_ids, seen_raw) = rest.split_at(top);
        let mut candidates: Vec<(u32, f32)> =
            seen.iter().copied().zip(seen_raw.iter().copied()).collect();
        for (&id, &value) in top_ids.iter().zip(top_values) {
            let id = id as u32;
            // An unseen token's ranked value is its raw logit.
            if seen.binary_search(&id).is_err() {
                candidates.push((id, value));
            }
        }
        let bound = top_values.iter().copied().fold(f32::INFINITY, f32::min);
        let mut picker = row.picker.clone();
        let token = picker.pick_candidates(&mut candidates, bound, row.history)?;
        decided.push((picker, token));
    }
    Some(
        rows.iter_mut()
            .zip(decided)
            .map(|(row, (picker, token))| {
                *row.picker = picker;
                Picked {
                    token,
                    logits: None,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::generation::sampling::Sampling;

    type B = burn::backend::Flex;

    /// A small seeded generator for the test's logits and histories.
    struct Numbers(u64);

    impl Numbers {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn uniform(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32
        }
    }

    fn rows<'a>(pickers: &'a mut [TokenPicker], histories: &'a [Vec<u32>]) -> Vec<RowPick<'a>> {
        pickers
            .iter_mut()
            .zip(histories)
            .map(|(picker, history)| RowPick {
                picker,
                history,
                want_logits: false,
            })
            .collect()
    }

    fn pickers() -> Vec<TokenPicker> {
        let sampling = |temperature, top_k, top_p, min_p| {
            Some(Sampling {
                temperature,
                top_k,
                top_p,
                min_p,
            })
        };
        let mut pickers = Vec::new();
        for (seed, limit) in [(1, None), (2, Some(150))] {
            for penalty in [1.0, 1.3, 0.8] {
                for s in [
                    None,
                    sampling(1.0, Some(1), None, None),
                    sampling(0.7, Some(5), None, None),
                    sampling(1.3, Some(40), Some(0.9), None),
                    sampling(0.9, Some(20), None, Some(0.05)),
                ] {
                    pickers.push(TokenPicker::new(s, penalty, limit, seed));
                }
            }
        }
        pickers
    }

    /// Candidates read on the device give every picker the token, and leave it the random
    /// state, that the whole row gives: step after step, in batches, with ties planted (which
    /// send a step to the whole row).
    #[test]
    fn candidates_pick_what_the_whole_row_picks() {
        let device = Default::default();
        let vocab = 203;
        let mut numbers = Numbers(7);
        let mut decided = [0, 0];
        const STEPS: usize = 6;
        let steps = STEPS * pickers().len();
        for coarse in [false, true] {
            for template in pickers() {
                let batch = 1 + (numbers.next() % 3) as usize;
                let mut whole = vec![template.clone(); batch];
                let mut sparse = whole.clone();
                let mut histories: Vec<Vec<u32>> = (0..batch)
                    .map(|_| {
                        (0..numbers.next() % 40)
                            .map(|_| (numbers.next() % 203) as u32)
                            .collect()
                    })
                    .collect();
                for _step in 0..STEPS {
                    let values: Vec<f32> = (0..batch * vocab)
                        .map(|_| {
                            let v = 6.0 * numbers.uniform() - 3.0;
                            // Coarse logits tie often, at the cut too.
                            if coarse { (v * 2.0).round() / 2.0 } else { v }
                        })
                        .collect();
                    let logits =
                        Tensor::<B, 2>::from_data(TensorData::new(values, [batch, vocab]), &device);
                    let expected: Vec<u32> = pick_tokens(
                        logits.clone(),
                        &mut rows(&mut whole, &histories),
                        Readback::Whole,
                    )
                    .iter()
                    .map(|p| p.token)
                    .collect();
                    let needs: Vec<Need> = sparse
                        .iter()
                        .zip(&histories)
                        .map(|(p, h)| p.need(h, vocab))
                        .collect();
                    let mut trial = sparse.clone();
                    let direct = pick_from_candidates(
                        logits.clone(),
                        &mut rows(&mut trial, &histories),
                        &needs,
                    );
                    if let Some(direct) = &direct {
                        decided[coarse as usize] += 1;
                        let tokens: Vec<u32> = direct.iter().map(|p| p.token).collect();
                        assert_eq!(tokens, expected, "{template:?}");
                    }
                    let got: Vec<u32> = pick_tokens(
                        logits,
                        &mut rows(&mut sparse, &histories),
                        Readback::Candidates,
                    )
                    .iter()
                    .map(|p| p.token)
                    .collect();
                    assert_eq!(got, expected, "{template:?}, coarse {coarse}");
                    for (history, token) in histories.iter_mut().zip(&expected) {
                        history.push(*token);
                    }
                }
            }
        }
        // Most steps decide from the candidates (the others fell back to the whole row).
        // Without ties every step decides from the candidates; coarse logits tie at the cut
        // and some steps read the whole row.
        assert_eq!(decided[0], steps, "fine logits: decided from candidates");
        assert!(
            decided[1] < steps,
            "coarse logits: some steps read the whole row"
        );
    }

    /// Whichever of tied logits a device's top-k returns, and however it rounds the penalty
    /// it ranks by, a pick from candidates is the whole row's or none: here ties at the cut are
    /// broken towards the highest ids, the choice that hides a lower id's equal logit.
    #[test]
    fn ties_at_the_cut_never_change_the_pick() {
        let vocab = 97;
        let mut numbers = Numbers(11);
        let mut undecided = 0;
        for template in pickers() {
            for _ in 0..20 {
                let logits: Vec<f32> = (0..vocab)
                    .map(|_| ((6.0 * numbers.uniform() - 3.0) * 2.0).round() / 2.0)
                    .collect();
                let history: Vec<u32> = (0..numbers.next() % 12)
                    .map(|_| (numbers.next() % vocab as u64) as u32)
                    .collect();
                let Need::Candidates { kept, limit, seen } = template.need(&history, vocab) else {
                    continue;
                };
                // Ranked as the device ranks: after the penalty (here a cruder one than the
                // host's, as a GPU's may be), ties broken towards high ids.
                let ranked: Vec<f32> = (0..limit)
                    .map(|id| match seen.binary_search(&(id as u32)) {
                        Ok(_) => logits[id] * 0.75,
                        Err(_) => logits[id],
                    })
                    .collect();
                let mut order: Vec<u32> = (0..limit as u32).collect();
                order.sort_by(|&a, &b| {
                    ranked[b as usize]
                        .total_cmp(&ranked[a as usize])
                        .then(b.cmp(&a))
                });
                let mut candidates: Vec<(u32, f32)> =
                    seen.iter().map(|&id| (id, logits[id as usize])).collect();
                for &id in &order[..kept + 1] {
                    if seen.binary_search(&id).is_err() {
                        candidates.push((id, logits[id as usize]));
                    }
                }
                let bound = ranked[order[kept] as usize];
                let mut whole = template.clone();
                let expected = whole.pick(&mut logits.clone(), &history);
                let mut sparse = template.clone();
                match sparse.pick_candidates(&mut candidates, bound, &history) {
                    Some(token) => assert_eq!(token, expected, "{template:?}"),
                    None => undecided += 1,
                }
            }
        }
        assert!(undecided > 0, "the ties reached the cut");
    }

    /// Greedy without a penalty reads two values and two ids a row; sampling without top-k
    /// and log-probabilities read everything.
    #[test]
    fn what_each_picker_needs() {
        let greedy = TokenPicker::new(None, 1.0, Some(100), 0);
        assert_eq!(
            greedy.need(&[5, 6], 120),
            Need::Candidates {
                kept: 1,
                limit: 100,
                seen: vec![]
            }
        );
        let penalised = TokenPicker::new(None, 1.2, None, 0);
        assert_eq!(
            penalised.need(&[9, 5, 9, 300], 120),
            Need::Candidates {
                kept: 1,
                limit: 120,
                seen: vec![5, 9]
            }
        );
        let full = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
            min_p: None,
        };
        assert_eq!(
            TokenPicker::new(Some(full), 1.0, None, 0).need(&[], 120),
            Need::All
        );
        let wide = Sampling {
            temperature: 1.0,
            top_k: Some(119),
            top_p: None,
            min_p: None,
        };
        assert_eq!(
            TokenPicker::new(Some(wide), 1.0, None, 0).need(&[], 120),
            Need::All
        );
    }
}
