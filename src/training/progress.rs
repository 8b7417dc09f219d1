//! The run's progress display on stderr: on a terminal, a bar over the run's optimizer steps
//! (step of total, the latest loss and throughput, ETA) above which each epoch's line is printed;
//! elsewhere (logs, CI) the epoch lines alone.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// One line per epoch, after its validation: the epoch's mean training loss, learning rate,
/// throughput (and MFU), and the validation loss; and on a terminal a per-step bar.
pub struct RunProgress {
    names: HashMap<MetricId, String>,
    train: EpochMeans,
    valid: EpochMeans,
    /// The latest value of each training metric, for the bar.
    latest: HashMap<String, f64>,
    /// Training samples per optimizer step (batch × accumulation × devices).
    samples_per_step: usize,
    steps_per_epoch: usize,
    /// `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
}

impl RunProgress {
    /// The display of a run of `epochs` epochs of `steps_per_epoch` optimizer steps, each of
    /// `samples_per_step` training samples; a bar only when stderr is a terminal.
    pub fn new(epochs: usize, steps_per_epoch: usize, samples_per_step: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some((epochs * steps_per_epoch) as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template("step {pos}/{len} [{wide_bar}] {msg} · ETA {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self {
            names: HashMap::new(),
            train: EpochMeans::default(),
            valid: EpochMeans::default(),
            latest: HashMap::new(),
            samples_per_step: samples_per_step.max(1),
            steps_per_epoch,
            bar,
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
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

impl RunProgress {
    fn record(&mut self, state: MetricState, valid: bool) {
        if let MetricState::Numeric(entry, numeric) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            if valid {
                self.valid.add(name, &numeric);
            } else {
                self.train.add(name, &numeric);
                let value = match numeric {
                    NumericEntry::Value(value) => value,
                    NumericEntry::Aggregated {
                        aggregated_value, ..
                    } => aggregated_value,
                };
                self.latest.insert(name.clone(), value);
            }
        }
    }
}

impl MetricsRendererTraining for RunProgress {
    fn update_train(&mut self, state: MetricState) {
        self.record(state, false);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, true);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let (Some(bar), Some(progress)) = (&self.bar, item.progress) else {
            return;
        };
        let epoch = item.global_progress.items_processed.max(1);
        let step =
            (epoch - 1) * self.steps_per_epoch + progress.items_processed / self.samples_per_step;
        bar.set_position(step as u64);
        let mut message = String::new();
        for (name, label, digits) in [("Loss", "loss", 3), ("Tokens per second", "tok/s", 0)] {
            if let Some(value) = self.latest.get(name) {
                message += &format!("{label} {value:.digits$} ");
            }
        }
        bar.set_message(message.trim_end().to_string());
    }

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
        self.print(&line);
    }

    fn on_train_end(
        &mut self,
        _: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for RunProgress {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for RunProgress {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
