//! Learning-rate schedules of the Phi recipes: warmup, then linear decay, cosine decay, or a
//! constant rate, as a burn `LrScheduler` whose state is the step count (so resuming restores it).

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

/// What the rate does after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Stays at the peak.
    Constant,
    /// Falls linearly to `final_fraction × peak` at the last step.
    Linear,
    /// Follows half a cosine to `final_fraction × peak` at the last step.
    Cosine,
}

/// A schedule over optimizer steps: `warmup_steps` of linear rise from 0 to `peak`, then `decay`
/// until `total_steps`, then flat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The highest rate, reached at the end of warmup.
    pub peak: f64,
    /// Optimizer steps of linear warmup from 0.
    pub warmup_steps: usize,
    /// What the rate does after warmup.
    pub decay: Decay,
    /// The step at which decay ends.
    pub total_steps: usize,
    /// Where decay ends, as a fraction of the peak.
    pub final_fraction: f64,
}

impl Schedule {
    /// A constant rate with no warmup.
    pub fn constant(peak: f64) -> Self {
        Self {
            peak,
            warmup_steps: 0,
            decay: Decay::Constant,
            total_steps: 0,
            final_fraction: 1.0,
        }
    }

    /// The rate of optimizer step `step` (0-based).
    pub fn rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.peak * self.final_fraction;
        match self.decay {
            Decay::Constant => self.peak,
            Decay::Linear => self.peak + (floor - self.peak) * progress,
            Decay::Cosine => {
                floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// The schedule as burn's learner drives it: burn steps the scheduler once per micro-batch,
    /// so with gradient accumulation over `accumulation` micro-batches each optimizer step's rate
    /// is held for that many calls.
    pub fn scheduler(&self, accumulation: usize) -> PhiLrScheduler {
        PhiLrScheduler {
            schedule: *self,
            accumulation: accumulation.max(1),
            calls: 0,
        }
    }
}

#[derive(Debug, Clone)]
/// A `Schedule` as burn's learner drives it (see [`Schedule::scheduler`]).
pub struct PhiLrScheduler {
    schedule: Schedule,
    accumulation: usize,
    /// Micro-batches seen: the whole state, saved and restored with checkpoints.
    calls: usize,
}

impl LrScheduler for PhiLrScheduler {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let rate = self.schedule.rate_at(self.calls / self.accumulation);
        self.calls += 1;
        rate
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.calls
    }

    fn load_record<B: Backend>(mut self, calls: usize) -> Self {
        self.calls = calls;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let linear = Schedule {
            peak: 1e-3,
            warmup_steps: 4,
            decay: Decay::Linear,
            total_steps: 14,
            final_fraction: 0.0,
        };
        let rates: Vec<f64> = (0..16).map(|s| linear.rate_at(s)).collect();
        let expected = [
            0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 0.9e-3, 0.8e-3, 0.7e-3, 0.6e-3, 0.5e-3, 0.4e-3,
            0.3e-3, 0.2e-3, 0.1e-3, 0.0, 0.0,
        ];
        for (r, e) in rates.iter().zip(expected) {
            assert!((r - e).abs() < 1e-12, "{rates:?}");
        }
        let cosine = Schedule {
            decay: Decay::Cosine,
            final_fraction: 0.1,
            ..linear
        };
        assert!((cosine.rate_at(4) - 1e-3).abs() < 1e-12);
        assert!((cosine.rate_at(9) - 0.55e-3).abs() < 1e-12);
        assert!((cosine.rate_at(14) - 1e-4).abs() < 1e-12);
        assert_eq!(Schedule::constant(2e-4).rate_at(12345), 2e-4);
    }

    #[test]
    fn the_scheduler_holds_each_rate_for_the_accumulated_micro_batches_and_resumes() {
        let schedule = Schedule {
            peak: 1.0,
            warmup_steps: 2,
            decay: Decay::Linear,
            total_steps: 4,
            final_fraction: 0.0,
        };
        type B = burn::backend::Flex;
        let mut scheduler = schedule.scheduler(3);
        let rates: Vec<f64> = (0..9).map(|_| scheduler.step()).collect();
        assert_eq!(rates, [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let record = scheduler.to_record::<B>();
        let mut resumed = schedule.scheduler(3).load_record::<B>(record);
        assert_eq!(resumed.step(), 0.5);
        assert_eq!(resumed.step(), scheduler.step());
    }
}
