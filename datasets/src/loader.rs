//! A data loader for burn's learner that walks an endless stream of samples (a mixture's
//! windows, or fine-tuning examples in shuffled passes) instead of repeating a dataset.
//!
//! burn-train checkpoints once per epoch and re-iterates its loader every epoch, so a training run
//! makes an "epoch" a fixed number of optimizer steps. This loader serves epoch `k` the samples
//! `k·E .. (k+1)·E` of the stream (`E` samples per epoch), so every epoch reads new data, and a
//! run resumed at epoch `k` reads exactly what the uninterrupted run would have.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::prelude::*;

use crate::batch::{LmBatcher, TokenWindow};
use crate::mixture::Mixture;
use phi_zoo_common::LmBatch;

/// An endless, deterministic sequence of training samples, batched on request.
pub trait SampleStream: Send + Sync + 'static {
    /// The samples `indices` of the stream as one batch on `device`.
    fn batch<B: Backend>(&self, indices: Range<u64>, device: &B::Device) -> LmBatch<B>;
}

impl SampleStream for Mixture {
    fn batch<B: Backend>(&self, indices: Range<u64>, device: &B::Device) -> LmBatch<B> {
        let windows = indices
            .map(|index| {
                // Stores are validated when opened and immutable, and every index maps to an
                // existing window: nothing here can fail that `Mixture::new` did not check.
                let tokens = self
                    .get(index)
                    .expect("a mixture sample is always readable");
                TokenWindow { index, tokens }
            })
            .collect();
        LmBatcher.batch(windows, device)
    }
}

/// A burn `DataLoader` over a `SampleStream`: one epoch is a fixed range of the stream, so a run resumes at an epoch from the epoch number alone.
pub struct StreamLoader<B: Backend, S: SampleStream = Mixture> {
    stream: Arc<S>,
    batch_size: usize,
    samples_per_epoch: u64,
    /// Which samples of each epoch this loader serves (all, unless sliced across devices).
    items: Range<usize>,
    /// The epoch the next `iter()` serves; shared with the copies `to_device` makes.
    next_epoch: Arc<AtomicU64>,
    /// Serve the same epoch every time (validation: comparable figures, whatever the epoch).
    repeat: bool,
    device: B::Device,
}

impl<B: Backend, S: SampleStream> StreamLoader<B, S> {
    /// Epochs of `batches_per_epoch` batches of `batch_size` samples, the first being `first_epoch`
    /// (0 for a new run; the epoch after the checkpoint for a resumed one).
    pub fn new(
        stream: Arc<S>,
        batch_size: usize,
        batches_per_epoch: usize,
        first_epoch: u64,
        device: B::Device,
    ) -> Self {
        let per_epoch = batch_size.max(1) * batches_per_epoch;
        Self {
            stream,
            batch_size: batch_size.max(1),
            samples_per_epoch: per_epoch as u64,
            items: 0..per_epoch,
            next_epoch: Arc::new(AtomicU64::new(first_epoch)),
            repeat: false,
            device,
        }
    }

    /// `batches` batches of `batch_size` samples, the same ones (the stream's first) on every
    /// `iter()`: a validation set that does not change from epoch to epoch.
    pub fn repeating(stream: Arc<S>, batch_size: usize, batches: usize, device: B::Device) -> Self {
        Self {
            repeat: true,
            ..Self::new(stream, batch_size, batches, 0, device)
        }
    }

    /// The epoch the next `iter()` will serve.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch.load(Ordering::SeqCst)
    }
}

impl<B: Backend, S: SampleStream> DataLoader<B, LmBatch<B>> for StreamLoader<B, S> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<LmBatch<B>> + 'a> {
        let epoch = if self.repeat {
            self.next_epoch()
        } else {
            self.next_epoch.fetch_add(1, Ordering::SeqCst)
        };
        Box::new(EpochIter {
            loader: self,
            first_sample: epoch * self.samples_per_epoch,
            position: self.items.start,
        })
    }

    fn num_items(&self) -> usize {
        self.items.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        Arc::new(Self {
            stream: self.stream.clone(),
            batch_size: self.batch_size,
            samples_per_epoch: self.samples_per_epoch,
            items: self.items.clone(),
            next_epoch: self.next_epoch.clone(),
            repeat: self.repeat,
            device: device.clone(),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
        let from = (self.items.start + start).min(self.items.end);
        let to = (self.items.start + end).clamp(from, self.items.end);
        Arc::new(Self {
            stream: self.stream.clone(),
            batch_size: self.batch_size,
            samples_per_epoch: self.samples_per_epoch,
            items: from..to,
            // A slice keeps its own count: each device's slice is iterated once per epoch.
            next_epoch: Arc::new(AtomicU64::new(self.next_epoch())),
            repeat: self.repeat,
            device: self.device.clone(),
        })
    }
}

struct EpochIter<'a, B: Backend, S: SampleStream> {
    loader: &'a StreamLoader<B, S>,
    first_sample: u64,
    position: usize,
}

impl<B: Backend, S: SampleStream> Iterator for EpochIter<'_, B, S> {
    type Item = LmBatch<B>;

    fn next(&mut self) -> Option<LmBatch<B>> {
        let end = self.loader.items.end;
        if self.position >= end {
            return None;
        }
        let stop = (self.position + self.loader.batch_size).min(end);
        let batch = self.loader.stream.batch(
            self.first_sample + self.position as u64..self.first_sample + stop as u64,
            &self.loader.device,
        );
        self.position = stop;
        Some(batch)
    }
}

impl<B: Backend, S: SampleStream> DataLoaderIterator<LmBatch<B>> for EpochIter<'_, B, S> {
    fn progress(&self) -> Progress {
        Progress::new(
            self.position - self.loader.items.start,
            self.loader.items.len(),
        )
    }
}
