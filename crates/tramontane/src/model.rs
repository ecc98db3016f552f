//! A loaded model and its conversation state: load from a source, then
//! generate with KV-cache reuse across turns.

use std::sync::Arc;

use web_time::Instant;

use crate::constrain::{Constrainer, Constraint, ConstraintStats, Next, Session};
use crate::error::{Error, Result};
use crate::forward::self_test::{self, SelfTest};
use crate::forward::{EarlyRuntime, GpuBytes, Output, PassRequest, Runtime, RuntimeOptions, Sizes};
use crate::gpu::{DeviceProfile, Gpu};
use crate::parse::{gguf, mmproj, DType, ModelConfig, RopeScaling, TensorTable};
use crate::sample::SamplingParams;
use crate::source::ModelSource;
use crate::text::text_stream::{Finished, TextStream};
use crate::text::{ChatMessage, ChatRequest, ModelText, Tokenizer, ToolCall, ToolFormat};
use crate::upload::{load_weights, GgufNaming, HfNaming, LayerTensor, Naming, Progress};
use crate::vision::{ImageTokens, Picture, Pixels};

/// Most tokens per prefill pass (the kernels' grid and the activations are
/// sized by it; more gains nothing).
pub const MAX_CHUNK: usize = 1024;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Context window in tokens; default min(max_position_embeddings, 4096).
    pub context: Option<usize>,
    /// Tokens per prefill pass.
    pub chunk: usize,
    /// Files downloaded (streamed to the GPU) at once.
    pub parallel_downloads: usize,
    /// Cap on the bytes one weight buffer may hold, below the device's own
    /// `maxStorageBufferBindingSize`; larger matrices are split into slabs.
    /// An image encoder's buffers keep within it too (smaller images).
    /// `None`: the device's limit. (Lets a test or a cautious app behave like a
    /// device with small limits.)
    pub max_binding: Option<u64>,
    /// Element type of the KV cache.
    pub kv_cache: KvCache,
    /// GPU memory this model may take in all (weights, KV cache, activations).
    /// A model that needs more fails with OUT_OF_MEMORY before any weight is
    /// downloaded (or, where the self-test falls back to a larger f32 KV
    /// cache, once the weights are in). `None`: no limit of ours; the
    /// device's own still applies.
    pub max_gpu_bytes: Option<u64>,
    /// A GGUF model's image side: llama.cpp's `mmproj` GGUF, named within
    /// the same source as the model (parse/mmproj.rs).
    pub mmproj: Option<String>,
}

/// What the KV cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCache {
    /// f16 for quantized models on devices with `shader-f16` (their weights
    /// already cost more precision than f16 keys and values do; llama.cpp's
    /// default too), else f32. Float checkpoints keep f32 so they reproduce
    /// transformers' float32 math.
    #[default]
    Auto,
    F32,
    /// Half the memory and attention traffic; needs `shader-f16`.
    F16,
}

impl LoadOptions {
    /// Options that make no sense are refused before anything is read, not
    /// silently changed.
    pub fn validate(&self) -> Result<()> {
        if self.context == Some(0) {
            return Err(Error::InvalidRequest("context must be at least 1 token".into()));
        }
        if self.chunk == 0 || self.chunk > MAX_CHUNK {
            return Err(Error::InvalidRequest(format!("chunk (tokens per prefill pass) must be from 1 to {MAX_CHUNK}")));
        }
        if self.max_binding == Some(0) {
            return Err(Error::InvalidRequest("max_binding must be at least 4 bytes".into()));
        }
        if self.max_gpu_bytes == Some(0) {
            return Err(Error::InvalidRequest("max_gpu_bytes must be at least 1 byte".into()));
        }
        Ok(())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { context: None, chunk: 64, parallel_downloads: 4, max_binding: None, kv_cache: KvCache::Auto, max_gpu_bytes: None, mmproj: None }
    }
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub arch: String,
    pub weight_bytes: u64,
    /// Weights plus the planned size of every other buffer (the plan counts
    /// every buffer and texture the runtime allocates; suite/limits.rs checks
    /// it): what `max_gpu_bytes` is checked against.
    pub gpu_bytes: u64,
    /// GPU bytes allocated, by kind.
    pub gpu_memory: GpuBytes,
    pub dtype: String,
    pub context: usize,
    pub kv_slots: usize,
    pub load_seconds: f64,
    /// Weight matrices split into slabs because they exceed the binding limit.
    pub split_matrices: usize,
    /// "f16" or "f32".
    pub kv_cache: &'static str,
    /// The kernel shapes this model was built with.
    pub device_profile: DeviceProfile,
    /// What the adapter self-test ran and any fallback it chose.
    pub self_test: SelfTest,
    /// Where `load_seconds` went.
    pub load_phases: LoadPhases,
    /// An image model's image side (`None`: the model takes no images).
    pub vision: Option<VisionInfo>,
}

/// What an image model's image side holds and needs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct VisionInfo {
    /// Images are resized to fit this side: the processor's `longest_edge`,
    /// or less where the device cannot bind the encoder's buffers for it.
    pub longest_edge: u32,
    /// The processor's own `longest_edge` (larger than `longest_edge` only
    /// on such a device: there, larger images are processed smaller than
    /// transformers would).
    pub processor_longest_edge: u32,
    /// Prompt tokens the largest image takes (image tokens and row breaks).
    pub max_image_tokens: usize,
    /// Patches of the largest image.
    pub max_patches: usize,
    /// GPU bytes of the encoder's and projector's weights (in `weight_bytes`).
    pub weight_bytes: u64,
    /// GPU bytes of the encoder's buffers and the image features' rows (in
    /// `gpu_memory.activations`).
    pub buffer_bytes: u64,
}

