//! The native test suite, one binary: kernels against CPU references, models
//! against transformers' outputs, bad input, tokenizers, templates, sampling.
//!
//! One binary rather than one per file: every test binary links wgpu, naga
//! and tokenizers (~15 s each on two cores), and the tests of one process
//! share one device and so one pipeline cache (`common::gpu`). The two
//! files that count allocations with a global allocator (`fuzz_corpora`,
//! `lying_headers`) stay binaries of their own.

mod common;

mod bad_input;
mod chat_templates;
mod constrained_tokens;
mod gguf_models;
mod kernels;
mod limits;
mod mixed_types;
mod quant_ggufs;
mod reference_models;
mod sampler;
mod self_test;
mod smollm2_gguf;
mod structured;
mod text_rules;
mod tokenizers;
mod tool_calls;
mod variants;
mod vision;
mod windows;
