//! Sizes from options and configs are checked before the first weight byte is
//! read, memory limits end in OUT_OF_MEMORY, requests of the wrong shape in
//! INVALID_REQUEST naming the field; and after each, the same GPU loads the
//! model again and gives the reference tokens.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use tramontane::source::{DirSource, ModelSource};
use tramontane::text::ChatRequest;
use tramontane::{Error, Gpu, LoadOptions, Model};

/// A folder source that records every read, to show which bytes a failed
/// load touched.
struct Recording {
    inner: DirSource,
    reads: RefCell<Vec<(String, u64, u64)>>,
}

impl ModelSource for Recording {
    async fn size(&self, name: &str) -> tramontane::Result<Option<u64>> {
        self.inner.size(name).await
    }
    async fn read(&self, name: &str, offset: u64, len: u64) -> tramontane::Result<Vec<u8>> {
        self.reads.borrow_mut().push((name.to_string(), offset, len));
        self.inner.read(name, offset, len).await
    }
}

fn recording(dir: &Path) -> Recording {
    Recording { inner: DirSource::new(dir), reads: RefCell::new(Vec::new()) }
}

/// Whether any read reached a shard's tensor data (past its header).
fn read_weights(src: &Recording, dir: &Path) -> bool {
    src.reads.borrow().iter().any(|(name, offset, len)| {
        if !name.ends_with(".safetensors") {
            return false;
        }
        let bytes = std::fs::read(dir.join(name)).expect("shard");
        let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        offset + len > data_start
    })
}

fn load_with(gpu: &Arc<Gpu>, src: &impl ModelSource, opts: LoadOptions) -> Result<Model, Error> {
    pollster::block_on(Model::load(gpu.clone(), src, &opts, &mut |_| {}))
}

fn refused(r: Result<Model, Error>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: loaded"),
        Err(e) => e,
    }
}

/// The first prompt of llama_tiny's reference, greedy, as transformers gave it.
fn assert_reference_tokens(model: &mut Model) {
    let r = reference("llama_tiny");
    let p = &r["prompts"][0];
    let want = ids(&p["greedy"]["new_ids"]);
    model.reset();
    let got = pollster::block_on(model.generate(&ids(&p["input_ids"]), &greedy(want.len()), &mut |_, _, _| true)).expect("generate");
    assert_eq!(got.generated, want, "greedy tokens after the errors");
}

#[test]
fn sizes_are_checked_before_any_weight_is_read() {
    let gpu = gpu();
    let dir = fixtures().join("llama_tiny");
    // A context no device can hold: the KV cache (or RoPE table) is refused in
    // words, with checked arithmetic (2^40 tokens overflows nothing).
    for context in [1usize << 30, 1 << 40, usize::MAX / 2] {
        let src = recording(&dir);
        let e = refused(load_with(&gpu, &src, LoadOptions { context: Some(context), ..Default::default() }), "huge context");
        assert_eq!(e.code(), "UNSUPPORTED", "context {context}: {e}");
        assert!(e.to_string().contains("context"), "{e}");
        assert!(!read_weights(&src, &dir), "context {context}: weights were read before the refusal");
    }
    // A chunk beyond the kernels' limit is refused, not silently lowered.
    let e = refused(load_with(&gpu, &recording(&dir), LoadOptions { chunk: 5000, ..Default::default() }), "chunk 5000");
    assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
    let mut model = load_with(&gpu, &DirSource::new(&dir), LoadOptions::default()).expect("loads afterwards");
    assert_reference_tokens(&mut model);
}

#[test]
fn a_model_larger_than_the_memory_limit_is_out_of_memory_then_loads() {
    let gpu = gpu();
    let dir = fixtures().join("llama_tiny");
    let model = load_with(&gpu, &DirSource::new(&dir), LoadOptions::default()).expect("loads");
    let need = model.info.gpu_bytes;
    // GPU bytes by kind add up: the weights as uploaded, a KV cache of
    // layers × 2 × context × kv_dim f32s, and activations within the total.
    let m = model.info.gpu_memory;
    let cfg = model.config();
    assert_eq!(m.weights, model.info.weight_bytes);
    assert_eq!(m.kv_cache, (cfg.n_layers * 2 * model.info.context * cfg.kv_dim() * 4) as u64);
    assert!(m.activations > 0 && m.scratch > 0);
    assert!(m.weights + m.kv_cache + m.activations + m.scratch <= need, "{m:?} vs {need}");
    drop(model);
    // Too small for the KV cache and activations alone; then room for those
    // but not for the weights. Both are caught before any weight is read.
    for limit in [1024, need - 4096] {
        let src = recording(&dir);
        let e = refused(load_with(&gpu, &src, LoadOptions { max_gpu_bytes: Some(limit), ..Default::default() }), "over the limit");
        assert_eq!(e.code(), "OUT_OF_MEMORY", "limit {limit}: {e}");
        assert!(e.to_string().contains(&limit.to_string()) || e.to_string().contains("max_gpu_bytes"), "{e}");
        assert!(!read_weights(&src, &dir), "limit {limit}: weights were read before the refusal");
    }
    // The same device, with room: the model loads and answers as transformers.
    let mut model = load_with(&gpu, &DirSource::new(&dir), LoadOptions { max_gpu_bytes: Some(need + 4096), ..Default::default() }).expect("fits");
    assert_reference_tokens(&mut model);
}

