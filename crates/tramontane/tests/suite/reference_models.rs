//! End-to-end checks against transformers' float32 reference outputs
//! (tests/fixtures/*/reference.json, see tests/fixtures/README.md):
//! argmax at every prompt position, the top-20 logits, greedy continuations
//! (through the KV-cache decode path), Mistral's 60-token decode far past its
//! 16-token window, and Mixtral's router choices.

use crate::common::*;
use tramontane::{GenerateRequest, LoadOptions, SamplingParams};

/// |router weight - transformers|: measured 7.2e-7 (mixtral_tiny_bf16),
/// 4.2e-7 (mixtral_tiny) on lavapipe (2026-12-01).
const ROUTER_TOL: f32 = 1e-5;
/// |log-probability - (transformers' logit - logsumexp)|: measured 2.4e-6
/// (qwen2_tiny, 2026-12-01).
const LOGPROB_TOL: f32 = 2.5e-5;

fn check_model(name: &str, chunk: usize) {
    check_model_with(name, LoadOptions { chunk, ..Default::default() });
}

fn check_model_with(name: &str, opts: LoadOptions) {
    let chunk = opts.chunk;
    let r = reference(name);
    let mut model = load(name, opts);
    let worst = check_reference(&mut model, &r, name, LOGIT_TOL);
    eprintln!("{name} (chunk {chunk}): max |logit - reference| over top-20 = {worst:.2e}");
}

#[test]
fn llama_matches_transformers() {
    check_model("llama_tiny", 64);
}

#[test]
fn qwen2_with_qkv_bias_matches_transformers() {
    check_model("qwen2_tiny", 64);
}

#[test]
fn mistral_sliding_window_matches_transformers() {
    check_model("mistral_tiny", 64);
}

#[test]
fn mixtral_matches_transformers() {
    check_model("mixtral_tiny", 64);
}

#[test]
fn mixtral_bf16_matches_transformers() {
    check_model("mixtral_tiny_bf16", 64);
}

#[test]
fn small_prefill_chunks_give_the_same_results() {
    // Chunks of 7 split every prompt over several passes and, for Mistral, make
    // the ring buffer (window 16 + chunk 7 = 23 slots) wrap many times.
    check_model("mistral_tiny", 7);
    check_model("llama_tiny", 7);
}

#[test]
fn weights_split_for_a_small_binding_limit_give_the_same_results() {
    // 16 KiB per buffer: the f32 embeddings (and tied LM head) split into 192
    // slabs, Mixtral's stacked expert gate/up into 3 and its experts' down
    // projection into 2 slabs of unequal size.
    let opts = LoadOptions { chunk: 64, max_binding: Some(16 << 10), ..Default::default() };
    let model = load("mixtral_tiny", opts.clone());
    assert!(model.info.split_matrices >= 3, "split {}", model.info.split_matrices);
    drop(model);
    check_model_with("mixtral_tiny", opts);
    // 1 KiB: Qwen2's q/k/v with its bias and the SwiGLU gate/up pair split too.
    let opts = LoadOptions { chunk: 64, max_binding: Some(1 << 10), ..Default::default() };
    check_model_with("qwen2_tiny", opts);
}

fn long_generation(chunk: usize) {
    let r = reference("mistral_tiny");
    let lg = &r["long_generation"];
    let prompt_name = lg["prompt"].as_str().expect("prompt");
    let p = r["prompts"].as_array().expect("prompts").iter().find(|p| p["name"] == prompt_name).expect("prompt");
    let mut model = load("mistral_tiny", LoadOptions { chunk, ..Default::default() });
    assert!(model.info.kv_slots < 130, "the KV cache must not grow with the sequence");
    let g = pollster::block_on(model.generate(&ids(&p["input_ids"]), &greedy(60), &mut |_, _, _| true)).expect("generate");
    assert_eq!(g.generated, ids(&lg["new_ids"]), "60 tokens past the window (chunk {chunk})");
    assert_ne!(g.generated, ids(&lg["new_ids_if_sliding_window_were_None_no_cache"]));
}

#[test]
fn mistral_decodes_far_past_its_window() {
    long_generation(64);
    long_generation(5);
}

