//! Phi-2 (2.7B).

#![warn(missing_docs)]

pub use phi_zoo_common::PhiConfig;

/// The published Phi-2 checkpoint (sharded safetensors, float16).
pub const HUB_ID: &str = "microsoft/phi-2";

/// Phi-2: 32 layers, hidden 2560, 32 heads of 80 with 32 rotary channels (factor 0.4),
/// residual dropout 0.1, and `<|endoftext|>` (50256) as BOS and EOS (ARCHITECTURE.md §2).
pub fn phi_2() -> PhiConfig {
    PhiConfig {
        hidden_size: 2560,
        intermediate_size: 10240,
        num_hidden_layers: 32,
        partial_rotary_factor: 0.4,
        resid_pdrop: 0.1,
        bos_token_id: Some(50256),
        eos_token_id: Some(50256),
        ..PhiConfig::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_matches_the_release() {
        let config = super::phi_2();
        config.validate("phi-2").unwrap();
        assert_eq!((config.head_dim(), config.rotary_dim()), (80, 32));
        assert_eq!(config.num_parameters(), 2_779_683_840);
    }
}
