//! Architecture variants of published checkpoints against transformers'
//! float32 math (tests/fixtures/variants, made by
//! scripts/fixtures/make_hf_variants.py): RoPE scalings, an explicit head_dim,
//! Llama biases, and a Llama 3 GGUF whose scaling is `rope_freqs.weight`;
//! Qwen3 (q/k norms) and Qwen3-MoE (routing, with and without renormalizing),
//! from safetensors and from llama.cpp's GGUF conversion.

use crate::common::*;
use tramontane::source::DirSource;
use tramontane::parse::{Arch, ModelConfig, RopeScaling};
use tramontane::{LoadOptions, Model};

use crate::common::check_variant as check;

/// |router weight - transformers|: measured 8.6e-7 (qwen3_moe, qwen3_moe_gguf),
/// 8.3e-7 (qwen3_moe_nonorm) on lavapipe (2026-12-01).
const ROUTER_TOL: f32 = 1e-5;

#[test]
fn llama3_rope_with_tied_embeddings() {
    let m = check("llama3_rope_tied", LoadOptions::default());
    assert!(matches!(m.config().rope_scaling, RopeScaling::Llama3 { .. }));
    assert!(m.config().tie_embeddings);
}

#[test]
fn linear_rope() {
    check("linear_rope", LoadOptions::default());
}

#[test]
fn yarn_rope_with_its_attention_factor() {
    let m = check("yarn_rope", LoadOptions::default());
    assert!(matches!(m.config().rope_scaling, RopeScaling::Yarn { .. }));
}

#[test]
fn dynamic_ntk_rope_past_max_position() {
    // max_position_embeddings is 24; greedy decoding runs to position 52, where
    // the base grows with every token as transformers recomputes it.
    check("dynamic_rope", LoadOptions { context: Some(64), ..Default::default() });
}

#[test]
fn explicit_head_dim_like_nemo() {
    let m = check("head_dim_nemo", LoadOptions::default());
    let c = m.config();
    assert_ne!(c.head_dim * c.n_heads, c.hidden, "the fixture must have head_dim != hidden / heads");
}

#[test]
fn llama_with_attention_and_mlp_biases() {
    let m = check("llama_bias", LoadOptions::default());
    assert!(m.config().attn_bias && m.config().o_bias && m.config().mlp_bias);
    // Prefill in small chunks takes the matmul path with the same biases.
    drop(m);
    check("llama_bias", LoadOptions { chunk: 7, ..Default::default() });
}

#[test]
fn llama3_gguf_with_rope_freqs_matches_the_hf_model() {
    let src = DirSource::new(fixtures().join("variants/llama3_gguf"));
    let mut m = pollster::block_on(Model::load_gguf(gpu(), &src, "llama3-f32.gguf", &LoadOptions::default(), &mut |_| {})).expect("loads");
    assert!(matches!(m.config().rope_scaling, RopeScaling::Factors(_)));
    let worst = check_reference(&mut m, &variant_reference("llama3_gguf"), "llama3_gguf", LOGIT_TOL);
    eprintln!("llama3_gguf: max |logit - reference| over top-20 = {worst:.2e}");
}

fn gguf_variant(folder: &str, file: &str) -> Model {
    let src = DirSource::new(fixtures().join("variants").join(folder));
    pollster::block_on(Model::load_gguf(gpu(), &src, file, &LoadOptions::default(), &mut |_| {})).expect("loads")
}

/// The experts each position's router chose, in order, and their weights must
/// be transformers' (reference.json `router`: per prompt, per layer).
fn check_routes(model: &mut Model, r: &serde_json::Value, name: &str) {
    let k = model.config().moe.as_ref().expect("an MoE config").top_k;
    let mut worst = 0f32;
    for p in r["prompts"].as_array().expect("prompts") {
        let input = ids(&p["input_ids"]);
        // One chunk holds the whole prompt, so the last pass routed every position.
        assert!(input.len() <= 64);
        pollster::block_on(model.logits_all(&input)).expect("forward");
        let got = pollster::block_on(model.runtime.router_choices(input.len())).expect("router");
        let layers = p["router"].as_array().expect("router");
        assert_eq!(got.len(), layers.len(), "{name}: MoE layers");
        for (l, (route, (g_ids, g_w))) in layers.iter().zip(&got).enumerate() {
            let (experts, weights) = (route["experts"].as_array().expect("experts"), route["weights"].as_array().expect("weights"));
            assert_eq!((experts.len(), weights.len()), (input.len(), input.len()), "{name} layer {l}: a route per position");
            assert_eq!((g_ids.len(), g_w.len()), (k * input.len(), k * input.len()), "{name} layer {l}: {k} experts per position");
            for (pos, (experts, weights)) in experts.iter().zip(weights).enumerate() {
                assert_eq!(&g_ids[pos * k..(pos + 1) * k], &ids(experts)[..], "{name}: experts at layer {l} position {pos}");
                let weights = weights.as_array().expect("weights");
                assert_eq!(weights.len(), k, "{name}: weights at layer {l} position {pos}");
                for (s, w) in weights.iter().enumerate() {
                    let w = w.as_f64().expect("weight") as f32;
                    let d = (g_w[pos * k + s] - w).abs();
                    worst = worst.max(d);
                    assert!(d < ROUTER_TOL, "{name}: weight {s} at layer {l} position {pos}: {} vs {w}", g_w[pos * k + s]);
                }
            }
        }
    }
    eprintln!("{name}: max |router weight - reference| = {worst:.2e}");
}