/// What the plan checked against `max_gpu_bytes` before the download is
/// what the runtime allocated, kind by kind, as the device sizes each buffer
/// and texture: dense, sliding-window (KV rings), MoE (routing buffers per
/// layer), an f16 KV cache, odd chunks and contexts; on lavapipe the prefill
/// inputs' texture copies are in it too.
#[test]
fn the_plan_counts_every_buffer_the_runtime_allocates() {
    let gpu = gpu();
    let f16 = if gpu.adapter.shader_f16 { tramontane::KvCache::F16 } else { tramontane::KvCache::F32 };
    for (name, context, chunk, kv_cache) in [
        ("llama_tiny", None, 64, tramontane::KvCache::Auto),
        ("llama_tiny", Some(77), 7, f16),
        ("mistral_tiny", Some(200), 5, tramontane::KvCache::Auto),
        ("mixtral_tiny", None, 64, tramontane::KvCache::Auto),
        ("mixtral_tiny", Some(50), 3, f16),
        // An image model: its encoder for the largest image and the rows of image features.
        ("vision/mistral3", Some(300), 16, tramontane::KvCache::Auto),
    ] {
        let opts = LoadOptions { context, chunk, kv_cache, ..Default::default() };
        let model = load_with(&gpu, &DirSource::new(fixtures().join(name)), opts).expect("loads");
        let (planned, allocated) = (model.planned_gpu_memory(), model.info.gpu_memory);
        assert_eq!(planned, allocated, "{name} context {context:?} chunk {chunk} {kv_cache:?}: planned vs allocated");
        assert_eq!(model.info.gpu_bytes, allocated.total(), "{name}: the figure checked is the total");
    }
}

#[test]
fn configs_that_claim_absurd_sizes_are_format_errors() {
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama_tiny/config.json")).expect("config")).expect("json");
    for (key, value) in [
        ("num_hidden_layers", 1u64 << 39),
        ("vocab_size", 1 << 30),
        ("hidden_size", 1 << 35),
        ("intermediate_size", 1 << 36),
        ("num_attention_heads", 1 << 20),
    ] {
        let mut cfg = base.clone();
        cfg[key] = value.into();
        let e = tramontane::parse::ModelConfig::from_json(&serde_json::to_vec(&cfg).expect("json"), "config.json").expect_err(key);
        assert_eq!(e.code(), "MODEL_FORMAT", "{key}: {e}");
    }
}

#[test]
fn messages_of_the_wrong_shape_are_invalid_requests_by_field() {
    let model = load("llama_tiny", LoadOptions::default());
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!([{"role": 3, "content": "hi"}]), "messages[0].role"),
        (serde_json::json!(["hello"]), "messages[0]"),
        (serde_json::json!([{"role": "user", "content": 5}]), "messages[0].content"),
        (serde_json::json!([{"role": "user", "content": [{"type": "text", "text": 1}]}]), "messages[0].content[0].text"),
        (serde_json::json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": null, "tool_calls": {"x": 1}}]), "messages[1].tool_calls"),
        (serde_json::json!([{"role": "assistant", "tool_calls": [{"function": {"name": 7}}]}]), "messages[0].tool_calls[0].function.name"),
        (serde_json::json!([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 7}}]}]), "messages[0].tool_calls[0].function.arguments"),
        (serde_json::json!([{"role": "tool", "content": "1", "tool_call_id": 12}]), "messages[0].tool_call_id"),
    ];
    for (messages, field) in cases {
        let req = ChatRequest { messages: serde_json::from_value(messages.clone()).expect("list"), add_generation_prompt: true, ..Default::default() };
        let e = model.chat_ids(&req).expect_err(field);
        assert_eq!(e.code(), "INVALID_REQUEST", "{messages}: {e}");
        assert!(e.to_string().contains(&format!("{field} ")), "{messages}: {e} should name {field}");
    }
    let tools = ChatRequest {
        messages: vec![serde_json::json!({"role": "user", "content": "hi"})],
        tools: Some(vec![serde_json::json!({"type": "function", "function": {"description": "no name"}})]),
        add_generation_prompt: true,
        ..Default::default()
    };
    assert!(model.chat_ids(&tools).expect_err("no name").to_string().contains("tools[0].function.name"));
    // OpenAI's shapes pass: null content beside tool calls with JSON-string
    // arguments, a tool result. (Content parts pass the check too, and go to
    // the template as transformers gives them: this one cannot join them.)
    let parts = ChatRequest {
        messages: vec![serde_json::json!({"role": "user", "content": [{"type": "text", "text": "weather?"}]})],
        ..Default::default()
    };
    parts.validate().expect("text parts are a valid shape");
    let ok = ChatRequest {
        messages: serde_json::from_value(serde_json::json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        ]))
        .expect("list"),
        add_generation_prompt: true,
        ..Default::default()
    };
    ok.validate().expect("OpenAI's tool-call shapes are valid");
    // And the model renders a plain conversation after all the refusals.
    let plain = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "hi")]);
    assert!(!model.chat_ids(&plain).expect("renders").is_empty());
}
