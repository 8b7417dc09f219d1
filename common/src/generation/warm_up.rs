//! Warming a GPU backend's decode kernels when a model is loaded.
//!
//! On GPU backends a decode step's shapes change only when its keys reach the next bucket of
//! `ops::DECODE_BUCKET` slots, and each new shape costs kernel compilations and autotune runs
//! the first time (seconds on a real GPU, minutes on a software one). Running one step per
//! bucket at load moves that cost out of generation; with the kernel caches on disk
//! (`phi_zoo::backend::kernel_cache_dir`) a later process finds the results there. The CPU
//! backend compiles nothing, so nothing runs there.

use burn::prelude::*;

use super::sampling::TokenPicker;
use super::select::{Readback, RowPick, pick_tokens};
use crate::error::Result;
use crate::model::{LanguageModel, Options, ops};

/// Runs, for a batch of each size in `rows`, one greedy decode step at every bucket of keys a
/// generation of up to `capacity` positions reaches, as generation runs them (cache, adapters,
/// token choice). `on_step(done, total)` follows the steps. Returns how many ran: 0 on the CPU
/// backend. Sampling with top-k compiles its own selection once more at its first step.
pub fn warm_up_decode<B: Backend>(
    model: &(impl LanguageModel<B> + ?Sized),
    rows: &[usize],
    capacity: usize,
    device: &B::Device,
    mut on_step: impl FnMut(usize, usize),
) -> Result<usize> {
    let phi = model.phi();
    let capacity = capacity.min(phi.config().max_position_embeddings);
    if capacity == 0 || ops::attended_slots::<B>(1, capacity).is_none() {
        return Ok(0);
    }
    // A step with `filled` positions attends over `filled` rounded up to a bucket; these fill
    // levels reach each bucket once.
    let buckets = ops::cache_slots::<B>(capacity) / ops::DECODE_BUCKET;
    let levels: Vec<usize> = (1..=buckets)
        .map(|b| (b * ops::DECODE_BUCKET).min(capacity))
        .collect();
    let mut sizes = rows.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.retain(|&r| r > 0);
    let total = sizes.len() * levels.len();
    let mut done = 0;
    for &batch in &sizes {
        let mut cache = phi.new_cache(batch, capacity, device);
        let mut pickers = vec![TokenPicker::new(None, 1.0, None, 0); batch];
        for &filled in &levels {
            cache.clear();
            cache.advance(filled - 1);
            let ids = phi.ids_tensor(&vec![vec![0]; batch], device)?;
            let options = Options::cached(&mut cache).with_adapters(model.adapters());
            let logits = phi.last_logits(ids, options)?;
            let mut picks: Vec<RowPick<'_>> = pickers
                .iter_mut()
                .map(|picker| RowPick {
                    picker,
                    history: &[],
                    want_logits: false,
                })
                .collect();
            pick_tokens(logits, &mut picks, Readback::for_backend::<B>());
            done += 1;
            on_step(done, total);
        }
    }
    Ok(done)
}
