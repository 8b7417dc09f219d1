//! burn-train's file metric logger, told the true epoch of a resumed run.
//!
//! burn-train 0.21's event store numbers a run's first epoch 1 even when the run resumes after
//! epoch N (it learns the true number only from the first epoch summary), so a resumed run's
//! first epoch of metrics would overwrite `epoch-1` and land nowhere near `epoch-N+1`, and the
//! best-checkpoint search would read them there. This logger keeps its own count per split, from
//! the first epoch of the run, and hands the file logger the right one.

use std::collections::HashMap;
use std::path::Path;

use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, NumericEntry};

/// burn-train's metric logger, writing each epoch's values to `<split>/epoch-N/<metric>.log` (epochs numbered from the run's first).
pub struct EpochLogger {
    files: FileMetricLogger,
    first_epoch: usize,
    next_epoch: HashMap<Split, usize>,
}

impl EpochLogger {
    /// Logs under `dir`, for a run whose first epoch is `first_epoch` (1 for a fresh run).
    pub fn new(dir: impl AsRef<Path>, first_epoch: usize) -> Self {
        Self {
            files: FileMetricLogger::new(dir),
            first_epoch,
            next_epoch: HashMap::new(),
        }
    }
}

impl MetricLogger for EpochLogger {
    fn log(&mut self, update: MetricsUpdate, _store_epoch: usize, split: &Split) {
        let epoch = *self.next_epoch.get(split).unwrap_or(&self.first_epoch);
        self.files.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.files.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.files.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.next_epoch
            .insert(summary.split.clone(), summary.epoch_number + 1);
        self.files.log_epoch_summary(summary);
    }
}
