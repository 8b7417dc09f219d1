//! LoRA (Hu et al. 2021): a frozen linear `W` gains a trainable low-rank update,
//! `y = x·W + b + (alpha / rank) · dropout(x)·A·B`, with `A: [in, rank]` drawn like a fresh linear
//! weight and `B: [rank, out]` zero, so an untrained adapter changes nothing. Merging folds
//! `(alpha / rank)·A·B` into `W` for export.
//!
//! Adapters live beside the model (`PhiAdapters`, one `LayerAdapters` per block) rather than
//! inside its linears, so that a LoRA run's module, and so its optimizer state and checkpoints,
//! hold only the adapters while the base `Phi` stays frozen (`crate::frozen::Frozen`).

use std::fmt;
use std::str::FromStr;

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::linear::{forward_rows, is_cpu};
use crate::model::Phi;

/// A projection LoRA can adapt, named as in transformers' Phi (and PEFT's `target_modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraTarget {
    Q,
    K,
    V,
    Dense,
    Fc1,
    Fc2,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 6] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::Dense,
        LoraTarget::Fc1,
        LoraTarget::Fc2,
    ];

    /// The module's name in transformers' Phi.
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::Dense => "dense",
            LoraTarget::Fc1 => "fc1",
            LoraTarget::Fc2 => "fc2",
        }
    }

    /// Parses a comma-separated list such as `q,k,v,dense` (or `q_proj,fc1`, or `all`).
    pub fn parse_list(list: &str) -> Result<Vec<LoraTarget>, String> {
        if list.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut targets = vec![];
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let target = part.parse()?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        if targets.is_empty() {
            return Err(format!("no LoRA targets in {list:?}"));
        }
        Ok(targets)
    }
}

impl FromStr for LoraTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "q" | "q_proj" => LoraTarget::Q,
            "k" | "k_proj" => LoraTarget::K,
            "v" | "v_proj" => LoraTarget::V,
            "dense" | "o" | "o_proj" => LoraTarget::Dense,
            "fc1" => LoraTarget::Fc1,
            "fc2" => LoraTarget::Fc2,
            _ => {
                return Err(format!(
                    "unknown LoRA target {s:?}: q, k, v, dense, fc1, fc2"
                ));
            }
        })
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rank, scale, dropout and placement of a model's adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// `rank` on every projection, `alpha = 2·rank`, dropout 0.05: common practice for Phi.
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.05,
            targets: LoraTarget::ALL.to_vec(),
        }
    }

    /// Builds zero-effect adapters for `phi` (A drawn, B zero) on `device`.
    pub fn init<B: Backend>(&self, phi: &Phi<B>, device: &B::Device) -> PhiAdapters<B> {
        let config = phi.config();
        let (hidden, inner, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.kv_dim(),
        );
        let make = |target: LoraTarget| -> Option<LoraAdapter<B>> {
            if !self.targets.contains(&target) {
                return None;
            }
            let (d_in, d_out) = match target {
                LoraTarget::Q | LoraTarget::Dense => (hidden, hidden),
                LoraTarget::K | LoraTarget::V => (hidden, kv),
                LoraTarget::Fc1 => (hidden, inner),
                LoraTarget::Fc2 => (inner, hidden),
            };
            Some(LoraAdapter::new(
                d_in,
                d_out,
                self.rank,
                self.alpha,
                self.dropout,
                device,
            ))
        };
        PhiAdapters {
            layers: (0..config.num_hidden_layers)
                .map(|_| LayerAdapters {
                    q_proj: make(LoraTarget::Q),
                    k_proj: make(LoraTarget::K),
                    v_proj: make(LoraTarget::V),
                    dense: make(LoraTarget::Dense),
                    fc1: make(LoraTarget::Fc1),
                    fc2: make(LoraTarget::Fc2),
                })
                .collect(),
        }
    }
}