/// One image through the image side, timed ([`Model::time_image`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ImageTiming {
    pub width: u32,
    pub height: u32,
    /// The size the processor resized it to.
    pub resized: (usize, usize),
    pub patches: usize,
    /// Rows of features (image tokens without the row breaks).
    pub tokens: usize,
    /// Decoding aside: the processor's resize and normalization on the CPU.
    pub preprocess_s: f64,
    /// The encoder and projector on the GPU, until the GPU is done.
    pub encode_s: f64,
}

/// A load's time by phase (seconds; besides the self-test, which overlaps
/// the others, they add up to about `load_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LoadPhases {
    /// Config, tokenizer and tensor tables read, sizes planned: everything
    /// before the first weight byte is asked for.
    pub prepare_s: f64,
    /// The adapter self-test (0 where this adapter ran it before), which
    /// runs beside the weights' download (natively on a thread of its own),
    /// so it overlaps the phases below.
    pub self_test_s: f64,
    /// Waiting for the weights' bytes (network, disk or cache).
    pub read_s: f64,
    /// Placing them on the host: repacking, interleaving, writing them to the
    /// GPU queue, assembling the matrices.
    pub upload_s: f64,
    /// The forward pass's buffers, pipelines and bind groups.
    pub pipelines_s: f64,
}

/// What a load decided before its weights: the runtime's options before
/// the self-test, the GPU bytes left for weights, what the self-test checks.
struct LoadPlan {
    first: RuntimeOptions,
    budget: Option<u64>,
    needs: self_test::Needs,
}

/// When a load started, and the seconds of its phases before assembling.
struct LoadClock {
    t0: Instant,
    prepared: f64,
    weights: f64,
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks, reference checks).
    pub ignore_eos: bool,
    /// Report this many of the highest raw logits at the last prompt position.
    pub top_logits: usize,
    /// Report each generated token's log-probability, with this many top
    /// alternatives (`None`: no log-probabilities).
    pub logprobs: Option<u32>,
    /// The prompt's images (from [`Model::prompt_images`]): their rows take
    /// the places of the image tokens.
    pub images: Vec<PromptImage>,
    /// The request offered tools: recognize calls written in this format
    /// (held back from the streamed text, returned in `tool_calls`).
    pub tools: Option<ToolFormat>,
    /// What the output must be (JSON Schema, regex, grammar, tool calls):
    /// only tokens that keep it valid are sampled, and the generation ends
    /// when it is complete.
    pub constraint: Option<Constraint>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
            top_logits: 0,
            logprobs: None,
            tools: None,
            constraint: None,
            images: Vec::new(),
        }
    }
}

/// An image of a prompt: its pixels as the model's processor makes them, the
/// prompt positions its rows of features take (row by row, the image tokens
/// [`Model::prompt_images`] laid out), and a digest of its pixels (so the KV
/// cache is reused after an image only for the same image).
#[derive(Debug, Clone)]
pub struct PromptImage {
    pub pixels: Pixels,
    pub positions: Vec<usize>,
    pub key: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context window.
    Length,
    /// The model called tools (`Generation::tool_calls`).
    ToolCalls,
}

impl FinishReason {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// A generated token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Prompt tokens actually run (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    pub generated: Vec<u32>,
    /// The content: generated text less stop strings and tool calls.
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub top_logits: Vec<(u32, f32)>,
    /// One per generated token, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// What the request's constraint cost (compile, masks), if it had one.
    pub constraint: Option<ConstraintStats>,
}

impl Generation {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefilled_tokens as f64 / self.prefill_seconds.max(1e-9)
    }
    /// Decode speed: tokens after the first (which comes from the prefill).
    pub fn decode_tokens_per_s(&self) -> f64 {
        (self.generated.len().saturating_sub(1)) as f64 / self.decode_seconds.max(1e-9)
    }
}

pub struct Model {
    pub runtime: Runtime,
    /// Tokenizer, chat template and sampling defaults.
    pub text: ModelText,
    pub info: ModelInfo,
    /// Tokens whose keys and values are in the cache, in order.
    cached: Vec<u32>,
    /// Per cached token: the digest of the image whose row it holds (0: a
    /// token's own embedding).
    cached_images: Vec<u64>,
    /// One past the highest position written into the KV cache since the
    /// last reset: a cache cut back (a shorter prompt, a prefill of part of
    /// it) still holds the later positions' keys in a sliding layer's ring,
    /// where they overwrote earlier ones.
    written: usize,
    /// Constrained decoding, set up on the first constrained request.
    constrainer: Option<Constrainer>,
}

/// The runs of image rows among `len` pass rows whose first is
/// `feature_row[from]`: (feature row, pass row, rows).
fn image_runs(feature_row: &[u32], from: usize, len: usize) -> Vec<(u32, u32, u32)> {
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for (i, &f) in feature_row.iter().skip(from).take(len).enumerate() {
        if f == u32::MAX {
            continue;
        }
        match runs.last_mut() {
            Some(r) if r.0 + r.2 == f && r.1 + r.2 == i as u32 => r.2 += 1,
            _ => runs.push((f, i as u32, 1)),
        }
    }
    runs
}

/// One pass; a sampling pass under a constraint draws only the tokens its
/// session allows (the mask computed while the GPU runs the layers). When the
/// constraint is complete the mask allows only the end-of-generation ids and
/// `ended` is set: the caller does not use the drawn token.
async fn sample(rt: &mut Runtime, pass: PassRequest<'_>, session: Option<&mut Session>, eos: &[u32], ended: &mut bool) -> Result<Option<crate::forward::Sampled>> {
    let Some(s) = session.filter(|_| pass.output == Output::Sample) else { return rt.pass(pass).await };
    let vocab = rt.cfg.vocab;
    rt.pass_masked(pass, &mut |words| {
        if s.mask(words)? == Next::End {
            *ended = true;
            words.iter_mut().for_each(|w| *w = 0);
            for &e in eos.iter().filter(|&&e| (e as usize) < vocab) {
                words[e as usize / 32] |= 1 << (e % 32);
            }
        }
        Ok(())
    })
    .await
}

