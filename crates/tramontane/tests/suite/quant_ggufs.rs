//! GGUFs quantized by llama.cpp's own llama-quantize (Q2_K, Q3_K_M, IQ4_NL,
//! IQ4_XS, and a Q4_K_M whose ffn_up is Q6_K: gate and up of different types)
//! of a Llama 3-style model with rope_freqs, against numpy float64 math on
//! their dequantized weights (scripts/fixtures/make_quant_ggufs.py): argmax at
//! every position, top-20 logits within 1.5e-4, greedy tokens identical.

use crate::common::*;
use tramontane::source::DirSource;
use tramontane::upload::Ffn;
use tramontane::{KvCache, LoadOptions, Model};

/// Quantized weights, f32 accumulation, against float64 on the same
/// dequantized values: measured 1.53e-5 (Q2_K), 9.1e-6 (Q3_K_M), 7.6e-6
/// (IQ4_XS), 6.9e-6 (IQ4_NL), 5.3e-6 (Q4_K_M + Q6_K) on lavapipe (2026-12-01).
const TOL: f32 = 1.5e-4;

fn check(file: &str) -> Model {
    let dir = fixtures().join("quant_ggufs");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(file.replace(".gguf", ".json"))).expect("reference")).expect("json");
    // f32 KV cache: the reference keeps keys and values in float64.
    let opts = LoadOptions { kv_cache: KvCache::F32, ..Default::default() };
    let mut m = pollster::block_on(Model::load_gguf(gpu(), &DirSource::new(&dir), file, &opts, &mut |_| {})).expect("loads");
    let worst = check_reference(&mut m, &r, file, TOL);
    eprintln!("{file}: max |logit - float64 reference| over top-20 = {worst:.2e}");
    // The file really holds the type it is named for.
    let want = file.trim_start_matches("llama3-").trim_end_matches(".gguf").split('-').next().unwrap_or("").to_lowercase();
    let want = want.trim_end_matches("_m");
    let types: Vec<&str> = r["types"].as_object().expect("types").values().filter_map(|v| v.as_str()).collect();
    assert!(types.iter().any(|t| t.to_lowercase() == want), "{file}: no {want} tensor in {types:?}");
    m
}

/// Every quantized type again through the kernels' GPU shapes (a block per
/// workgroup lane group, dequantized in the tiled matmul).
#[test]
fn gpu_shapes_match_float_math() {
    in_gpu_shapes(|| {
        for file in ["llama3-Q2_K.gguf", "llama3-Q3_K_M.gguf", "llama3-IQ4_NL.gguf", "llama3-IQ4_XS.gguf", "llama3-Q4_K_M-up_q6_K.gguf"] {
            check(file);
        }
    });
}

#[test]
fn q2_k() {
    check("llama3-Q2_K.gguf");
}

#[test]
fn q3_k_m_mixes_types() {
    check("llama3-Q3_K_M.gguf");
}

#[test]
fn iq4_nl() {
    check("llama3-IQ4_NL.gguf");
}

#[test]
fn iq4_xs() {
    check("llama3-IQ4_XS.gguf");
}

#[test]
fn gate_and_up_of_different_types_keep_their_types() {
    let m = check("llama3-Q4_K_M-up_q6_K.gguf");
    match &m.runtime.weights.layers[0].ffn {
        Ffn::Dense { gate_up, up: Some(up), .. } => assert_ne!(gate_up.dtype(), up.dtype()),
        _ => panic!("expected gate and up apart, each in its own type"),
    }
}