/// One low-rank update.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`, zero at the start.
    pub b: Param<Tensor<B, 2>>,
    pub dropout: Dropout,
    /// `alpha / rank`.
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    pub fn new(
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        // A as a fresh linear layer's weight would be (uniform ±1/√in, as PEFT draws it).
        let bound = 1.0 / (d_in as f64).sqrt();
        Self {
            a: Param::from_tensor(Tensor::random(
                [d_in, rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
            dropout: DropoutConfig::new(dropout).init(),
            scale: alpha / rank.max(1) as f64,
        }
    }

    /// The update for `x: [batch, seq, in]` → `[batch, seq, out]`.
    pub fn delta(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, d_in] = x.dims();
        let rows = self.dropout.forward(x).reshape([batch * seq, d_in]);
        let y = rows
            .matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(self.scale);
        let d_out = y.dims()[1];
        y.reshape([batch, seq, d_out])
    }

    /// `(alpha / rank)·A·B`, the update to a linear's `[in, out]` weight.
    pub fn weight_delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }

    /// `linear` with this update folded into its weight.
    pub fn merge_into(&self, linear: Linear<B>) -> Linear<B> {
        let weight = linear.weight.val();
        let delta = self.weight_delta().cast(weight.dtype());
        // CPU backends keep weights in `[out, in]` memory behind an `[in, out]` view
        // (`crate::linear`); adding in that order keeps the layout their decode path wants.
        let merged = if is_cpu::<B>(&weight.device()) {
            (weight.transpose() + delta.transpose()).transpose()
        } else {
            weight + delta
        };
        Linear {
            weight: Param::from_tensor(merged),
            bias: linear.bias,
        }
    }
}

/// The adapters of one decoder layer, by projection.
#[derive(Module, Debug)]
pub struct LayerAdapters<B: Backend> {
    pub q_proj: Option<LoraAdapter<B>>,
    pub k_proj: Option<LoraAdapter<B>>,
    pub v_proj: Option<LoraAdapter<B>>,
    pub dense: Option<LoraAdapter<B>>,
    pub fc1: Option<LoraAdapter<B>>,
    pub fc2: Option<LoraAdapter<B>>,
}

impl<B: Backend> LayerAdapters<B> {
    /// The adapters present, in the order q, k, v, dense, fc1, fc2.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut LoraAdapter<B>> {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.dense,
            &mut self.fc1,
            &mut self.fc2,
        ]
        .into_iter()
        .flatten()
    }
}

/// Every layer's adapters.
#[derive(Module, Debug)]
pub struct PhiAdapters<B: Backend> {
    pub layers: Vec<LayerAdapters<B>>,
}

impl<B: Backend> PhiAdapters<B> {
    /// `phi` with every adapter folded into its base weight: a plain model that computes what
    /// `phi.forward_adapted(.., self)` does (without dropout).
    pub fn merge_into(&self, mut phi: Phi<B>) -> Phi<B> {
        for (layer, adapters) in phi.model.layers.iter_mut().zip(&self.layers) {
            let attention = &mut layer.self_attn;
            let mlp = &mut layer.mlp;
            let slots: [(&mut Linear<B>, &Option<LoraAdapter<B>>); 6] = [
                (&mut attention.q_proj, &adapters.q_proj),
                (&mut attention.k_proj, &adapters.k_proj),
                (&mut attention.v_proj, &adapters.v_proj),
                (&mut attention.dense, &adapters.dense),
                (&mut mlp.fc1, &adapters.fc1),
                (&mut mlp.fc2, &adapters.fc2),
            ];
            for (linear, adapter) in slots {
                if let Some(adapter) = adapter {
                    let base = linear.clone();
                    *linear = adapter.merge_into(base);
                }
            }
        }
        phi
    }
}

/// `forward_rows(linear, x)` plus the adapter's update, if any.
pub(crate) fn project<B: Backend>(
    linear: &Linear<B>,
    adapter: Option<&LoraAdapter<B>>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match adapter {
        Some(adapter) => forward_rows(linear, x.clone()) + adapter.delta(x),
        None => forward_rows(linear, x),
    }
}