fn check_router(name: &str) {
    let r = reference(name);
    let router = &r["router"];
    let prompt_name = router["prompt"].as_str().expect("prompt");
    let p = r["prompts"].as_array().expect("prompts").iter().find(|p| p["name"] == prompt_name).expect("prompt");
    let input = ids(&p["input_ids"]);
    let mut model = load(name, LoadOptions::default());
    pollster::block_on(model.logits_all(&input)).expect("forward");
    let got = pollster::block_on(model.runtime.router_choices(input.len())).expect("router");
    let layers = router["all_layers_all_positions"].as_array().expect("layers");
    assert_eq!(got.len(), layers.len());
    let mut worst = 0f32;
    for (l, want) in layers.iter().enumerate() {
        let (g_ids, g_w) = &got[l];
        let positions = want["experts"].as_array().expect("experts");
        assert_eq!(positions.len(), input.len(), "{name} layer {l}: a route per position");
        assert_eq!((g_ids.len(), g_w.len()), (2 * input.len(), 2 * input.len()), "{name} layer {l}: two experts per position");
        for (pos, experts) in positions.iter().enumerate() {
            let e = ids(experts);
            assert_eq!(&g_ids[pos * 2..pos * 2 + 2], &e[..], "{name} layer {l} position {pos}: experts");
            let weights = want["weights"][pos].as_array().expect("weights");
            assert_eq!(weights.len(), 2, "{name} layer {l} position {pos}: two weights");
            for (s, w) in weights.iter().enumerate() {
                let d = (g_w[pos * 2 + s] - w.as_f64().expect("w") as f32).abs();
                worst = worst.max(d);
                assert!(d < ROUTER_TOL, "{name} layer {l} position {pos}: weight {s} off by {d}");
            }
        }
    }
    eprintln!("{name}: max |router weight - reference| = {worst:.2e}");
}

#[test]
fn mixtral_router_picks_the_reference_experts() {
    check_router("mixtral_tiny");
    check_router("mixtral_tiny_bf16");
}

/// The references again through the kernels' GPU shapes: every
/// architecture, a small prefill chunk (Mistral's ring wrapping), 60 tokens
/// past the window and the router's choices.
#[test]
fn gpu_shapes_match_transformers() {
    in_gpu_shapes(|| {
        for name in ["llama_tiny", "qwen2_tiny", "mistral_tiny", "mixtral_tiny", "mixtral_tiny_bf16"] {
            check_model(name, 64);
        }
        check_model("mistral_tiny", 7);
        long_generation(5);
        check_router("mixtral_tiny");
        assert_eq!(gpu().profile().shapes, tramontane::gpu::Shapes::Gpu, "the GPU shapes were used");
    });
}

#[test]
fn a_new_turn_prefills_only_its_new_tokens() {
    let r = reference("llama_tiny");
    let p = &r["prompts"][1];
    let first = ids(&p["input_ids"]);
    let mut model = load("llama_tiny", LoadOptions { chunk: 8, ..Default::default() });
    let g1 = pollster::block_on(model.generate(&first, &greedy(6), &mut |_, _, _| true)).expect("turn 1");
    assert_eq!(g1.prefilled_tokens, first.len());
    let mut second = first.clone();
    second.extend(&g1.generated);
    second.extend([260, 1165, 6740]);
    let g2 = pollster::block_on(model.generate(&second, &greedy(8), &mut |_, _, _| true)).expect("turn 2");
    // Cached: the first prompt and all generated tokens but the last one.
    assert_eq!(g2.prefilled_tokens, second.len() - (first.len() + g1.generated.len() - 1));
    let mut fresh = load("llama_tiny", LoadOptions::default());
    let g3 = pollster::block_on(fresh.generate(&second, &greedy(8), &mut |_, _, _| true)).expect("fresh");
    assert_eq!(g2.generated, g3.generated, "reusing the cache changes nothing");
}

#[test]
fn rolling_cache_reuse_falls_back_when_the_window_is_gone() {
    let r = reference("mistral_tiny");
    let p = &r["prompts"][3]; // 70 tokens, window 16, ring 16 + 8
    let prompt = ids(&p["input_ids"]);
    let mut model = load("mistral_tiny", LoadOptions { chunk: 8, ..Default::default() });
    pollster::block_on(model.generate(&prompt, &greedy(4), &mut |_, _, _| true)).expect("turn 1");
    // Branch off early: the keys it needs were overwritten, so all is recomputed.
    let branch = prompt[..30].to_vec();
    let g = pollster::block_on(model.generate(&branch, &greedy(4), &mut |_, _, _| true)).expect("branch");
    assert_eq!(g.prefilled_tokens, 30);
    let mut fresh = load("mistral_tiny", LoadOptions { chunk: 8, ..Default::default() });
    let want = pollster::block_on(fresh.generate(&branch, &greedy(4), &mut |_, _, _| true)).expect("fresh");
    assert_eq!(g.generated, want.generated);
}

