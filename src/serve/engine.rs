//! The engine: one thread that owns the model and runs the continuous batcher, fed by the HTTP
//! handlers through a channel. Handlers receive each request's events on a channel of their own;
//! dropping its receiver (a client that hung up, a stop string found) frees the request's row at
//! the next step.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use burn::prelude::Backend;
use phi_zoo_common::generation::continuous::{
    BatchSettings, BatchStats, Batcher, Event, EventSink, Request,
};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::{LanguageModel, Result};

/// What the engine is doing, published after every step (`GET /health` shows it).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineStatus {
    /// Requests in the decode batch.
    pub running: usize,
    /// Requests waiting for a row or being prefilled.
    pub queued: usize,
    /// Steps, joins and cache moves so far.
    pub stats: BatchStats,
    /// False once the engine has stopped.
    pub alive: bool,
}

/// A request's events, delivered to its handler's channel.
pub(crate) struct ChannelSink(pub UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Runs requests from `jobs` until every sender is gone, publishing the status after each step.
pub(crate) fn run<B: Backend, M: LanguageModel<B> + ?Sized>(
    model: &M,
    settings: BatchSettings,
    device: &B::Device,
    jobs: Receiver<Request>,
    status: Arc<Mutex<EngineStatus>>,
) -> Result<()> {
    let mut batcher = Batcher::new(model, settings, device)?;
    let publish = |batcher: &Batcher<'_, B, M>, alive: bool| {
        if let Ok(mut status) = status.lock() {
            *status = EngineStatus {
                running: batcher.running(),
                queued: batcher.queued(),
                stats: batcher.stats(),
                alive,
            };
        }
    };
    publish(&batcher, true);
    loop {
        if batcher.is_idle() {
            match jobs.recv() {
                Ok(request) => batcher.submit(request),
                Err(_) => break,
            }
        }
        while let Ok(request) = jobs.try_recv() {
            batcher.submit(request);
        }
        if let Err(e) = batcher.step() {
            // The requests in flight were told; the engine goes on with the next ones.
            eprintln!("serve: a step failed: {e}");
        }
        publish(&batcher, true);
    }
    publish(&batcher, false);
    Ok(())
}
