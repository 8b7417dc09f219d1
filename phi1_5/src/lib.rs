//! Phi-1.5 (1.3B, code plus synthetic textbooks). Same architecture and shape as Phi-1.

#![warn(missing_docs)]

pub use phi_zoo_common::PhiConfig;

/// The published Phi-1.5 checkpoint.
pub const HUB_ID: &str = "microsoft/phi-1_5";

/// Phi-1.5: the shape of Phi-1 (ARCHITECTURE.md §2); only the training data differs.
pub fn phi_1_5() -> PhiConfig {
    // transformers' PhiConfig defaults are exactly this shape.
    PhiConfig::default()
}

/// A tiny Phi-1.5-shaped model (4 layers, hidden 128, 4 heads of 32 with 16 rotary channels, the
/// full 51200-token vocabulary, 256 positions; about 14M parameters, most in the embedding and
/// head): the default of `examples/pretrain`, small enough to train on a CPU in minutes.
#[cfg(test)]
mod tests {
    #[test]
    fn shape_is_phi_1s() {
        let config = super::phi_1_5();
        config.validate("phi-1.5").unwrap();
        assert_eq!(config.num_parameters(), 1_418_270_720);
        assert_eq!(config.rotary_dim(), 32);
    }
}
