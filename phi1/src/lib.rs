//! Phi-1 (1.3B, Python code) and the phi-1 paper's 350M `phi-1-small`.

#![warn(missing_docs)]

pub use phi_zoo_common::PhiConfig;

/// The published Phi-1 checkpoint.
pub const HUB_ID: &str = "microsoft/phi-1";

/// Phi-1: 24 layers, hidden 2048, 32 heads of 64 with 32 rotary channels (ARCHITECTURE.md §2).
pub fn phi_1() -> PhiConfig {
    // transformers' PhiConfig defaults are exactly this shape.
    PhiConfig::default()
}

/// The phi-1 paper's 350M model (20 layers, hidden 1024, 16 heads). No checkpoint was published;
/// it is the size the paper's data ablations were run at.
pub fn phi_1_small() -> PhiConfig {
    PhiConfig {
        hidden_size: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 20,
        num_attention_heads: 16,
        num_key_value_heads: 16,
        ..phi_1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_paper() {
        let phi1 = phi_1();
        phi1.validate("phi-1").unwrap();
        assert_eq!((phi1.head_dim(), phi1.rotary_dim()), (64, 32));
        assert_eq!(phi1.num_parameters(), 1_418_270_720);
        let small = phi_1_small();
        small.validate("phi-1-small").unwrap();
        assert_eq!((small.head_dim(), small.rotary_dim()), (64, 32));
        let millions = small.num_parameters() / 1_000_000;
        assert!((340..=360).contains(&millions), "{millions}M");
    }
}
