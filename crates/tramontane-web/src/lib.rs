//! tramontane in the browser: the wasm-bindgen surface under the npm package's
//! JS API (js/index.js). The engine is the same `tramontane` core as natively;
//! this crate adds the `fetch` byte source, the Cache API and JS errors.
//!
//! Methods return Promises built from futures that own an `Rc` of the state, so
//! no borrow is held across an await; the JS layer runs one request at a time.

mod fetch;
mod opfs;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Function, Promise, Reflect};
use serde::{Deserialize, Serialize};
use tramontane::openai::{self, Answer, ApiError, Head, Logprob, ModelFacts, Prompt};
use tramontane::{Error, Gpu, KvCache, LoadOptions, Model};
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
    /// The GGUF's image side: llama.cpp's mmproj file, within `base`.
    mmproj: Option<String>,
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
    /// Files larger than this are cached in parts of this size (or in OPFS).
    cache_part_bytes: Option<u64>,
    /// Where files over a part go: "auto" (OPFS where it can be written
    /// synchronously, in a worker; Cache API parts elsewhere), "opfs" (OPFS
    /// wherever the browser can write it) or "cacheApi" (parts always).
    cache_store: Option<String>,
    /// A chat template that replaces the model's own.
    chat_template: Option<String>,
    /// The opening of conversations to come as JSON text (`{messages,
    /// tools, ...}`): run into the KV cache as the load ends.
    prefill: Option<String>,
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

/// A protocol error (a request field, the template, the context) as a JS
/// error: its engine code (INVALID_REQUEST where the protocol refused a
/// field, then also `param`, the field), and the message.
fn api_error(e: &ApiError) -> JsValue {
    let code = e.code.clone().unwrap_or_else(|| if e.status < 500 { "INVALID_REQUEST".into() } else { "INTERNAL".into() });
    let err = coded(&code, &e.message);
    if let Some(p) = &e.param {
        let _ = Reflect::set(&err, &"param".into(), &p.as_str().into());
    }
    err
}

