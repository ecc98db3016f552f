//! tramontane in the browser: the wasm-bindgen surface under the npm package's
//! JS API (js/index.js). The engine is the same `tramontane` core as natively;
//! this crate adds the `fetch` byte source, the Cache API and JS errors.
//!
//! Methods return Promises built from futures that own an `Rc` of the state, so
//! no borrow is held across an await; the JS layer runs one request at a time.

mod fetch;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Function, Promise, Reflect};
use serde::{Deserialize, Serialize};
use tramontane::{ChatRequest, Error, GenerateRequest, Gpu, KvCache, LoadOptions, Model, SamplingParams};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    // `strftime_now` in chat templates: the browser's local time zone.
    tramontane::text::set_local_offset_source(|secs| {
        let d = js_sys::Date::new(&JsValue::from_f64(secs as f64 * 1000.0));
        -(d.get_timezone_offset() as i32) * 60
    });
}

/// A JS `Error` with a stable `code` (and `url`/`status` for network errors).
fn js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = Reflect::set(&err, &"code".into(), &e.code().into());
    if let Error::Network { url, status, .. } = e {
        let _ = Reflect::set(&err, &"url".into(), &url.as_str().into());
        let _ = Reflect::set(&err, &"status".into(), &(*status).into());
    }
    err.into()
}

/// The device (made on first use, and again after a loss).
async fn ensure_gpu(state: &Rc<RefCell<State>>) -> Result<Arc<Gpu>, JsValue> {
    if let Some(g) = state.borrow().gpu.clone().filter(|g| !g.is_lost()) {
        return Ok(g);
    }
    let gpu = Gpu::new().await.map_err(|e| coded("WEBGPU_UNAVAILABLE", &format!("WebGPU is not available: {e}")))?;
    let gpu = Arc::new(gpu);
    state.borrow_mut().gpu = Some(gpu.clone());
    Ok(gpu)
}

/// After DEVICE_LOST the model's buffers are gone with the device: drop the
/// model so the engine reports "no model" and the next `load` starts afresh.
fn forget_lost_device(state: &Rc<RefCell<State>>, e: &Error) {
    if matches!(e, Error::DeviceLost(_)) {
        let mut st = state.borrow_mut();
        st.model = None;
        st.info = None;
        st.gpu = None;
    }
}

fn coded(code: &str, msg: &str) -> JsValue {
    let err = js_sys::Error::new(msg);
    let _ = Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

fn to_js<T: Serialize>(v: &T) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

#[derive(Default)]
struct State {
    gpu: Option<Arc<Gpu>>,
    model: Option<Model>,
    info: Option<serde_json::Value>,
}

#[wasm_bindgen]
pub struct WasmEngine {
    state: Rc<RefCell<State>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoadSpec {
    /// URL prefix of the model's files (ends with '/').
    base: String,
    /// GGUF file name within `base` (the first part of a split model).
    gguf: Option<String>,
    context: Option<usize>,
    chunk: Option<usize>,
    parallel: Option<usize>,
    /// Cap on one weight buffer, below the device's binding limit.
    max_binding: Option<u64>,
    /// GPU memory the model may take in all (OUT_OF_MEMORY beyond it).
    max_gpu_bytes: Option<u64>,
    /// "auto" (default), "f16" or "f32".
    kv_cache: Option<String>,
    /// The page saw a CPU rasterizer behind WebGPU (SwiftShader, llvmpipe).
    cpu_adapter: Option<bool>,
    /// The device has WebGPU's `subgroups`, at least this many invocations
    /// each (0: none): the page asked for them (wgpu cannot).
    subgroups: Option<u32>,
    #[serde(default = "yes")]
    use_cache: bool,
    /// Files larger than this are cached in parts of this size.
    cache_part_bytes: Option<u64>,
    /// A chat template that replaces the model's own.
    chat_template: Option<String>,
    /// Headers for requests to the model's host only (`headers` and `hfToken`
    /// as `Authorization: Bearer`): never cached, logged or put in errors.
    headers: Option<std::collections::BTreeMap<String, String>>,
}

fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| m.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64)
        .unwrap_or(0.0)
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GenParams {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    seed: Option<u64>,
    stop: Vec<String>,
    repetition_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    ignore_eos: bool,
    top_logits: usize,
    /// 0 = none, else 1 + the number of top alternatives.
    logprobs: u32,
    /// The request offered tools: parse tool calls in the model's format.
    tools: bool,
    /// The request's output-shaping fields as JSON text: `response_format`,
    /// `regex`, `grammar`, `json_schema`, `tool_choice`,
    /// `parallel_tool_calls`, and `tools` (those the template was given).
    constrain: Option<String>,
}

#[derive(Serialize)]
struct GenResult {
    generated: Vec<u32>,
    text: String,
    tool_calls: Vec<serde_json::Value>,
    finish_reason: &'static str,
    prompt_tokens: usize,
    prefilled_tokens: usize,
    prefill_seconds: f64,
    decode_seconds: f64,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    top_logits: Vec<(u32, f32)>,
    /// What the constraint cost, when the request had one.
    constraint: Option<serde_json::Value>,
}

/// The constraint of a request's output-shaping fields (see `GenParams::constrain`).
fn request_constraint(json: &str) -> Result<Option<tramontane::Constraint>, JsValue> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| coded("INVALID_REQUEST", &format!("request: {e}")))?;
    let serde_json::Value::Object(m) = v else { return Err(coded("INVALID_REQUEST", "request: expected an object")) };
    let tools = m.get("tools").and_then(serde_json::Value::as_array).cloned();
    tramontane::openai::request_constraint(&m, tools.as_deref()).map_err(|b| {
        let err = coded("INVALID_REQUEST", &b.message);
        let _ = Reflect::set(&err, &"param".into(), &b.field.into());
        err
    })
}

