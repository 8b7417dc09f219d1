//! phi-zoo's integration tests, in one binary (one link) with a module per concern.

mod annotate;
mod bad_input;
mod batching;
mod crash_safety;
mod data_parallel;
mod decode;
mod decontaminate;
mod dedup;
mod eval;
mod example;
mod export;
mod finetune;
mod fixtures;
mod formats;
mod gguf;
mod golden;
#[cfg(unix)]
mod hostile_inputs;
#[cfg(feature = "hub")]
mod hub;
mod llm_proxy;
mod packed;
mod parity;
mod quality_filter;
mod recipes;
mod serve;
mod synthesize;
mod train;
#[cfg(feature = "wgpu")]
mod wgpu;
