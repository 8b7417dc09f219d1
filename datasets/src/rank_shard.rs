//! One node's share of a sample stream in data-parallel training over several nodes.

use std::ops::Range;
use std::sync::Arc;

use burn::prelude::*;
use phi_zoo_common::LmBatch;

use crate::loader::SampleStream;

/// Node `rank`'s share of `inner` when `nodes` nodes train on it together, each with micro-batches
/// of `batch` samples: of every `nodes × batch` consecutive samples (one micro-batch of the whole
/// run), node `rank` reads the `rank`-th `batch`. Together the nodes read what one node with
/// micro-batches of `nodes × batch` would, in the same steps.
pub struct RankShard<S> {
    inner: Arc<S>,
    rank: u64,
    nodes: u64,
    batch: u64,
}

impl<S> RankShard<S> {
    /// `rank < nodes`, `batch ≥ 1`.
    pub fn new(inner: Arc<S>, rank: usize, nodes: usize, batch: usize) -> Self {
        assert!(
            rank < nodes && batch > 0,
            "rank {rank} of {nodes}, batch {batch}"
        );
        Self {
            inner,
            rank: rank as u64,
            nodes: nodes as u64,
            batch: batch as u64,
        }
    }

    /// The stream index of this node's sample `local`.
    fn global(&self, local: u64) -> u64 {
        let (round, within) = (local / self.batch, local % self.batch);
        (round * self.nodes + self.rank) * self.batch + within
    }
}

impl<S: SampleStream> SampleStream for RankShard<S> {
    fn batch<B: Backend>(&self, indices: Range<u64>, device: &B::Device) -> LmBatch<B> {
        // Cut where consecutive local samples stop being consecutive in the stream (at this
        // node's micro-batch boundaries): one piece for an aligned micro-batch.
        let mut pieces: Vec<Range<u64>> = vec![];
        for local in indices {
            let at = self.global(local);
            match pieces.last_mut() {
                Some(piece) if piece.end == at => piece.end += 1,
                _ => pieces.push(at..at + 1),
            }
        }
        let mut batches: Vec<LmBatch<B>> = pieces
            .into_iter()
            .map(|piece| self.inner.batch(piece, device))
            .collect();
        if batches.len() == 1 {
            return batches.pop().expect("one piece");
        }
        join(batches)
    }
}

/// Batches of equal sequence length, one after the other.
fn join<B: Backend>(batches: Vec<LmBatch<B>>) -> LmBatch<B> {
    let masks: Option<Vec<Tensor<B, 2, Bool>>> = if batches.iter().all(|b| b.loss_mask.is_none()) {
        None
    } else {
        Some(
            batches
                .iter()
                .map(|b| match &b.loss_mask {
                    Some(mask) => mask.clone(),
                    None => Tensor::<B, 2, Int>::ones(b.targets.dims(), &b.targets.device()).bool(),
                })
                .collect(),
        )
    };
    LmBatch {
        inputs: Tensor::cat(batches.iter().map(|b| b.inputs.clone()).collect(), 0),
        targets: Tensor::cat(batches.into_iter().map(|b| b.targets).collect(), 0),
        loss_mask: masks.map(|m| Tensor::cat(m, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_read_the_whole_runs_micro_batches_between_them() {
        let shard = |rank| RankShard::new(Arc::new(()), rank, 3, 2);
        let read: Vec<Vec<u64>> = (0..3)
            .map(|rank| (0..6).map(|local| shard(rank).global(local)).collect())
            .collect();
        assert_eq!(read[0], [0, 1, 6, 7, 12, 13]);
        assert_eq!(read[1], [2, 3, 8, 9, 14, 15]);
        assert_eq!(read[2], [4, 5, 10, 11, 16, 17]);
    }
}
