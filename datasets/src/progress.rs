//! A progress bar with rate and time left, drawn on stderr when it is a terminal (indicatif hides
//! it otherwise) and only when the caller asks for one: library calls stay quiet.

use indicatif::{ProgressBar, ProgressStyle};

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