fn progress(cb: &Function, v: serde_json::Value) {
    let _ = cb.call1(&JsValue::NULL, &to_js(&v));
}

#[wasm_bindgen]
impl WasmEngine {
    #[wasm_bindgen(constructor)]
    pub fn new() -> WasmEngine {
        WasmEngine { state: Rc::new(RefCell::new(State::default())) }
    }

    /// Open the WebGPU device (once; again after a device loss) and describe
    /// the adapter. Rejects with code WEBGPU_UNAVAILABLE.
    pub fn init(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let gpu = ensure_gpu(&state).await?;
            let a = &gpu.adapter;
            Ok(to_js(&serde_json::json!({"name": a.name, "backend": a.backend, "driver": a.driver,
                "shaderF16": a.shader_f16, "maxBufferSize": a.max_buffer_size, "maxStorageBufferBindingSize": a.max_storage_binding})))
        })
    }

    /// Load a model; `on_progress` receives `{phase, file, loaded, total, ...}`.
    pub fn load(&self, spec: JsValue, on_progress: Function, signal: Option<web_sys::AbortSignal>) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let spec: LoadSpec = serde_wasm_bindgen::from_value(spec).map_err(|e| coded("INVALID_REQUEST", &e.to_string()))?;
            let gpu = ensure_gpu(&state).await?;
            if let Some(cpu) = spec.cpu_adapter {
                gpu.set_cpu(cpu);
            }
            gpu.set_subgroups(spec.subgroups.unwrap_or(0));
            // Drop any previous model first: its buffers go before new ones are made.
            state.borrow_mut().model = None;
            let cache = if spec.use_cache { fetch::open_cache().await } else { None };
            let cache_available = cache.is_some();
            let cb = on_progress.clone();
            let on_bytes = Box::new(move |file: &str, loaded: u64, total: u64| {
                progress(&cb, serde_json::json!({"phase": "download", "file": file, "fileLoaded": loaded, "fileTotal": total}));
            });
            let headers = spec.headers.clone().unwrap_or_default().into_iter().collect();
            let src = fetch::FetchSource::new(spec.base.clone(), headers, signal, cache, spec.cache_part_bytes.unwrap_or(fetch::CACHE_PART_BYTES), on_bytes);
            let kv_cache = match spec.kv_cache.as_deref() {
                None | Some("auto") => KvCache::Auto,
                Some("f16") => KvCache::F16,
                Some("f32") => KvCache::F32,
                Some(other) => return Err(coded("INVALID_REQUEST", &format!("kvCache must be \"auto\", \"f16\" or \"f32\", not {other:?}"))),
            };
            let opts = LoadOptions {
                context: spec.context,
                chunk: spec.chunk.unwrap_or(64),
                parallel_downloads: spec.parallel.unwrap_or(4),
                max_binding: spec.max_binding,
                kv_cache,
                max_gpu_bytes: spec.max_gpu_bytes,
            };
            let cb = on_progress.clone();
            let mut on_upload = move |p: tramontane::upload::Progress| {
                progress(&cb, serde_json::json!({"phase": "upload", "loaded": p.done, "total": p.total}));
                if p.done == p.total {
                    // Next: pipelines and bind groups are created.
                    progress(&cb, serde_json::json!({"phase": "compile"}));
                }
            };
            let loaded = match &spec.gguf {
                Some(name) => Model::load_gguf(gpu.clone(), &src, name, &opts, &mut on_upload).await,
                None => Model::load(gpu.clone(), &src, &opts, &mut on_upload).await,
            };
            let mut model = loaded.map_err(|e| {
                // A required file the server does not have: say which URL and status.
                let e = match e {
                    Error::MissingFile { file, .. } if file.contains("://") => {
                        Error::Network { url: file, status: 404, msg: "Not Found".into() }
                    }
                    other => other,
                };
                forget_lost_device(&state, &e);
                js_error(&e)
            })?;
            if let Some(t) = &spec.chat_template {
                model.text.set_template(t);
            }
            src.finish_caching().await;
            progress(&on_progress, serde_json::json!({"phase": "ready"}));
            let stats = src.stats.borrow().clone();
            let cfg = model.config();
            let i = &model.info;
            let mut info = serde_json::json!({
                "arch": i.arch, "dtype": i.dtype, "weightBytes": i.weight_bytes, "gpuBytes": i.gpu_bytes,
                "contextLength": i.context, "vocabSize": cfg.vocab, "layers": cfg.n_layers,
                "experts": cfg.moe.as_ref().map(|m| m.n_experts), "slidingWindow": cfg.sliding_window,
                "loadSeconds": i.load_seconds, "splitMatrices": i.split_matrices, "kvCache": i.kv_cache,
                "deviceProfile": profile_json(&i.device_profile),
                "selfTest": {"kernels": i.self_test.kernels, "millis": i.self_test.millis, "fallbacks": i.self_test.fallbacks},
                "loadPhases": {"prepare": i.load_phases.prepare_s, "selfTest": i.load_phases.self_test_s, "read": i.load_phases.read_s,
                               "upload": i.load_phases.upload_s, "pipelines": i.load_phases.pipelines_s},
                "gpuMemory": {"weights": i.gpu_memory.weights, "kvCache": i.gpu_memory.kv_cache,
                              "activations": i.gpu_memory.activations, "scratch": i.gpu_memory.scratch},
                // Linear memory only grows: its size now is the peak of the load.
                "wasmMemoryBytes": wasm_memory_bytes(),
                "network": {"requests": stats.network_requests, "cacheHits": stats.cache_hits,
                            "bytesDownloaded": stats.bytes_downloaded, "cacheAvailable": cache_available,
                            "cacheWarning": stats.cache_warning},
                "urls": *src.urls.borrow(),
            });
            if let Some(o) = info.as_object_mut() {
                // bos, eos, addBos, hasChatTemplate, chatTemplateError, generationDefaults, toolFormat, ...
                o.extend(model.text.describe());
            }
            let mut st = state.borrow_mut();
            st.model = Some(model);
            st.info = Some(info.clone());
            Ok(to_js(&info))
        })
    }

    /// Generate from token ids. `on_token(piece, id)` returning `false` aborts.
    pub fn generate(&self, prompt: Vec<u32>, params: JsValue, on_token: Function) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let p: GenParams = if params.is_undefined() || params.is_null() {
                GenParams::default()
            } else {
                serde_wasm_bindgen::from_value(params).map_err(|e| coded("INVALID_REQUEST", &e.to_string()))?
            };
            let constraint = match &p.constrain {
                Some(j) => request_constraint(j)?,
                None => None,
            };
            let mut model = state.borrow_mut().model.take().ok_or_else(|| coded("INVALID_REQUEST", "no model is loaded (or a request is running)"))?;
            let d = SamplingParams::default();
            let req = GenerateRequest {
                sampling: SamplingParams {
                    temperature: p.temperature.unwrap_or(1.0),
                    top_k: p.top_k.unwrap_or(d.top_k),
                    top_p: p.top_p.unwrap_or(d.top_p),
                    repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
                    frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
                    presence_penalty: p.presence_penalty.unwrap_or(0.0),
                    seed: p.seed.unwrap_or_else(|| (js_sys::Math::random() * 4294967296.0) as u64),
                },
                max_tokens: p.max_tokens.unwrap_or(256),
                stop: p.stop,
                ignore_eos: p.ignore_eos,
                top_logits: p.top_logits,
                logprobs: (p.logprobs > 0).then(|| p.logprobs - 1),
                tools: if p.tools { Some(model.text.effective_tool_format()) } else { None },
                constraint,
            };
            // Token texts for log-probabilities come from a copy of the tokenizer
            // (the model is borrowed by `generate`); copy it only when needed.
            let tok = req.logprobs.is_some().then(|| model.tokenizer().inner().clone());
            let text_of = move |id: u32| tok.as_ref().and_then(|t| t.decode(&[id], false).ok()).unwrap_or_default();
            let r = model
                .generate(&prompt, &req, &mut |piece, id, lp| {
                    let lp = match lp {
                        None => JsValue::UNDEFINED,
                        Some(l) => to_js(&serde_json::json!({
                            "token": text_of(id),
                            "logprob": l.logprob,
                            "top": l.top.iter().map(|(i, v)| serde_json::json!({"token": text_of(*i), "id": i, "logprob": v})).collect::<Vec<_>>(),
                        })),
                    };
                    on_token.call3(&JsValue::NULL, &piece.into(), &id.into(), &lp).map(|v| v.as_bool() != Some(false)).unwrap_or(false)
                })
                .await;
            state.borrow_mut().model = Some(model);
            let g = r.map_err(|e| {
                forget_lost_device(&state, &e);
                js_error(&e)
            })?;
            Ok(to_js(&GenResult {
                finish_reason: g.finish.as_str(),
                tool_calls: g.tool_calls.iter().map(|c| c.to_openai()).collect(),
                prefill_tokens_per_s: g.prefill_tokens_per_s(),
                decode_tokens_per_s: g.decode_tokens_per_s(),
                generated: g.generated,
                text: g.text,
                prompt_tokens: g.prompt_tokens,
                prefilled_tokens: g.prefilled_tokens,
                prefill_seconds: g.prefill_seconds,
                decode_seconds: g.decode_seconds,
                top_logits: g.top_logits,
                constraint: g.constraint.as_ref().map(|c| c.to_json()),
            }))
        })
    }

    fn with_model<T>(&self, f: impl FnOnce(&Model) -> tramontane::Result<T>) -> Result<T, JsValue> {
        let st = self.state.borrow();
        let m = st.model.as_ref().ok_or_else(|| coded("INVALID_REQUEST", "no model is loaded"))?;
        f(m).map_err(|e| js_error(&e))
    }

    /// Token ids of `text`. `add_special`: the tokenizer's BOS/EOS rule;
    /// `parse_special`: special-token texts become their ids.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>, JsValue> {
        self.with_model(|m| m.tokenizer().encode_with(text, add_special, parse_special))
    }

    pub fn detokenize(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        self.with_model(|m| m.tokenizer().decode(&ids, true))
    }

    /// The prompt text and token ids of a chat request
    /// (`{messages, tools, documents, add_generation_prompt, extra}` as JSON
    /// text: serde_json keeps key order and integer-ness exactly as the page
    /// wrote them, which `tojson` in templates shows).
    #[wasm_bindgen(js_name = chatPrompt)]
    pub fn chat_prompt(&self, request_json: &str) -> Result<JsValue, JsValue> {
        let req: ChatRequest = serde_json::from_str(request_json).map_err(|e| coded("INVALID_REQUEST", &format!("chat request: {e}")))?;
        self.with_model(|m| {
            let text = m.text.chat_text(&req)?;
            let ids = m.tokenizer().encode_with(&text, false, true)?;
            Ok(to_js(&serde_json::json!({"text": text, "ids": ids})))
        })
    }

    #[wasm_bindgen(js_name = resetChat)]
    pub fn reset_chat(&self) {
        if let Some(m) = self.state.borrow_mut().model.as_mut() {
            m.reset();
        }
    }

    /// Free the model's GPU buffers (the device stays open for the next load).
    pub fn unload(&self) {
        let mut st = self.state.borrow_mut();
        st.model = None;
        st.info = None;
        if let Some(g) = &st.gpu {
            g.queue.submit([]);
        }
    }

    pub fn info(&self) -> JsValue {
        self.state.borrow().info.as_ref().map(to_js).unwrap_or(JsValue::NULL)
    }
}

/// The device profile for `info`, its keys in camelCase like the rest.
fn profile_json(p: &tramontane::gpu::DeviceProfile) -> serde_json::Value {
    let snake = serde_json::to_value(p).unwrap_or_default();
    match snake {
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| {
                let mut parts = k.split('_');
                let mut key = parts.next().unwrap_or_default().to_string();
                for w in parts {
                    let mut c = w.chars();
                    key.extend(c.next().map(|f| f.to_ascii_uppercase()));
                    key.push_str(c.as_str());
                }
                (key, v)
            })
            .collect(),
        other => other,
    }
}

impl Default for WasmEngine {
    fn default() -> Self {
        Self::new()
    }
}