/// A turn that ends shorter than the one before leaves that one's later
/// keys in the ring, where they overwrote earlier positions: a third turn
/// branching below them must not reuse what they overwrote (it did, and
/// read a key 24 positions off), nor may a prefill of part of the cache cut it.
#[test]
fn a_cache_cut_back_keeps_the_ring_positions_it_overwrote_out_of_reuse() {
    let r = reference("mistral_tiny");
    let prompt = ids(&r["prompts"][3]["input_ids"]); // 70 tokens, window 16, ring 16 + 8
    let opts = || LoadOptions { chunk: 8, ..Default::default() };
    let mut model = load("mistral_tiny", opts());
    let req = GenerateRequest { top_logits: 20, ..greedy(4) };
    let g1 = pollster::block_on(model.generate(&prompt, &greedy(20), &mut |_, _, _| true)).expect("turn 1");
    let mut long = prompt.clone();
    long.extend(&g1.generated); // positions 0..89 written, 0..88 cached
    // Turn 2 ends at 82 tokens (81 reused, one run, one token sampled, none run).
    let g2 = pollster::block_on(model.generate(&long[..82], &greedy(1), &mut |_, _, _| true)).expect("turn 2");
    assert_eq!(g2.prefilled_tokens, 1);
    // A prefill of what is cached runs nothing and keeps the rest.
    assert_eq!(pollster::block_on(model.prefill(&long[..60])).expect("prefill"), 0);
    assert_eq!(model.cached_tokens().len(), 82);
    // Turn 3 branches at 74: its first query needs keys 59..74, and 59's
    // slot holds position 83 since turn 1.
    let mut branch = long[..74].to_vec();
    branch.extend([5, 6, 7]);
    let g3 = pollster::block_on(model.generate(&branch, &req, &mut |_, _, _| true)).expect("turn 3");
    let mut fresh = load("mistral_tiny", opts());
    let want = pollster::block_on(fresh.generate(&branch, &req, &mut |_, _, _| true)).expect("fresh");
    for (a, b) in g3.top_logits.iter().zip(&want.top_logits) {
        assert!(a.0 == b.0 && (a.1 - b.1).abs() <= LOGIT_TOL, "{a:?} vs {b:?}");
    }
    assert_eq!(g3.generated, want.generated);
    assert_eq!(g3.prefilled_tokens, branch.len(), "nothing reusable: all recomputed");
}

#[test]
fn seeded_sampling_is_reproducible() {
    let r = reference("llama_tiny");
    let prompt = ids(&r["prompts"][1]["input_ids"]);
    let mut model = load("llama_tiny", LoadOptions::default());
    let req = |seed| GenerateRequest {
        sampling: SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 50, seed, ..Default::default() },
        max_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let run = |m: &mut tramontane::Model, seed| {
        m.reset();
        pollster::block_on(m.generate(&prompt, &req(seed), &mut |_, _, _| true)).expect("sample").generated
    };
    let a = run(&mut model, 7);
    let b = run(&mut model, 7);
    let c = run(&mut model, 8);
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "another seed, other tokens");
    // top_k = 1 is greedy whatever the temperature.
    model.reset();
    let k1 = GenerateRequest { sampling: SamplingParams { temperature: 1.5, top_k: 1, seed: 3, ..Default::default() }, ..greedy(16) };
    let g = pollster::block_on(model.generate(&prompt, &k1, &mut |_, _, _| true)).expect("k1");
    assert_eq!(g.generated, ids(&r["prompts"][1]["greedy"]["new_ids"]));
}

