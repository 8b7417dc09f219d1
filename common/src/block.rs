//! One Phi decoder layer: a parallel block with a single LayerNorm (PHI_SPEC §1.2),
//! `h + dropout(attn(ln(h))) + dropout(mlp(ln(h)))`.

use burn::nn::{Dropout, LayerNorm};
use burn::prelude::*;

use crate::attention::PhiAttention;
use crate::cache::LayerCache;
use crate::lora::LayerAdapters;
use crate::mlp::PhiMlp;
use crate::positions::Positions;
use crate::rotary::PartialRotary;

#[derive(Module, Debug)]
pub struct PhiDecoderLayer<B: Backend> {
    pub input_layernorm: LayerNorm<B>,
    pub self_attn: PhiAttention<B>,
    pub mlp: PhiMlp<B>,
    pub resid_dropout: Dropout,
}

impl<B: Backend> PhiDecoderLayer<B> {
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rotary: &PartialRotary<B>,
        positions: &Positions<B>,
        cache: Option<&mut LayerCache<B>>,
        adapters: Option<&LayerAdapters<B>>,
    ) -> Tensor<B, 3> {
        let x = self.input_layernorm.forward(h.clone());
        let attn = self
            .self_attn
            .forward(x.clone(), rotary, positions, cache, adapters);
        let mlp = self.mlp.forward(x, adapters);
        h + self.resid_dropout.forward(attn) + self.resid_dropout.forward(mlp)
    }
}