/// llama.cpp's per-frequency RoPE divisors (`rope_freqs.weight`, F32, one per
/// rotated pair), read straight from the file: they shape the RoPE table.
async fn read_rope_freqs<S: ModelSource>(src: &S, t: &crate::parse::TensorInfo, head_dim: usize) -> Result<Vec<f32>> {
    let file = src.describe(&t.file);
    if t.dtype != crate::parse::DType::F32 || t.numel() != (head_dim / 2) as u64 {
        return Err(Error::tensor(&file, &t.name, format!("expected {} F32 values, found {:?} of {:?}", head_dim / 2, t.shape, t.dtype)));
    }
    let bytes = src.read(&t.file, t.offset, t.nbytes).await?;
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(Error::tensor(&file, &t.name, "RoPE factors must be finite and positive"));
    }
    Ok(v)
}

/// An image model's largest image, made to fit the device's binding limit
/// (and `max_binding`, which lets a test or a cautious app behave like a
/// device with small limits): see `forward::vision::fit_to_binding`.
fn fit_images(cfg: &mut ModelConfig, gpu: &Gpu, opts: &LoadOptions) {
    let limit = opts.max_binding.map_or(gpu.max_binding(), |m| m.min(gpu.max_binding()));
    let hidden = cfg.hidden;
    if let Some(vc) = cfg.vision.as_mut() {
        crate::forward::vision::fit_to_binding(vc, hidden, limit);
    }
}

