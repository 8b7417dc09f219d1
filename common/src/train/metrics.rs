//! burn-train metrics computed from a step's host-side figures (`LmStepFigures`): perplexity,
//! tokens per second and model FLOPs utilisation. The learner's file logger writes each one to
//! `<run>/{train,valid}/epoch-N/<name>.log`, one line per micro-batch.

use std::sync::Arc;
use std::time::Instant;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};

use crate::train::step::LmStepFigures;

impl Adaptor<LmStepFigures> for LmStepFigures {
    fn adapt(&self) -> LmStepFigures {
        *self
    }
}

/// `exp(loss)` of each micro-batch, averaged over the epoch with the batch's token count as weight.
#[derive(Clone)]
pub struct PerplexityOfLoss {
    name: MetricName,
    state: NumericMetricState,
}

impl PerplexityOfLoss {
    /// The metric (perplexity = exp of the loss).
    pub fn new() -> Self {
        Self {
            name: Arc::new("Perplexity".into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Default for PerplexityOfLoss {
    fn default() -> Self {
        Self::new()
    }
}

impl Metric for PerplexityOfLoss {
    type Input = LmStepFigures;

    fn update(&mut self, item: &LmStepFigures, _: &MetricMetadata) -> SerializedEntry {
        self.state.update(
            item.loss.exp(),
            item.tokens.max(1),
            FormatOptions::new(self.name()).precision(2),
        )
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for PerplexityOfLoss {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Tokens per second since the epoch's first micro-batch began, times a fixed factor: the factor
/// is 1 for plain throughput, and `flops_per_token / peak_flops × 100` for MFU in percent.
///
/// The clock starts when the epoch's first step was issued (`LmStepFigures::issued`), so the time
/// before it (loading, the previous epoch's validation and checkpoint) is not counted, and each
/// figure is the epoch's running rate: all tokens so far over all time so far.
#[derive(Clone)]
pub struct TokenRate {
    name: MetricName,
    unit: &'static str,
    factor: f64,
    started: Option<Instant>,
    tokens: usize,
    state: NumericMetricState,
}

impl TokenRate {
    /// Training tokens per second (all devices together).
    pub fn tokens_per_second() -> Self {
        Self::scaled("Tokens per second", "tok/s", 1.0)
    }

    /// Model FLOPs utilisation in percent, from the model's FLOPs per token and the hardware's
    /// peak FLOP/s (all devices together).
    pub fn model_flops_utilization(flops_per_token: f64, peak_flops: f64) -> Self {
        Self::scaled("MFU", "%", 100.0 * flops_per_token / peak_flops)
    }

    fn scaled(name: &str, unit: &'static str, factor: f64) -> Self {
        Self {
            name: Arc::new(name.into()),
            unit,
            factor,
            started: None,
            tokens: 0,
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for TokenRate {
    type Input = LmStepFigures;

    fn update(&mut self, item: &LmStepFigures, _: &MetricMetadata) -> SerializedEntry {
        let format = FormatOptions::new(self.name()).unit(self.unit).precision(2);
        let started = self
            .started
            .map_or(item.issued, |started| started.min(item.issued));
        self.started = Some(started);
        self.tokens += item.tokens;
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        self.state
            .update(self.factor * self.tokens as f64 / seconds, 1, format)
    }

    fn clear(&mut self) {
        self.started = None;
        self.tokens = 0;
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some(self.unit.into()),
            higher_is_better: true,
        }
        .into()
    }
}

impl Numeric for TokenRate {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Dense bf16 tensor-core peak FLOP/s of GPUs by the name `nvidia-smi` reports (vendor data
/// sheets, without sparsity), for MFU when no peak is given.
pub fn known_peak_bf16_flops(device_name: &str) -> Option<f64> {
    let name = device_name.to_ascii_lowercase();
    let tflops = [
        ("h200", 989.0),
        ("h100 pcie", 756.0),
        ("h100 nvl", 835.0),
        ("h100", 989.0),
        ("gh200", 989.0),
        ("a100", 312.0),
        ("a10g", 70.0),
        ("l40s", 362.0),
        ("l4", 121.0),
        ("rtx 4090", 165.0),
        ("rtx 3090", 71.0),
    ]
    .into_iter()
    .find(|(key, _)| name.contains(key))?
    .1;
    Some(tflops * 1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_table_knows_the_usual_cards() {
        assert_eq!(known_peak_bf16_flops("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(known_peak_bf16_flops("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(known_peak_bf16_flops("NVIDIA A100-SXM4-80GB"), Some(312e12));
        assert_eq!(known_peak_bf16_flops("llvmpipe"), None);
    }
}