/// A request's JSON text as a value (the page's JSON.stringify: key order and
/// integer-ness as written, which `tojson` in templates shows).
fn request_body(json: &str) -> Result<serde_json::Value, JsValue> {
    serde_json::from_str(json).map_err(|e| coded("INVALID_REQUEST", &format!("the request is not JSON: {e}")))
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
            // On the main thread OPFS is written through `createWritable`, a
            // round trip per write and a swap file: a 7B model's cold load took
            // 5-30% longer than into the Cache API, and its cached load was no
            // faster (BENCHMARKS.md), so "auto" takes OPFS only in a worker,
            // where synchronous handles read and write it (1.7x faster cached).
            // (Checked before the current model is dropped.)
            let use_opfs = match spec.cache_store.as_deref() {
                None | Some("auto") => opfs::sync_access(),
                Some("opfs") => opfs::sync_access() || opfs::writable(),
                Some("cacheApi") => false,
                Some(other) => return Err(coded("INVALID_REQUEST", &format!("cacheStore must be \"auto\", \"opfs\" or \"cacheApi\", not {other:?}"))),
            };
            // The opening to prefill is checked before a byte is downloaded.
            let opening = match &spec.prefill {
                Some(json) => Some(openai::conversation_start(&request_body(json)?).map_err(|e| api_error(&e))?),
                None => None,
            };
            let gpu = ensure_gpu(&state).await?;
            if let Some(cpu) = spec.cpu_adapter {
                gpu.set_cpu(cpu);
            }
            gpu.set_subgroups(spec.subgroups.unwrap_or(0));
            // Drop any previous model first: its buffers go before new ones are made.
            state.borrow_mut().model = None;
            let cache = if spec.use_cache { fetch::open_cache().await } else { None };
            if let Some(c) = &cache {
                fetch::sweep_opfs(c).await;
            }
            let cache_available = cache.is_some();
            let opfs_dir = if cache.is_some() && use_opfs { opfs::dir(true).await } else { None };
            let cache_store = if opfs_dir.is_some() { "opfs" } else { "cacheApi" };
            let cb = on_progress.clone();
            let on_bytes = Box::new(move |file: &str, loaded: u64, total: u64| {
                progress(&cb, serde_json::json!({"phase": "download", "file": file, "fileLoaded": loaded, "fileTotal": total}));
            });
            let headers = spec.headers.clone().unwrap_or_default().into_iter().collect();
            let src = fetch::FetchSource::new(spec.base.clone(), headers, signal, cache, spec.cache_part_bytes.unwrap_or(fetch::CACHE_PART_BYTES), opfs_dir, on_bytes);
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
                mmproj: spec.mmproj.clone(),
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
            // The opening goes to the GPU before the cache's last writes are
            // awaited, and is not waited for: it runs while they finish and
            // the page gets ready; the first request reuses it. It only
            // saves time, so an opening the model's template refuses (or
            // one longer than the context) costs the load nothing: nothing
            // runs and `prefillError` says why; the requests that open so
            // get the same error. A model with no working chat template
            // has no chats to open (`chatTemplateError` says why).
            let prefilled = match opening.as_ref().filter(|_| model.text.template.is_some()) {
                Some(o) => match model.conversation_start(o) {
                    Ok(ids) => model.prefill(&ids).await,
                    Err(e) => Err(e),
                },
                None => Ok(0),
            };
            src.finish_caching().await;
            let (prefilled, prefill_error) = match prefilled {
                Ok(n) => (n, None),
                Err(e @ Error::DeviceLost(_)) => {
                    forget_lost_device(&state, &e);
                    return Err(js_error(&e));
                }
                Err(e) => (0, Some(format!("{} {e}", e.code()))),
            };
            progress(&on_progress, serde_json::json!({"phase": "ready"}));
            let stats = src.stats.borrow().clone();
            let cfg = model.config();
            let i = &model.info;
            let mut info = serde_json::json!({
                "arch": i.arch, "dtype": i.dtype, "weightBytes": i.weight_bytes, "gpuBytes": i.gpu_bytes,
                "contextLength": i.context, "vocabSize": cfg.vocab, "layers": cfg.n_layers,
                "experts": cfg.moe.as_ref().map(|m| m.n_experts), "slidingWindow": cfg.sliding_window,
                "loadSeconds": i.load_seconds, "splitMatrices": i.split_matrices, "kvCache": i.kv_cache,
                "prefilledTokens": prefilled, "prefillError": prefill_error,
                "deviceProfile": profile_json(&i.device_profile),
                "selfTest": {"kernels": i.self_test.kernels, "millis": i.self_test.millis, "pipelineMillis": i.self_test.pipeline_millis,
                             "fallbacks": i.self_test.fallbacks},
                "loadPhases": {"prepare": i.load_phases.prepare_s, "selfTest": i.load_phases.self_test_s, "read": i.load_phases.read_s,
                               "upload": i.load_phases.upload_s, "pipelines": i.load_phases.pipelines_s},
                "gpuMemory": {"weights": i.gpu_memory.weights, "kvCache": i.gpu_memory.kv_cache,
                              "activations": i.gpu_memory.activations, "scratch": i.gpu_memory.scratch},
                // Linear memory only grows: its size now is the peak of the load.
                "wasmMemoryBytes": wasm_memory_bytes(),
                // An image model's image side (null: the model takes no images).
                "vision": i.vision.map(|v| serde_json::json!({"longestEdge": v.longest_edge, "processorLongestEdge": v.processor_longest_edge, "maxImageTokens": v.max_image_tokens,
                    "maxPatches": v.max_patches, "weightBytes": v.weight_bytes, "bufferBytes": v.buffer_bytes})),
                "network": {"requests": stats.network_requests, "cacheHits": stats.cache_hits,
                            "bytesDownloaded": stats.bytes_downloaded, "cacheAvailable": cache_available,
                            "cacheStore": cache_available.then_some(cache_store), "cacheSyncReads": stats.cache_sync_reads,
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

    /// Answer an OpenAI request (`chat`: `chat.completions`, else
    /// `completions`) given as JSON text, checked and shaped by the core's
    /// protocol (`tramontane::openai`), as `tramontane serve` answers it. A
    /// streamed request's chunks go to `on_chunk` (returning `false` stops
    /// the answer) and the promise resolves to undefined; otherwise it
    /// resolves to the response. `model` names the model in the answer;
    /// `signal` aborts (ABORTED).
    /// `images`: the RGBA pixels (`{width, height, data}`) of the request's
    /// image parts in order, decoded by the page (js/images.js).
    pub fn create(&self, chat: bool, request_json: &str, model: String, on_chunk: Function, signal: Option<web_sys::AbortSignal>,
                  images: Option<js_sys::Array>) -> Promise {
        let state = self.state.clone();
        let body = request_body(request_json);
        let pictures = images.map(|a| pictures(&a)).transpose();
        future_to_promise(async move {
            let started = web_time::Instant::now();
            let body = body?;
            let pictures = pictures?.unwrap_or_default();
            let mut m = state.borrow_mut().model.take().ok_or_else(|| coded("INVALID_REQUEST", "no model is loaded (or a request is running)"))?;
            let r = answer(&mut m, chat, &body, pictures, model, &on_chunk, signal.as_ref(), started).await;
            state.borrow_mut().model = Some(m);
            r.map_err(|e| match e {
                Failure::Api(e) => api_error(&e),
                Failure::Engine(e) => {
                    forget_lost_device(&state, &e);
                    js_error(&e)
                }
            })
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

    /// The prompt text and token ids of a chat request (OpenAI's, as JSON
    /// text), rendered as `create` would render it.
    #[wasm_bindgen(js_name = chatPrompt)]
    pub fn chat_prompt(&self, request_json: &str) -> Result<JsValue, JsValue> {
        let req = openai::chat_request(&request_body(request_json)?).map_err(|e| api_error(&e))?;
        self.with_model(|m| {
            let text = m.text.chat_text(&req)?;
            let ids = m.tokenizer().encode_with(&text, false, true)?;
            Ok(to_js(&serde_json::json!({"text": text, "ids": ids})))
        })
    }

    /// One image (`{width, height, data}`, RGBA, decoded by the page) through
    /// the image side alone, timed: the benchmark's measurement
    /// ([`Model::time_image`]); the conversation's cache is kept.
    #[wasm_bindgen(js_name = timeImage)]
    pub fn time_image(&self, image: JsValue) -> Promise {
        let state = self.state.clone();
        let picture = pictures(&js_sys::Array::of1(&image));
        future_to_promise(async move {
            let picture = picture?.pop().ok_or_else(|| coded("INVALID_REQUEST", "no image"))?;
            let mut m = state.borrow_mut().model.take().ok_or_else(|| coded("INVALID_REQUEST", "no model is loaded (or a request is running)"))?;
            let r = m.time_image(&picture).await;
            state.borrow_mut().model = Some(m);
            let t = r.map_err(|e| {
                forget_lost_device(&state, &e);
                js_error(&e)
            })?;
            Ok(to_js(&serde_json::json!({
                "width": t.width, "height": t.height, "resized": [t.resized.0, t.resized.1], "patches": t.patches,
                "imageTokens": t.tokens, "preprocessSeconds": t.preprocess_s, "encodeSeconds": t.encode_s,
            })))
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

/// Why a request failed: the protocol refused it, or the engine failed.
enum Failure {
    Api(ApiError),
    Engine(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

/// Send `v` to the page's `on_chunk`: whether it wants more.
fn send(on_chunk: &Function, v: &serde_json::Value) -> bool {
    on_chunk.call1(&JsValue::NULL, &to_js(v)).map(|r| r.as_bool() != Some(false)).unwrap_or(false)
}

/// The pictures the page decoded: `{width, height, data: Uint8Array}`
/// (RGBA), each checked against its size.
fn pictures(a: &js_sys::Array) -> Result<Vec<tramontane::vision::Picture>, JsValue> {
    a.iter()
        .enumerate()
        .map(|(k, v)| {
            let get = |name: &str| js_sys::Reflect::get(&v, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
            let dim = |name: &str| get(name).as_f64().filter(|x| *x >= 1.0 && *x <= u32::MAX as f64 && x.fract() == 0.0).map(|x| x as u32);
            let (Some(w), Some(h)) = (dim("width"), dim("height")) else {
                return Err(coded("INVALID_REQUEST", &format!("image {k}: no width and height")));
            };
            let data = get("data").dyn_into::<js_sys::Uint8Array>().map_err(|_| coded("INVALID_REQUEST", &format!("image {k}: its pixels are not a Uint8Array")))?;
            tramontane::vision::Picture::new(w, h, 4, data.to_vec(), &format!("image {k}")).map_err(|e| js_error(&e))
        })
        .collect()
}

/// Run request `body` with the pictures of its image parts on model `m`
/// (see [`WasmEngine::create`]).
#[allow(clippy::too_many_arguments)]
async fn answer(m: &mut Model, chat: bool, body: &serde_json::Value, pictures: Vec<tramontane::vision::Picture>, model: String,
                on_chunk: &Function, signal: Option<&web_sys::AbortSignal>, started: web_time::Instant) -> Result<JsValue, Failure> {
    let facts = ModelFacts {
        defaults: m.text.defaults.clone(),
        tool_format: m.text.effective_tool_format(),
        context: m.info.context,
        images: m.config().vision.is_some(),
    };
    let mut p = openai::parse(body, chat, &facts).map_err(Failure::Api)?;
    if p.images.len() != pictures.len() {
        return Err(Failure::Engine(Error::InvalidRequest(format!("{} image parts but {} images decoded", p.images.len(), pictures.len()))));
    }
    let mut ids = match &p.prompt {
        Prompt::Chat(r) => m.chat_ids(r)?,
        Prompt::Text(t) => m.text_prompt(t)?,
        Prompt::Ids(ids) => ids.clone(),
    };
    if !pictures.is_empty() {
        let (expanded, images) = m.prompt_images(&ids, &pictures)?;
        ids = expanded;
        p.gen.images = images;
    }
    // As the npm package always has: a stream ends with its usage unless the request says not to.
    let mut answer = Answer::new(Head::new(chat, &model), &p, true, started);
    // Token texts for log-probabilities come from a copy of the tokenizer
    // (the model is borrowed by `generate`); copied only when needed.
    let tok = p.gen.logprobs.is_some().then(|| m.tokenizer().inner().clone());
    let text_of = |id: u32| tok.as_ref().and_then(|t| t.decode(&[id], false).ok()).unwrap_or_default();
    let g = m
        .generate(&ids, &p.gen, &mut |piece, _id, lp| {
            if signal.is_some_and(|s| s.aborted()) {
                return false;
            }
            match answer.token(piece, lp.map(|l| Logprob::of(l, text_of))) {
                Some(chunk) => send(on_chunk, &chunk),
                None => true,
            }
        })
        .await?;
    let streams = answer.streams();
    let end = answer.end(&g);
    if streams {
        for c in &end {
            if !send(on_chunk, c) {
                break;
            }
        }
        return Ok(JsValue::UNDEFINED);
    }
    Ok(end.first().map(to_js).unwrap_or(JsValue::NULL))
}

impl Default for WasmEngine {
    fn default() -> Self {
        Self::new()
    }
}