impl Model {
    /// Load a Hugging Face model folder (config.json, tokenizer files, safetensors).
    pub async fn load<S: ModelSource>(
        gpu: Arc<Gpu>,
        src: &S,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Model> {
        opts.validate()?;
        if let Some(m) = &opts.mmproj {
            return Err(Error::InvalidRequest(format!(
                "mmproj `{m}` goes with a GGUF model: a Hugging Face model keeps its image side in its own safetensors"
            )));
        }
        let t0 = Instant::now();
        let cfg_bytes = src.read_all("config.json", 16 << 20).await?.ok_or_else(|| Error::MissingFile {
            file: src.describe("config.json"),
            what: "the model configuration".into(),
        })?;
        let mut cfg = ModelConfig::from_json(&cfg_bytes, &src.describe("config.json"))?;
        if let Some(v) = cfg.vision.as_mut() {
            let pre = crate::text::model_text::read_json(src, "preprocessor_config.json").await?;
            let proc = crate::text::model_text::read_json(src, "processor_config.json").await?;
            v.set_processor(pre.as_ref(), proc.as_ref(), &src.describe("preprocessor_config.json"))?;
        }
        let text = ModelText::load_hf(src).await?;
        cfg.eos_token_ids = text.tokenizer.eos.clone();
        fit_images(&mut cfg, &gpu, opts);
        let table = TensorTable::read(src).await?;
        Self::load_planned(gpu, src, cfg, table, text, &HfNaming, opts, t0, progress).await
    }

    /// Load a GGUF model: `name` is the file (the first part of a split model)
    /// within `src`. Weights stay in their quantized format on the GPU.
    pub async fn load_gguf<S: ModelSource>(
        gpu: Arc<Gpu>,
        src: &S,
        name: &str,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Model> {
        opts.validate()?;
        let t0 = Instant::now();
        let parts = gguf::read_model(src, name).await?;
        let head = &parts[0];
        let file = src.describe(name);
        let mut cfg = ModelConfig::from_gguf(head, &file)?;
        let text = ModelText::from_gguf(head, &file)?;
        cfg.eos_token_ids = text.tokenizer.eos.clone();
        let mut table = TensorTable::from_gguf(&parts)?;
        if let Some(t) = table.get("rope_freqs.weight") {
            cfg.rope_scaling = RopeScaling::Factors(read_rope_freqs(src, t, cfg.head_dim).await?);
        }
        if let Some(mm) = &opts.mmproj {
            let mm_parts = gguf::read_model(src, mm).await?;
            let side = mmproj::TextSide { hidden: cfg.hidden, rms_eps: cfg.rms_eps, image_token_id: text.tokenizer.token_id("[IMG]") };
            cfg.vision = Some(mmproj::vision_config(&mm_parts[0], &src.describe(mm), &side)?);
            table.add_mmproj(&mm_parts)?;
            fit_images(&mut cfg, &gpu, opts);
        }
        Self::load_planned(gpu, src, cfg, table, text, &GgufNaming, opts, t0, progress).await
    }

    /// Both formats from their config and tensor table on: plan the sizes,
    /// upload the weights with the adapter self-test beside them (and the
    /// pass built beside them where it can be), assemble the model.
    ///
    /// The self-test runs while the weights stream in rather than before
    /// (natively on its own thread; in browsers its pipelines compile in the
    /// GPU process at their first dispatch): the download need not wait for
    /// it. Its outcome cannot change what the upload writes (a fallback
    /// changes the kernels' sums and the KV cache's type, not the weights'
    /// layout), only the memory the rest takes, checked again after it. A
    /// self-test that fails stops the download at its next piece.
    #[allow(clippy::too_many_arguments)]
    async fn load_planned<S: ModelSource>(gpu: Arc<Gpu>, src: &S, cfg: ModelConfig, table: TensorTable, text: ModelText, naming: &dyn Naming,
                                          opts: &LoadOptions, t0: Instant, progress: &mut dyn FnMut(Progress)) -> Result<Model> {
        use std::cell::{Cell, RefCell};
        let plan = Self::plan(&gpu, &cfg, &table, naming, opts)?;
        let first = plan.first.clone();
        let req = self_test::Request {
            profile: first.profile,
            kv_f16: first.kv_f16,
            kv_may_fall_back: opts.kv_cache == KvCache::Auto,
            needs: plan.needs,
        };
        // Natively the weights that stay in buffers are bound before their
        // bytes come, and the pass is built on them on a thread of its own
        // (EarlyRuntime) as soon as the self-test has settled its options:
        // whichever of the two comes second starts it.
        let settled_opts: RefCell<Option<RuntimeOptions>> = Default::default();
        let bound: RefCell<Option<crate::upload::Weights>> = Default::default();
        let early: RefCell<Option<EarlyRuntime>> = Default::default();
        let uploaded = Cell::new(None);
        // A fallback to an f32 KV cache takes more memory than planned:
        // with a memory limit its pass is built after the upload, once the
        // limit is checked again, not beside it.
        let limited = opts.max_gpu_bytes.is_some();
        let (settling, test_thread) = self_test::settle_beside(gpu.clone(), req);
        let test = async {
            let s = settling.await?;
            let r = RuntimeOptions { kv_f16: s.kv_f16, profile: s.profile, ..first.clone() };
            let grew = r.kv_f16 != first.kv_f16 && limited;
            if let Some(w) = bound.borrow_mut().take().filter(|_| !grew) {
                *early.borrow_mut() = Some(EarlyRuntime::start(gpu.clone(), cfg.clone(), w, r.clone()));
            }
            if !grew {
                *settled_opts.borrow_mut() = Some(r);
            }
            Ok(s)
        };
        let prepared = t0.elapsed().as_secs_f64();
        let upload = async {
            let w = load_weights(&gpu, first.profile.weights, src, &cfg, &table, naming, opts.parallel_downloads, opts.max_binding, plan.budget, progress,
                                 &mut |w| match settled_opts.borrow().clone() {
                                     Some(r) => *early.borrow_mut() = Some(EarlyRuntime::start(gpu.clone(), cfg.clone(), w.clone(), r)),
                                     None => *bound.borrow_mut() = Some(w.clone()),
                                 })
                .await;
            uploaded.set(Some(t0.elapsed().as_secs_f64()));
            w
        };
        // The upload yields between its pieces, so a failed self-test ends it there.
        let joined = futures_util::future::try_join(test, upload).await;
        let mut early = early.into_inner();
        // What was built beside the upload goes before an error does: the
        // self-test's thread (it shares the device's error slot with what
        // runs next), the pass being built on the weights.
        let abandon = |early: Option<EarlyRuntime>, test_thread: self_test::Abandon| {
            test_thread.join();
            if let Some(e) = early {
                e.abandon();
            }
        };
        let (settled, weights) = match joined {
            Ok(both) => both,
            Err(e) => {
                abandon(early.take(), test_thread);
                return Err(e);
            }
        };
        let ropts = RuntimeOptions { kv_f16: settled.kv_f16, profile: settled.profile, ..first };
        let planned = match Sizes::plan(&cfg, &ropts, &gpu) {
            Ok(s) => s.total(),
            Err(e) => {
                abandon(early.take(), test_thread);
                return Err(e);
            }
        };
        if let Some(limit) = opts.max_gpu_bytes.filter(|&l| planned.saturating_add(weights.bytes) > l) {
            abandon(early.take(), test_thread);
            return Err(Error::OutOfMemory(format!(
                "the weights ({} bytes) and, with the {} KV cache this adapter needs, {planned} bytes of KV cache, activations and other buffers exceed the {limit}-byte GPU memory limit (max_gpu_bytes)",
                weights.bytes,
                if ropts.kv_f16 { "f16" } else { "f32" }
            )));
        }
        let clock = LoadClock { t0, prepared, weights: uploaded.get().unwrap_or_else(|| t0.elapsed().as_secs_f64()) - prepared };
        Self::assemble(gpu, cfg, weights, early, text, ropts, planned, settled.report, clock)
    }

    /// The runtime's first options and the GPU bytes left for weights,
    /// decided from the config and the tensor table alone, and what the
    /// self-test must check: every buffer besides the weights is sized
    /// (checked arithmetic) and checked against the device and
    /// `max_gpu_bytes` before the first weight byte is downloaded.
    fn plan(gpu: &Gpu, cfg: &ModelConfig, table: &TensorTable, naming: &dyn Naming, opts: &LoadOptions) -> Result<LoadPlan> {
        let context = opts.context.unwrap_or(cfg.max_position.min(4096)).max(1);
        let chunk = opts.chunk.min(context);
        // The text model's weights decide the cache's type (an mmproj may be
        // quantized beside a float text model).
        let image_side = |n: &str| n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector.");
        let quantized = table.tensors.iter().any(|(n, t)| t.dtype.is_quantized() && !image_side(n));
        let kv_f16 = match opts.kv_cache {
            KvCache::Auto => gpu.adapter.shader_f16 && quantized,
            KvCache::F32 => false,
            KvCache::F16 => true,
        };
        if kv_f16 && !gpu.adapter.shader_f16 {
            return Err(Error::Unsupported("an f16 KV cache needs the device's shader-f16 feature".into()));
        }
        let mut dtypes: Vec<DType> = table.tensors.values().filter(|t| t.shape.len() >= 2).map(|t| t.dtype).collect();
        dtypes.sort_by_key(|d| d.shader_code());
        dtypes.dedup();
        let first = RuntimeOptions { context, chunk, kv_f16, profile: gpu.profile() };
        let sizes = Sizes::plan(cfg, &first, gpu)?;
        // The self-test runs each weight type's kernels as the model's own
        // o- or down-projection of that type, so they share its pipelines.
        let naming = naming.for_arch(cfg.arch).unwrap_or(naming);
        let linears = self_test::ModelLinear::of_model(cfg, |l, down| {
            table.tensors.get(&naming.layer(l, if down { LayerTensor::Down } else { LayerTensor::O })).map(|t| t.dtype)
        });
        let slots = sizes.layer_slots.first().copied().unwrap_or(context);
        let budget = match opts.max_gpu_bytes {
            None => None,
            Some(limit) => match limit.checked_sub(sizes.total()) {
                Some(left) => Some(left),
                None => {
                    return Err(Error::OutOfMemory(format!(
                        "a context of {context} tokens needs {} bytes of KV cache and {} bytes of activations and other buffers, more than the {limit}-byte GPU memory limit (max_gpu_bytes) before any weight",
                        sizes.planned.kv_cache,
                        sizes.planned.activations + sizes.planned.scratch
                    )))
                }
            },
        };
        Ok(LoadPlan { first, budget, needs: self_test::Needs { dtypes, linears, cfg: cfg.clone(), slots } })
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(gpu: Arc<Gpu>, cfg: ModelConfig, weights: crate::upload::Weights, early: Option<EarlyRuntime>, text: ModelText,
                ropts: RuntimeOptions, planned: u64, self_test: SelfTest, clock: LoadClock) -> Result<Model> {
        let (context, kv_f16, profile) = (ropts.context, ropts.kv_f16, ropts.profile);
        let dtype = weights.layers.first().map(|l| l.qkv.dtype()).unwrap_or(weights.embed.dtype()).name().to_string();
        let weight_bytes = weights.bytes;
        let split_matrices = weights.split_matrices();
        let arch = format!("{:?}", cfg.arch).to_lowercase();
        let host_seconds = weights.host_seconds;
        let t_runtime = Instant::now();
        // Built during the upload where the weights could be bound before
        // their bytes came (then this is the wait for it, if any).
        let runtime = match early {
            Some(e) => e.finish(weights)?,
            None => Runtime::new(gpu, cfg, weights, ropts)?,
        };
        let phases = LoadPhases {
            prepare_s: clock.prepared,
            self_test_s: self_test.millis / 1e3,
            read_s: (clock.weights - host_seconds).max(0.0),
            upload_s: host_seconds,
            pipelines_s: t_runtime.elapsed().as_secs_f64(),
        };
        let memory = runtime.gpu_bytes();
        let info = ModelInfo {
            arch,
            weight_bytes,
            gpu_bytes: weight_bytes + planned.max(memory.buffers()),
            gpu_memory: memory,
            dtype,
            context,
            kv_slots: runtime.kv_slots,
            load_seconds: clock.t0.elapsed().as_secs_f64(),
            load_phases: phases,
            split_matrices,
            kv_cache: if kv_f16 { "f16" } else { "f32" },
            device_profile: profile,
            self_test,
            vision: None,
        };
        let mut model = Model { runtime, text, info, cached: Vec::new(), cached_images: Vec::new(), written: 0, constrainer: None };
        model.info.vision = model.vision_info();
        Ok(model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.runtime.cfg
    }

    fn vision_info(&self) -> Option<VisionInfo> {
        let ((encoder, features), vc, w) = (self.runtime.vision.as_ref()?, self.runtime.cfg.vision.as_ref()?, self.runtime.weights.vision.as_ref()?);
        let side = crate::forward::vision::max_side_patches(vc) / vc.merge();
        Some(VisionInfo {
            longest_edge: vc.processor.longest_edge,
            processor_longest_edge: vc.fitted_from.unwrap_or(vc.processor.longest_edge),
            max_image_tokens: side * (side + 1),
            max_patches: encoder.max_patches,
            weight_bytes: w.bytes(),
            buffer_bytes: encoder.bytes + features.size(),
        })
    }

    /// Preprocess and encode `pic` alone (its rows land in the feature
    /// buffer, which the next request overwrites), timing each step: for
    /// benchmarks. A model without an image side is INVALID_REQUEST.
    pub async fn time_image(&mut self, pic: &Picture) -> Result<ImageTiming> {
        let (Some((encoder, features)), Some(vc)) = (self.runtime.vision.as_ref(), self.runtime.cfg.vision.as_ref()) else {
            return Err(Error::InvalidRequest("this model takes no images (it has no vision encoder)".into()));
        };
        let t0 = Instant::now();
        let px = vc.processor.pixels(pic);
        let preprocess_s = t0.elapsed().as_secs_f64();
        let g = self.runtime.gpu();
        let t1 = Instant::now();
        let tokens = encoder.encode(g, &px, self.runtime.cfg.hidden, features, 0)?;
        // Reading a word back waits for the GPU to finish.
        g.read_f32(features, 1).await?;
        let encode_s = t1.elapsed().as_secs_f64();
        // The cache's rows are intact (only the feature rows changed).
        Ok(ImageTiming {
            width: pic.width,
            height: pic.height,
            resized: (px.width, px.height),
            patches: (px.width / vc.patch) * (px.height / vc.patch),
            tokens,
            preprocess_s,
            encode_s,
        })
    }

    /// GPU bytes by kind as planned before the download (`info.gpu_memory`
    /// is what was allocated; the two are equal).
    pub fn planned_gpu_memory(&self) -> GpuBytes {
        self.runtime.planned_gpu_bytes()
    }

    /// Forget the conversation (the KV cache is simply overwritten later).
    pub fn reset(&mut self) {
        self.cached.clear();
        self.cached_images.clear();
        // The next pass writes from position 0 on.
        self.written = 0;
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Render a plain-text conversation with the model's chat template and
    /// tokenize it (with a generation prompt).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.text.chat_ids(&ChatRequest::from_messages(messages))
    }

    /// Token ids of a chat request (messages, tools, template variables).
    pub fn chat_ids(&self, req: &ChatRequest) -> Result<Vec<u32>> {
        self.text.chat_ids(req)
    }

    /// The tokens every conversation that opens with `start` (its messages,
    /// tools, documents, template variables) and goes on with a user's turn
    /// begins with, whatever that turn says: what two renderings with
    /// different user turns appended share. With no messages, the
    /// template's own opening (a default system prompt, the tools' block).
    /// A template that refuses a user's turn after `start` (roles that must
    /// alternate) says so as it would for the request.
    pub fn conversation_start(&self, start: &ChatRequest) -> Result<Vec<u32>> {
        let with_turn = |text: &str| {
            let mut r = start.clone();
            r.messages.push(serde_json::json!({"role": "user", "content": text}));
            r.add_generation_prompt = true;
            self.text.chat_ids(&r)
        };
        // Two turns that differ in their first character: the common
        // tokens stop before the turn, wherever the template puts it.
        let (a, b) = (with_turn("A")?, with_turn("B")?);
        let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        Ok(a[..n].to_vec())
    }

    /// Run `ids` into the KV cache ahead of a request that starts with them
    /// (a system prompt while the page loads or the person types): nothing
    /// is sampled or read back, and the work is submitted, not waited for,
    /// so this returns as soon as it is recorded; the next request's first
    /// readback waits for it in the GPU's queue and reuses every token of it
    /// its prompt starts with. Tokens already cached are not run again.
    /// Returns how many tokens ran.
    pub async fn prefill(&mut self, ids: &[u32]) -> Result<usize> {
        let context = self.runtime.opts.context;
        // One token is left for the request that follows.
        if ids.len() >= context {
            return Err(Error::ContextOverflow { tokens: ids.len() + 1, context });
        }
        let vocab = self.runtime.cfg.vocab;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::InvalidRequest(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        // All of it cached (a longer conversation that opens with it too):
        // nothing to run, nothing to cut.
        if self.cached.starts_with(ids) && self.cached_images.iter().take(ids.len()).all(|&k| k == 0) {
            return Ok(0);
        }
        let keep = self.reusable_prefix(ids, &[]);
        self.cached.truncate(keep);
        self.cached_images.truncate(keep);
        let sampling = SamplingParams::default();
        for part in ids[keep..].chunks(self.runtime.opts.chunk) {
            let start = self.cached.len();
            self.written = self.written.max(start + part.len());
            if let Err(e) = self.runtime.pass(PassRequest::new(part, start, Output::None, &sampling)).await {
                self.reset();
                return Err(e);
            }
            self.cached.extend_from_slice(part);
            self.cached_images.extend(std::iter::repeat_n(0, part.len()));
        }
        Ok(ids.len() - keep)
    }

    /// Token ids of a text prompt, with the tokenizer's own BOS/EOS rule.
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.text.tokenizer.encode_prompt(text)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.text.tokenizer
    }

    /// Compile `c` for this model (or find it compiled): a constraint that
    /// does not compile is INVALID_REQUEST naming what is wrong. Generating
    /// with it later starts at once. The first call sets up the vocabulary's
    /// token trie.
    pub fn compile_constraint(&mut self, c: &Constraint) -> Result<ConstraintStats> {
        Ok(self.constraint_session(c)?.stats)
    }

    fn constraint_session(&mut self, c: &Constraint) -> Result<Session> {
        let syntax = self.text.tool_syntax();
        let constrainer = match &mut self.constrainer {
            Some(k) => k,
            None => self.constrainer.insert(Constrainer::new(&self.text.tokenizer, self.runtime.cfg.vocab)?),
        };
        constrainer.compile(c, &syntax)
    }

    /// How many leading tokens of `prompt` (whose positions hold the rows of
    /// images by `images`, a digest per position, 0 for a token) can be
    /// reused from the cache.
    fn reusable_prefix(&self, prompt: &[u32], images: &[u64]) -> usize {
        let image = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        let mut p = self
            .cached
            .iter()
            .zip(prompt)
            .enumerate()
            .take_while(|(i, (a, b))| a == b && image(&self.cached_images, *i) == image(images, *i))
            .count();
        if p == prompt.len() {
            p = p.saturating_sub(1); // at least one token must run to get logits
        }
        for (l, &slots) in self.runtime.layer_slots.iter().enumerate() {
            if let Some(w) = self.runtime.cfg.window(l) {
                // In a layer's ring, positions below the highest written
                // less its slots are overwritten; the first new query needs
                // keys down to p - w + 1.
                let oldest_kept = self.cached.len().max(self.written).saturating_sub(slots);
                if (p + 1).saturating_sub(w) < oldest_kept {
                    return 0;
                }
            }
        }
        p
    }

    /// Generate a continuation of `prompt` (token ids used as given). Prompt
    /// tokens already in the KV cache are not run again. `on_token` is called
    /// for every generated token with the text it completes (possibly empty:
    /// text is held back while it could still become a stop string or a
    /// multi-byte character) and its log-probability if asked for; returning
    /// `false` aborts.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&str, u32, Option<&TokenLogprob>) -> bool,
    ) -> Result<Generation> {
        req.sampling.validate()?;
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        let context = self.runtime.opts.context;
        if prompt.len() > context {
            return Err(Error::ContextOverflow { tokens: prompt.len(), context });
        }
        let vocab = self.runtime.cfg.vocab;
        if let Some(&bad) = prompt.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::InvalidRequest(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        let image_keys = self.image_keys(prompt, &req.images)?;
        let keep = self.reusable_prefix(prompt, &image_keys);
        self.cached.truncate(keep);
        self.cached_images.truncate(keep);
        // The images with rows still to run are encoded first, into the
        // runtime's feature rows; `feature_row[i]`: the row of prompt
        // position `keep + i`.
        let feature_row = self.encode_images(prompt.len(), keep, &req.images)?;
        if req.sampling.uses_penalties() {
            self.runtime.reset_sampler_state(prompt);
        }
        // The constraint compiles (or comes from the cache) before anything runs:
        // a bad schema costs no GPU work and leaves the cache as it was.
        let mut session = match &req.constraint {
            Some(c) => Some(self.constraint_session(c)?),
            None => None,
        };
        let eos = self.text.tokenizer.eos.clone();
        // The constraint's output is complete: what the last pass drew is not used.
        let mut ended = false;
        let sampling = &req.sampling;
        let t0 = Instant::now();
        let new = &prompt[keep..];
        let chunk = self.runtime.opts.chunk;
        let lp = req.logprobs.map(|n| n.min(crate::forward::MAX_TOP_LOGPROBS) + 1).unwrap_or(0);
        let mut token = 0;
        let mut token_lp = None;
        let n_chunks = new.len().div_ceil(chunk);
        for (i, part) in new.chunks(chunk).enumerate() {
            let last = i + 1 == n_chunks;
            let out = if last { Output::Sample } else { Output::None };
            let start = self.cached.len();
            if let Some(s) = session.as_mut().filter(|_| last) {
                s.budget(req.max_tokens.saturating_sub(1), req.max_tokens);
            }
            let image_rows = image_runs(&feature_row, start - keep, part.len());
            let pass = PassRequest {
                capture_logits: last && req.top_logits > 0,
                logprobs: lp,
                image_rows: &image_rows,
                ..PassRequest::new(part, start, out, sampling)
            };
            // Counted before the pass: one that fails has written some.
            self.written = self.written.max(start + part.len());
            let r = sample(&mut self.runtime, pass, session.as_mut(), &eos, &mut ended).await;
            match r {
                Ok(t) => {
                    self.cached.extend_from_slice(part);
                    self.cached_images.extend((start..start + part.len()).map(|i| image_keys.get(i).copied().unwrap_or(0)));
                    if let Some(t) = t {
                        token = t.token;
                        token_lp = t.logprob;
                    }
                }
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        let mut top_logits = Vec::new();
        if req.top_logits > 0 {
            let logits = self.runtime.captured_logits().await?;
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            let k = req.top_logits.min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            idx.truncate(k);
            idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
            top_logits = idx.into_iter().map(|i| (i, logits[i as usize])).collect();
        }
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut generated = Vec::new();
        let mut stream = TextStream::new(&req.stop, req.tools, req.sampling.seed ^ prompt.len() as u64);
        let mut finish = FinishReason::Length;
        let mut aborted = false;
        let mut logprobs = Vec::new();
        if ended {
            finish = FinishReason::Stop;
        }
        loop {
            if req.max_tokens == 0 || ended {
                break;
            }
            generated.push(token);
            let this_lp = token_lp.take().map(|(logprob, top)| TokenLogprob { id: token, logprob, top });
            let is_eos = !req.ignore_eos && self.text.tokenizer.is_eos(token);
            let mut done = false;
            if is_eos {
                finish = FinishReason::Stop;
                done = true;
            } else {
                if let Some(s) = session.as_mut() {
                    s.commit(token)?;
                    if s.is_finished() {
                        // Nothing may follow: the output is complete.
                        finish = FinishReason::Stop;
                        done = true;
                    }
                }
                if stream.push(&self.text.tokenizer, token)? {
                    finish = FinishReason::Stop;
                    done = true;
                }
            }
            if !done && (generated.len() >= req.max_tokens || self.cached.len() >= context) {
                done = true;
            }
            // Stream what can no longer become part of a stop string or a call.
            if !on_token(stream.next_piece(done), token, this_lp.as_ref()) {
                aborted = true;
                break;
            }
            if let Some(l) = this_lp {
                logprobs.push(l);
            }
            if done {
                break;
            }
            let start = self.cached.len();
            if let Some(s) = session.as_mut() {
                s.budget(req.max_tokens.saturating_sub(generated.len() + 1), req.max_tokens);
            }
            let pass = PassRequest { sample_index: generated.len() as u32, logprobs: lp, ..PassRequest::new(&[], start, Output::Sample, sampling) };
            self.written = self.written.max(start + 1);
            let r = sample(&mut self.runtime, pass, session.as_mut(), &eos, &mut ended).await;
            match r {
                Ok(Some(t)) => {
                    self.cached.push(token);
                    self.cached_images.push(0);
                    token = t.token;
                    token_lp = t.logprob;
                    if ended {
                        finish = FinishReason::Stop;
                        // Text held back (a possible stop string) goes out now.
                        let piece = stream.next_piece(true);
                        if !piece.is_empty() && !on_token(piece, token, None) {
                            aborted = true;
                        }
                        break;
                    }
                }
                Ok(None) => return Err(Error::Internal("decode pass produced no token".into())),
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        if aborted {
            return Err(Error::Aborted);
        }
        let Finished { text, tool_calls, late_piece } = stream.finish();
        if !tool_calls.is_empty() {
            finish = FinishReason::ToolCalls;
        }
        if let Some(piece) = late_piece {
            on_token(&piece, *generated.last().unwrap_or(&0), None);
        }
        Ok(Generation {
            tool_calls,
            prompt_tokens: prompt.len(),
            prefilled_tokens: new.len(),
            generated,
            text,
            finish,
            top_logits,
            logprobs,
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            constraint: session.map(|s| s.stats),
        })
    }

    /// `ids` (a rendered prompt with one image token per image) with each
    /// image token laid out as its picture's grid of image tokens, and the
    /// pictures as the model's processor makes them, in order. A model
    /// without an image side, or a count of image tokens that is not the
    /// count of pictures, is INVALID_REQUEST.
    pub fn prompt_images(&self, ids: &[u32], pictures: &[Picture]) -> Result<(Vec<u32>, Vec<PromptImage>)> {
        let Some(vc) = &self.runtime.cfg.vision else {
            return Err(Error::InvalidRequest("this model takes no images (it has no vision encoder)".into()));
        };
        let token = |name: &str| {
            self.text.tokenizer.token_id(name).ok_or_else(|| Error::Unsupported(format!("the tokenizer has no {name} token for images")))
        };
        let tokens = ImageTokens { image: vc.image_token_id, row_break: token("[IMG_BREAK]")?, end: token("[IMG_END]")? };
        let unit = vc.patch * vc.merge();
        let pixels: Vec<Pixels> = pictures.iter().map(|p| vc.processor.pixels(p)).collect();
        let grids: Vec<(usize, usize)> = pixels.iter().map(|px| (px.height / unit, px.width / unit)).collect();
        let (expanded, positions) = crate::vision::layout::expand(ids, tokens, &grids)?;
        let images = pixels
            .into_iter()
            .zip(positions)
            .map(|(pixels, positions)| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (pixels.height, pixels.width).hash(&mut h);
                pixels.data.iter().for_each(|v| v.to_bits().hash(&mut h));
                PromptImage { pixels, positions, key: h.finish() | 1 }
            })
            .collect();
        Ok((expanded, images))
    }

    /// A digest per prompt position: its image's (0 where a token's own
    /// embedding goes); empty without images. Positions that are not image
    /// tokens, an image whose rows are not its tokens, or an image token
    /// without an image are INVALID_REQUEST.
    fn image_keys(&self, prompt: &[u32], images: &[PromptImage]) -> Result<Vec<u64>> {
        let Some(((encoder, _), vc)) = self.runtime.vision.as_ref().zip(self.runtime.cfg.vision.as_ref()) else {
            if images.is_empty() {
                return Ok(Vec::new());
            }
            return Err(Error::InvalidRequest("this model takes no images (it has no vision encoder)".into()));
        };
        if images.is_empty() {
            // As transformers' processor: an image token needs its image (its
            // own embedding is no picture of anything). Text that spells it
            // becomes it where the template parses special tokens.
            return match prompt.iter().position(|&t| t == vc.image_token_id) {
                Some(p) => Err(Error::InvalidRequest(format!(
                    "the prompt has an image token (id {}) at position {p} but no image: send images as image parts, not the token as text",
                    vc.image_token_id
                ))),
                None => Ok(Vec::new()),
            };
        }
        let mut keys = vec![0u64; prompt.len()];
        for (k, im) in images.iter().enumerate() {
            if im.positions.len() != encoder.tokens_of(&im.pixels) {
                return Err(Error::InvalidRequest(format!("image {k}: {} positions for {} image tokens", im.positions.len(), encoder.tokens_of(&im.pixels))));
            }
            for &p in &im.positions {
                if prompt.get(p) != Some(&vc.image_token_id) || keys[p] != 0 {
                    return Err(Error::InvalidRequest(format!("image {k}: position {p} is not a free image token of the prompt")));
                }
                keys[p] = im.key;
            }
        }
        if let Some(p) = prompt.iter().zip(&keys).position(|(&t, &k)| t == vc.image_token_id && k == 0) {
            return Err(Error::InvalidRequest(format!("the image token at position {p} belongs to no image")));
        }
        Ok(keys)
    }

    /// Encode the images with rows at positions `keep..len` into the
    /// runtime's feature rows; per position from `keep`, its feature row
    /// (`u32::MAX`: a token).
    fn encode_images(&mut self, len: usize, keep: usize, images: &[PromptImage]) -> Result<Vec<u32>> {
        let mut rows = vec![u32::MAX; len - keep];
        let Some((encoder, features)) = self.runtime.vision.as_ref() else { return Ok(rows) };
        let hidden = self.runtime.cfg.hidden;
        let mut at = 0;
        for im in images.iter().filter(|im| im.positions.iter().any(|&p| p >= keep)) {
            let n = encoder.encode(self.runtime.gpu(), &im.pixels, hidden, features, at)?;
            for (i, &p) in im.positions.iter().enumerate().filter(|(_, &p)| p >= keep) {
                rows[p - keep] = (at + i) as u32;
            }
            at += n;
        }
        Ok(rows)
    }

    /// Logits at every position of `ids` from a fresh context ([ids.len()][vocab]).
    pub async fn logits_all(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        let context = self.runtime.opts.context;
        if ids.len() > context {
            return Err(Error::ContextOverflow { tokens: ids.len(), context });
        }
        let n = ids.len().checked_mul(self.runtime.cfg.vocab).ok_or_else(|| {
            Error::InvalidRequest(format!("logits of {} positions do not fit in memory", ids.len()))
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("no host memory for {n} logits")))?;
        let sampling = SamplingParams::greedy();
        for part in ids.chunks(self.runtime.opts.chunk) {
            let start = self.cached.len();
            self.written = self.written.max(start + part.len());
            self.runtime.pass(PassRequest::new(part, start, Output::AllLogits, &sampling)).await?;
            out.extend(self.runtime.read_all_logits(part.len()).await?);
            self.cached.extend_from_slice(part);
            self.cached_images.extend(std::iter::repeat_n(0, part.len()));
        }
        Ok(out)
    }
}