#[test]
fn top_logits_and_stop_conditions() {
    let r = reference("llama_tiny");
    let p = &r["prompts"][0];
    let prompt = ids(&p["input_ids"]);
    let mut model = load("llama_tiny", LoadOptions::default());
    let req = GenerateRequest { top_logits: 20, ..greedy(5) };
    let g = pollster::block_on(model.generate(&prompt, &req, &mut |_, _, _| true)).expect("generate");
    let want = p["last_position"]["top20"].as_array().expect("top20");
    assert_eq!(g.top_logits.len(), 20);
    assert_eq!(want.len(), 20);
    let mut worst = 0f32;
    for (got, want) in g.top_logits.iter().zip(want) {
        assert_eq!(got.0 as u64, want[0].as_u64().expect("id"));
        let d = (got.1 - want[1].as_f64().expect("l") as f32).abs();
        worst = worst.max(d);
        assert!(d < LOGIT_TOL, "top logit {} off by {d}", got.0);
    }
    eprintln!("llama_tiny: max |top logit - reference| = {worst:.2e}");
    assert_eq!(g.generated.len(), 5);
    assert_eq!(g.finish, tramontane::FinishReason::Length);
    // A stop string cuts the text and ends generation; streamed pieces never
    // include it.
    let full = g.text.clone();
    let stop: String = full.chars().skip(3).take(3).collect();
    model.reset();
    let mut streamed = String::new();
    let req = GenerateRequest { stop: vec![stop.clone()], ..greedy(5) };
    let g2 = pollster::block_on(model.generate(&prompt, &req, &mut |piece, _, _| {
        streamed.push_str(piece);
        true
    }))
    .expect("generate");
    assert_eq!(g2.finish, tramontane::FinishReason::Stop);
    assert_eq!(g2.text, full[..full.find(&stop).expect("stop in text")]);
    assert_eq!(streamed, g2.text);
    // Aborting from the callback ends the request and leaves the model usable.
    model.reset();
    let r = pollster::block_on(model.generate(&prompt, &greedy(5), &mut |_, _, _| false));
    assert_eq!(r.err(), Some(tramontane::Error::Aborted));
    model.reset();
    let again = pollster::block_on(model.generate(&prompt, &greedy(5), &mut |_, _, _| true)).expect("after abort");
    assert_eq!(again.generated, g.generated);
}

#[test]
fn chat_template_renders_chatml() {
    let model = load("llama_tiny", LoadOptions::default());
    let msgs = [tramontane::ChatMessage::new("user", "Hi")];
    let ids = model.chat_prompt(&msgs).expect("render");
    let text = model.tokenizer().decode(&ids, false).expect("decode");
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(model.tokenizer().is_eos(2));
}

#[test]
fn logprobs_agree_with_the_reference_logits() {
    let r = reference("qwen2_tiny");
    let mut model = load("qwen2_tiny", LoadOptions::default());
    let mut worst = 0f32;
    for p in r["prompts"].as_array().expect("prompts") {
        let input = ids(&p["input_ids"]);
        let last = &p["last_position"];
        let lse = last["logsumexp"].as_f64().expect("lse") as f32;
        let top20 = last["top20"].as_array().expect("top20");
        model.reset();
        let req = GenerateRequest { logprobs: Some(5), ..greedy(3) };
        let mut streamed = Vec::new();
        let g = pollster::block_on(model.generate(&input, &req, &mut |_, id, lp| {
            streamed.push((id, lp.cloned()));
            true
        }))
        .expect("generate");
        assert_eq!(g.logprobs.len(), 3);
        let first = &g.logprobs[0];
        let want = top20[0][1].as_f64().expect("l") as f32 - lse;
        let mut d = (first.logprob - want).abs();
        assert!(d < LOGPROB_TOL, "{}: logprob {} want {want}", p["name"], first.logprob);
        assert_eq!(first.top.len(), 5);
        assert!(top20.len() >= first.top.len(), "the reference holds the top 5");
        for (got, want) in first.top.iter().zip(top20) {
            assert_eq!(got.0 as u64, want[0].as_u64().expect("id"));
            let e = (got.1 - (want[1].as_f64().expect("l") as f32 - lse)).abs();
            d = d.max(e);
            assert!(e < LOGPROB_TOL, "{}: logprob of {} off by {e}", p["name"], got.0);
        }
        worst = worst.max(d);
        assert!(first.top.windows(2).all(|w| w[0].1 >= w[1].1), "highest first");
        assert_eq!(streamed.len(), 3, "one callback per token");
        assert_eq!(streamed[0].1.as_ref(), Some(first));
    }
    eprintln!("qwen2_tiny: max |logprob - reference| = {worst:.2e}");
}