#[test]
fn qwen3_q_k_norm_with_explicit_head_dim() {
    let m = check("qwen3", LoadOptions::default());
    let c = m.config();
    assert_eq!(c.arch, Arch::Qwen3);
    assert!(c.qk_norm && !c.attn_bias && !c.o_bias && !c.rope_interleaved);
    assert_ne!(c.head_dim * c.n_heads, c.hidden, "the fixture must have head_dim != hidden / heads");
    // Prefill in small chunks: the norm sees rows at later positions too.
    drop(m);
    check("qwen3", LoadOptions { chunk: 7, ..Default::default() });
}

#[test]
fn qwen3_gguf_matches_the_hf_model() {
    // llama.cpp's converter keeps Qwen3's q/k unpermuted: rotate-half RoPE.
    let mut m = gguf_variant("qwen3_gguf", "qwen3-f32.gguf");
    assert_eq!(m.config().arch, Arch::Qwen3);
    assert!(m.config().qk_norm && !m.config().rope_interleaved);
    let worst = check_reference(&mut m, &variant_reference("qwen3_gguf"), "qwen3_gguf", LOGIT_TOL);
    eprintln!("qwen3_gguf: max |logit - reference| over top-20 = {worst:.2e}");
}

#[test]
fn qwen3_moe_routes_and_renormalizes_like_transformers() {
    let mut m = check("qwen3_moe", LoadOptions::default());
    let moe = m.config().moe.clone().expect("MoE");
    assert_eq!(m.config().arch, Arch::Qwen3Moe);
    assert_eq!((moe.n_experts, moe.top_k, moe.norm_topk), (8, 3, true), "from config.json (num_local_experts, norm_topk_prob)");
    assert_eq!(m.config().intermediate, 48, "moe_intermediate_size");
    check_routes(&mut m, &variant_reference("qwen3_moe"), "qwen3_moe");
}

#[test]
fn qwen3_moe_without_renormalization() {
    let r = variant_reference("qwen3_moe_nonorm");
    // The fixture must tell the two apart: chosen weights summing well below 1.
    let sums: Vec<f64> = r["prompts"][0]["router"][0]["weights"].as_array().expect("weights").iter()
        .map(|w| w.as_array().expect("row").iter().filter_map(|x| x.as_f64()).sum()).collect();
    assert!(sums.iter().any(|s| *s < 0.9), "{sums:?}");
    let mut m = check("qwen3_moe_nonorm", LoadOptions::default());
    assert!(!m.config().moe.as_ref().expect("MoE").norm_topk, "norm_topk_prob false read from config.json");
    check_routes(&mut m, &r, "qwen3_moe_nonorm");
}

#[test]
fn qwen3_moe_gguf_matches_the_hf_model() {
    // Fused `ffn_*_exps` tensors; no expert_weights_norm key: llama.cpp's
    // qwen3moe renormalizes, as the HF model (norm_topk_prob true) does.
    let mut m = gguf_variant("qwen3_moe_gguf", "qwen3_moe-f32.gguf");
    assert_eq!(m.config().arch, Arch::Qwen3Moe);
    assert!(m.config().moe.as_ref().expect("MoE").norm_topk);
    let r = variant_reference("qwen3_moe_gguf");
    let worst = check_reference(&mut m, &r, "qwen3_moe_gguf", LOGIT_TOL);
    eprintln!("qwen3_moe_gguf: max |logit - reference| over top-20 = {worst:.2e}");
    check_routes(&mut m, &r, "qwen3_moe_gguf");
}

#[test]
fn qwen3_layouts_the_engine_does_not_run_are_refused() {
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join("variants/qwen3_moe/config.json")).expect("config")).expect("json");
    assert!(ModelConfig::from_json(base.to_string().as_bytes(), "config.json").is_ok());
    for (key, value, named) in [
        ("use_sliding_window", serde_json::json!(true), "use_sliding_window"),
        ("mlp_only_layers", serde_json::json!([1]), "mlp_only_layers"),
        ("decoder_sparse_step", serde_json::json!(2), "decoder_sparse_step"),
    ] {
        let mut c = base.clone();
        c[key] = value;
        match ModelConfig::from_json(c.to_string().as_bytes(), "config.json") {
            Err(tramontane::Error::Unsupported(msg)) => assert!(msg.contains(named), "{key}: {msg}"),
            other => panic!("{key}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn explicit_head_dim_from_gguf_key_length() {
    // head_dim_nemo converted by convert_hf_to_gguf.py: attention.key_length 32
    // with hidden 64 over 4 heads.
    let mut m = gguf_variant("nemo_gguf", "nemo-f32.gguf");
    assert_ne!(m.config().head_dim * m.config().n_heads, m.config().hidden);
    let worst = check_reference(&mut m, &variant_reference("nemo_gguf"), "nemo_gguf", LOGIT_TOL);
    eprintln!("nemo_gguf: max |logit - reference| over top-20 = {worst:.2e}");
}

#[test]
fn yarn_with_attention_factor_from_hf_and_from_gguf() {
    // transformers' explicit attention_factor replaces the default mscale; the
    // converter writes it as rope.scaling.yarn_attn_factor.
    let m = check("llama_yarn", LoadOptions::default());
    assert!(matches!(m.config().rope_scaling, RopeScaling::Yarn { attention_factor, .. } if (attention_factor - 1.25).abs() < 1e-9));
    drop(m);
    let mut m = gguf_variant("yarn_gguf", "yarn-f32.gguf");
    assert!(matches!(m.config().rope_scaling, RopeScaling::Yarn { .. }));
    let worst = check_reference(&mut m, &variant_reference("yarn_gguf"), "yarn_gguf", LOGIT_TOL);
    eprintln!("yarn_gguf: max |logit - reference| over top-20 = {worst:.2e}");
}
