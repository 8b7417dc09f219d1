//! LoRA (Hu et al. 2021): a frozen linear `W` gains a trainable low-rank update,
//! `y = x·W + b + (alpha / rank) · dropout(x)·A·B`, with `A: [in, rank]` drawn like a fresh linear
//! weight and `B: [rank, out]` zero, so an untrained adapter changes nothing. Merging folds
//! `(alpha / rank)·A·B` into `W` for export.
//!
//! Adapters live beside the model (`PhiAdapters`, one `LayerAdapters` per block) rather than
//! inside its linears, so that a LoRA run's module, and so its optimizer state and checkpoints,
//! hold only the adapters while the base `Phi` stays frozen (`train::Frozen`, with the `train` feature).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::model::{Adapters, Phi, PhiLinear, Projection};

/// A projection LoRA can adapt: any of a block's six.
pub type LoraTarget = Projection;

/// Rank, scale, dropout and placement of a model's adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank r of each adapter's `B·A`.
    pub rank: usize,
    /// Scale numerator: the update is `(alpha / rank) · B·A·x`.
    pub alpha: f64,
    /// Dropout on the adapter's input (training only).
    pub dropout: f64,
    /// The projections adapted.
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// `rank` on every projection, `alpha = 2·rank`, dropout 0.05: common practice for Phi.
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.05,
            targets: Projection::ALL.to_vec(),
        }
    }

    /// Builds zero-effect adapters for `phi` (A drawn, B zero) on `device`, each sized from the
    /// layer it adapts.
    pub fn init<B: Backend>(&self, phi: &Phi<B>, device: &B::Device) -> PhiAdapters<B> {
        let layers = phi
            .model
            .layers
            .iter()
            .map(|layer| {
                let mut adapters = LayerAdapters::empty();
                // In one fixed order, so the draws do not depend on how targets were listed.
                for target in Projection::ALL
                    .into_iter()
                    .filter(|t| self.targets.contains(t))
                {
                    let [d_in, d_out] = layer.projection(target).dims();
                    *adapters.slot_mut(target) = Some(LoraAdapter::new(
                        d_in,
                        d_out,
                        self.rank,
                        self.alpha,
                        self.dropout,
                        device,
                    ));
                }
                adapters
            })
            .collect();
        PhiAdapters { layers }
    }
}

/// One low-rank update.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`, zero at the start.
    pub b: Param<Tensor<B, 2>>,
    /// Dropout on the adapter's input.
    pub dropout: Dropout,
    /// `alpha / rank`.
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// An adapter for a `d_in → d_out` projection: `A` uniform in ±1/√d_in, `B` zero, so the
    /// adapted model starts as the base model.
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
    pub fn merge_into(&self, linear: PhiLinear<B>) -> PhiLinear<B> {
        linear.with_weight_delta(self.weight_delta())
    }
}

/// The adapters of one decoder layer, by projection.
#[derive(Module, Debug)]
pub struct LayerAdapters<B: Backend> {
    /// The adapter of the query projection, if adapted.
    pub q_proj: Option<LoraAdapter<B>>,
    /// The adapter of the key projection, if adapted.
    pub k_proj: Option<LoraAdapter<B>>,
    /// The adapter of the value projection, if adapted.
    pub v_proj: Option<LoraAdapter<B>>,
    /// The adapter of the attention output projection, if adapted.
    pub dense: Option<LoraAdapter<B>>,
    /// The adapter of the MLP's first projection, if adapted.
    pub fc1: Option<LoraAdapter<B>>,
    /// The adapter of the MLP's second projection, if adapted.
    pub fc2: Option<LoraAdapter<B>>,
}

impl<B: Backend> LayerAdapters<B> {
    /// The adapter on `projection`, if any.
    pub fn get(&self, projection: Projection) -> Option<&LoraAdapter<B>> {
        match projection {
            Projection::Q => self.q_proj.as_ref(),
            Projection::K => self.k_proj.as_ref(),
            Projection::V => self.v_proj.as_ref(),
            Projection::Dense => self.dense.as_ref(),
            Projection::Fc1 => self.fc1.as_ref(),
            Projection::Fc2 => self.fc2.as_ref(),
        }
    }

    /// No adapter on any projection.
    fn empty() -> Self {
        Self {
            q_proj: None,
            k_proj: None,
            v_proj: None,
            dense: None,
            fc1: None,
            fc2: None,
        }
    }

    /// The slot of `projection`'s adapter.
    fn slot_mut(&mut self, projection: Projection) -> &mut Option<LoraAdapter<B>> {
        match projection {
            Projection::Q => &mut self.q_proj,
            Projection::K => &mut self.k_proj,
            Projection::V => &mut self.v_proj,
            Projection::Dense => &mut self.dense,
            Projection::Fc1 => &mut self.fc1,
            Projection::Fc2 => &mut self.fc2,
        }
    }

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
    /// One set per decoder block.
    pub layers: Vec<LayerAdapters<B>>,
}

impl<B: Backend> Adapters<B> for PhiAdapters<B> {
    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn delta(&self, layer: usize, projection: Projection, x: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        Some(self.layers.get(layer)?.get(projection)?.delta(x))
    }
}

impl<B: Backend> PhiAdapters<B> {
    /// `phi` with every adapter folded into its base weight: a plain model that computes what
    /// `phi.forward_adapted(.., self)` does (without dropout).
    pub fn merge_into(&self, mut phi: Phi<B>) -> Phi<B> {
        for (layer, adapters) in phi.model.layers.iter_mut().zip(&self.layers) {
            for projection in Projection::ALL {
                if let Some(adapter) = adapters.get(projection) {
                    let linear = layer.projection_mut(projection);
                    *linear = adapter.merge_into(linear.clone());
                }
            }
        }
        phi
    }
}
