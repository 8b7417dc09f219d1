//! The model shapes phi-zoo knows by name: one type, one parse, one alias set, used by every
//! example and by [`named_config`](crate::named_config).

use std::fmt;
use std::str::FromStr;

use phi_zoo_common::PhiConfig;
use phi_zoo_phi1 as phi1;
use phi_zoo_phi1_5 as phi1_5;
use phi_zoo_phi2 as phi2;

/// A named Phi shape, with its published checkpoint where there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Phi-1, 1.3B (`microsoft/phi-1`).
    Phi1,
    /// The phi-1 paper's 350M model (no published checkpoint).
    Phi1Small,
    /// Phi-1.5, 1.3B (`microsoft/phi-1_5`).
    Phi1_5,
    /// Phi-2, 2.7B (`microsoft/phi-2`).
    Phi2,
    /// phi-zoo's demo shape: 4 layers of 128, phi-1.5's vocabulary and rotary split, a context
    /// of 256. Trains in minutes on a CPU; no checkpoint.
    Tiny,
}

impl Variant {
    /// Every variant, in the order help texts list them.
    pub const ALL: [Variant; 5] = [
        Variant::Phi1,
        Variant::Phi1Small,
        Variant::Phi1_5,
        Variant::Phi2,
        Variant::Tiny,
    ];

    /// The name it is printed as (the first of its accepted names).
    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    /// Every name it is accepted by: the hub's spelling and the dotted one.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Variant::Phi1 => &["phi-1", "phi1"],
            Variant::Phi1Small => &["phi-1-small", "phi1-small"],
            Variant::Phi1_5 => &["phi-1.5", "phi-1_5", "phi1_5", "phi1.5"],
            Variant::Phi2 => &["phi-2", "phi2"],
            Variant::Tiny => &["tiny"],
        }
    }

    /// The model's config (its shape, and its published dropout and special tokens).
    pub fn config(self) -> PhiConfig {
        match self {
            Variant::Phi1 => phi1::phi_1(),
            Variant::Phi1Small => phi1::phi_1_small(),
            Variant::Phi1_5 => phi1_5::phi_1_5(),
            Variant::Phi2 => phi2::phi_2(),
            Variant::Tiny => PhiConfig {
                hidden_size: 128,
                intermediate_size: 512,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                num_key_value_heads: 4,
                max_position_embeddings: 256,
                ..phi1_5::phi_1_5()
            },
        }
    }

    /// The published checkpoint on the Hugging Face hub, if any.
    pub fn hub_id(self) -> Option<&'static str> {
        match self {
            Variant::Phi1 => Some(phi1::HUB_ID),
            Variant::Phi1_5 => Some(phi1_5::HUB_ID),
            Variant::Phi2 => Some(phi2::HUB_ID),
            Variant::Phi1Small | Variant::Tiny => None,
        }
    }

    /// The accepted names, for help and error texts.
    pub fn listing() -> String {
        Self::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.names().contains(&name))
            .ok_or_else(|| format!("unknown model shape {name:?}: {}", Self::listing()))
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
