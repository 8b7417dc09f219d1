//! Phi-1.5 (1.3B, code plus synthetic textbooks). Same architecture and shape as Phi-1.

pub use phi_zoo_common::PhiConfig;

/// The published Phi-1.5 checkpoint.
pub const HUB_ID: &str = "microsoft/phi-1_5";

/// Phi-1.5: the shape of Phi-1 (PHI_SPEC §2); only the training data differs.
pub fn phi_1_5() -> PhiConfig {
    PhiConfig {
        vocab_size: 51200,
        hidden_size: 2048,
        intermediate_size: 8192,
        num_hidden_layers: 24,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        partial_rotary_factor: 0.5,
        rope_theta: 10000.0,
        max_position_embeddings: 2048,
        layer_norm_eps: 1e-5,
        qk_layernorm: false,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attention_dropout: 0.0,
        bos_token_id: None,
        eos_token_id: None,
    }
}

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
