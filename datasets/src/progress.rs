//! A progress bar with rate and time left, drawn on stderr when it is a terminal (indicatif hides
//! it otherwise) and only when the caller asks for one: library calls stay quiet.

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Result;
use crate::reader::Corpus;
use crate::shard::Shard;

/// Progress over a known number of items.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `total` items labelled `label`, or nothing when `enabled` is false.
    pub fn new(enabled: bool, total: u64, label: &str) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} {bar:30} {pos}/{len} [{elapsed_precise}, {per_sec}, ETA {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.to_string());
            bar
        });
        Self { bar }
    }

    /// A bar over the documents of `shard` of `corpus`, labelled `label`. Only a bar needs the
    /// count, which costs a reading pass: without one (`enabled` false) nothing is read.
    pub fn over_shard(enabled: bool, shard: Shard, corpus: &Corpus, label: &str) -> Result<Self> {
        let total = if enabled {
            shard.count_documents(corpus)?
        } else {
            0
        };
        Ok(Self::new(enabled, total, label))
    }

    /// One more item done.
    pub fn advance(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Leaves the bar at its last state.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
