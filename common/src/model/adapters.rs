//! What may plug into a block's projections: an adapter adds its own term to a projection's
//! output (LoRA's low-rank update today). The model defines the interface and knows nothing of
//! the implementations, which depend on the model and never the reverse.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

/// A projection of a decoder block, named as in transformers' Phi (and PEFT's `target_modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    /// The query projection, `q_proj`.
    Q,
    /// The key projection, `k_proj`.
    K,
    /// The value projection, `v_proj`.
    V,
    /// The attention output projection, `dense`.
    Dense,
    /// The MLP's first layer, `fc1`.
    Fc1,
    /// The MLP's second layer, `fc2`.
    Fc2,
}

impl Projection {
    /// Every projection, in the order of a block's forward pass.
    pub const ALL: [Projection; 6] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::Dense,
        Projection::Fc1,
        Projection::Fc2,
    ];

    /// The module's name in transformers' Phi.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::Dense => "dense",
            Projection::Fc1 => "fc1",
            Projection::Fc2 => "fc2",
        }
    }

    /// Parses a comma-separated list such as `q,k,v,dense` (or `q_proj,fc1`, or `all`).
    pub fn parse_list(list: &str) -> Result<Vec<Projection>, String> {
        if list.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut projections = vec![];
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let projection = part.parse()?;
            if !projections.contains(&projection) {
                projections.push(projection);
            }
        }
        if projections.is_empty() {
            return Err(format!("no projections in {list:?}"));
        }
        Ok(projections)
    }
}

impl FromStr for Projection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "q" | "q_proj" => Projection::Q,
            "k" | "k_proj" => Projection::K,
            "v" | "v_proj" => Projection::V,
            "dense" | "o" | "o_proj" => Projection::Dense,
            "fc1" => Projection::Fc1,
            "fc2" => Projection::Fc2,
            _ => {
                return Err(format!(
                    "unknown projection {s:?}: q, k, v, dense, fc1, fc2"
                ));
            }
        })
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Terms added to projection outputs, block by block.
pub trait Adapters<B: Backend> {
    /// The blocks these adapters are made for (the model checks it matches its own).
    fn num_layers(&self) -> usize;

    /// What block `layer`'s `projection` adds to its output for input `x: [batch, seq, in]`
    /// (`[batch, seq, out]`), or `None` when nothing is adapted there.
    fn delta(&self, layer: usize, projection: Projection, x: Tensor<B, 3>) -> Option<Tensor<B, 3>>;
}
