//! The run's progress display: one line per epoch on stderr.

use std::collections::HashMap;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// One line per epoch on stderr, after its validation: the epoch's mean training loss, learning
/// rate, throughput (and MFU), and the validation loss. Nothing per micro-batch, so logs stay short.
#[derive(Default)]
pub struct EpochLineRenderer {
    names: HashMap<MetricId, String>,
    train: EpochMeans,
    valid: EpochMeans,
}

/// Weighted means of the numeric metrics reported during one epoch, by metric name.
#[derive(Default)]
struct EpochMeans(Vec<(String, f64, f64)>);

impl EpochMeans {
    fn add(&mut self, name: &str, entry: &NumericEntry) {
        let (value, weight) = match entry {
            NumericEntry::Value(v) => (*v, 1.0),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (*aggregated_value, *count as f64),
        };
        match self.0.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, sum, total)) => {
                *sum += value * weight;
                *total += weight;
            }
            None => self.0.push((name.to_string(), value * weight, weight)),
        }
    }

    fn mean(&self, name: &str) -> Option<f64> {
        let (_, sum, total) = self.0.iter().find(|(n, _, _)| n == name)?;
        (*total > 0.0).then(|| sum / total)
    }
}

impl EpochLineRenderer {
    fn record(&mut self, state: MetricState, valid: bool) {
        if let MetricState::Numeric(entry, numeric) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            let means = if valid {
                &mut self.valid
            } else {
                &mut self.train
            };
            means.add(name, &numeric);
        }
    }
}

impl MetricsRendererTraining for EpochLineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state, false);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, true);
    }

    fn render_train(&mut self, _: TrainingProgress, _: Vec<ProgressType>) {}

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(progress) = item.progress else {
            return;
        };
        if progress.items_processed < progress.items_total {
            return;
        }
        let (train, valid) = (
            std::mem::take(&mut self.train),
            std::mem::take(&mut self.valid),
        );
        let mut line = format!(
            "epoch {}/{}",
            item.global_progress.items_processed, item.global_progress.items_total
        );
        let figures = [
            (&train, "Loss", "train loss", 3),
            (&valid, "Loss", "valid loss", 3),
            (&train, "Learning Rate", "lr", 6),
            (&train, "Tokens per second", "tok/s", 0),
            (&train, "MFU", "MFU %", 1),
        ];
        for (means, name, label, digits) in figures {
            if let Some(value) = means.mean(name) {
                line += &format!(" · {label} {value:.digits$}");
            }
        }
        eprintln!("{line}");
    }

    fn on_train_end(
        &mut self,
        _: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for EpochLineRenderer {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLineRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
