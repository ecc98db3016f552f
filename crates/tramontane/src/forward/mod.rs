//! The forward pass: activation buffers, KV cache and every dispatch are created
//! once at load; a pass only writes the small `Step` uniform (and the prompt ids)
//! and records the prepared dispatches into one command buffer.
//!
//! `sizes` checks every buffer size, `buffers` allocates them, `linear` tunes
//! the matmul kernels, `layers` plans each dispatch and their order, `pass`
//! runs one, `profile` times its kernels, `self_test` checks the kernels a
//! model will use on the adapter before its weights are fetched.

mod buffers;
mod layers;
mod linear;
mod pass;
mod profile;
pub mod rope_table;
pub mod self_test;
mod sizes;
pub mod vision;

pub use buffers::GpuBytes;
pub use linear::{linear_binds, linear_groups, linear_outputs_per_group, linear_spec, moe_max_tiles, residual, with_norm, with_rope};
pub use pass::{Output, PassRequest, Sampled, MAX_SPLITS};
pub use profile::{KernelTime, Profile};
pub use sizes::Sizes;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::kernels::Dispatch;
use crate::gpu::{DeviceProfile, Gpu};
use crate::parse::ModelConfig;
use crate::upload::Weights;
use buffers::Buffers;
use layers::Plan;

/// Most top alternatives a step can report with its log-probability.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// The sampler's output: token, its logprob, then (id, logprob) pairs.
const OUT_WORDS: usize = 2 + 2 * MAX_TOP_LOGPROBS as usize;

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Maximum tokens in context (prompt + generated).
    pub context: usize,
    /// Rows per prefill pass.
    pub chunk: usize,
    /// Keep keys and values in f16 (half the memory and attention traffic;
    /// needs `shader-f16`).
    pub kv_f16: bool,
    /// The kernels' shapes, decided once for this load.
    pub profile: DeviceProfile,
}

/// Receives each dispatch of a pass: what it computes (for profiles), the
/// prepared pipeline and bind group, and its grid. A visitor rather than a
/// list, so a pass allocates nothing.
type Visit<'v, 'a> = &'v mut dyn FnMut(&'static str, &'a Dispatch, [u32; 3]);

pub struct Runtime {
    gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    pub weights: Weights,
    pub opts: RuntimeOptions,
    /// Slots of the largest KV cache of any layer.
    pub kv_slots: usize,
    /// Each layer's KV cache slots (a sliding layer's ring is window + chunk).
    pub layer_slots: Vec<usize>,
    bufs: Buffers,
    plan: Plan,
    /// The host side of the sampler's mask, reused every step.
    mask_words: Vec<u32>,
    planned: GpuBytes,
    /// The image encoder of a vision checkpoint, and the rows of projected
    /// image features a prompt's image tokens take (one per context token
    /// at most: image rows are prompt rows).
    pub vision: Option<(vision::Encoder, wgpu::Buffer)>,
}

/// A [`Runtime`] built while its weights stream in, on a thread of its own
/// (natively creating pipelines is compiling them: seconds for a 7B model on
/// lavapipe). The upload decides where this pays (`upload::executor`); on
/// wasm, without threads, it would be built at once.
pub struct EarlyRuntime(Early);

enum Early {
    #[cfg(not(target_arch = "wasm32"))]
    Building(std::thread::JoinHandle<Result<Runtime>>),
    Built(Result<Runtime>),
}

impl EarlyRuntime {
    /// Start building the runtime on `weights` (bound, not yet filled).
    pub fn start(gpu: Arc<Gpu>, cfg: ModelConfig, weights: Weights, opts: RuntimeOptions) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let spawned = std::thread::Builder::new()
                .name("tramontane-pipelines".into())
                .spawn({
                    let (gpu, cfg, weights, opts) = (gpu.clone(), cfg.clone(), weights.clone(), opts.clone());
                    move || Runtime::new(gpu, cfg, weights, opts)
                });
            // No thread to be had: built here then.
            match spawned {
                Ok(h) => EarlyRuntime(Early::Building(h)),
                Err(_) => EarlyRuntime(Early::Built(Runtime::new(gpu, cfg, weights, opts))),
            }
        }
        #[cfg(target_arch = "wasm32")]
        EarlyRuntime(Early::Built(Runtime::new(gpu, cfg, weights, opts)))
    }

    /// The upload failed: wait for the build to end (its thread holds the
    /// weights' buffers and allocates the pass's) and drop what it made, so a
    /// retry finds the GPU memory free.
    pub fn abandon(self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Early::Building(h) = self.0 {
            let _ = h.join();
        }
    }

    /// The runtime, once its weights are filled in (`weights`: as the upload
    /// finished them, with its timings).
    pub fn finish(self, weights: Weights) -> Result<Runtime> {
        let built = match self.0 {
            #[cfg(not(target_arch = "wasm32"))]
            Early::Building(h) => h.join().unwrap_or_else(|_| Err(Error::Internal("building the forward pass panicked".into()))),
            Early::Built(r) => r,
        };
        let mut rt = built?;
        rt.weights = weights;
        Ok(rt)
    }
}

impl Runtime {
    pub fn new(gpu: Arc<Gpu>, cfg: ModelConfig, weights: Weights, opts: RuntimeOptions) -> Result<Self> {
        // Sizes checked again (the loader checked them before downloading).
        let sizes = Sizes::plan(&cfg, &opts, &gpu)?;
        let bufs = Buffers::new(&gpu, &cfg, &opts, &sizes)?;
        let planned = sizes.planned;
        let layer_slots = sizes.layer_slots;
        let kv_slots = layer_slots.iter().copied().max().unwrap_or(opts.context);
        let plan = Plan::new(&gpu, &opts.profile, &cfg, opts.kv_f16, &weights, &bufs, &layer_slots)?;
        gpu.check()?;
        let mask_words = Vec::with_capacity(cfg.vocab.div_ceil(32));
        let vision = match (&cfg.vision, &weights.vision) {
            (Some(vc), Some(w)) => {
                let encoder = vision::Encoder::new(&gpu, &opts.profile, vc, cfg.hidden, w)?;
                let features = gpu.storage("image_features", (opts.context * cfg.hidden * 4) as u64);
                gpu.check()?;
                Some((encoder, features))
            }
            _ => None,
        };
        Ok(Runtime { gpu, cfg, weights, opts, kv_slots, layer_slots, bufs, plan, mask_words, planned, vision })
    }

    /// GPU bytes of the weights and of every buffer the runtime allocated.
    pub fn gpu_bytes(&self) -> GpuBytes {
        let mut b = GpuBytes { weights: self.weights.bytes, ..self.bufs.bytes };
        if let Some((e, f)) = &self.vision {
            b.activations += e.bytes + f.size();
        }
        b
    }

    /// The device this runtime runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// What [`Sizes::plan`] said the buffers besides the weights would take
    /// (the figure checked against `max_gpu_bytes` before the download).
    pub fn planned_gpu_bytes(&self) -> GpuBytes {
        GpuBytes { weights: self.weights.bytes, ..self.planned }
    }

    /// Overwrite the sampler's per-token state: `context` tokens are "in context"
    /// (repetition penalty), no token has been generated yet.
    pub fn reset_sampler_state(&self, context: &[u32]) {
        let mut st = vec![0u32; self.cfg.vocab];
        for &t in context {
            if let Some(s) = st.get_mut(t as usize) {
                *s = 1;
            }
        }
        self.gpu.queue.write_buffer(&self.bufs.state, 0, bytemuck::cast_slice(&st));
    }

    /// Logits captured by the last pass with `capture_logits`.
    pub async fn captured_logits(&self) -> Result<Vec<f32>> {
        let bytes = self.gpu.read_mapped(&self.bufs.logits_rb, self.cfg.vocab as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Logits of every row of the last [`Output::AllLogits`] pass.
    pub async fn read_all_logits(&self, rows: usize) -> Result<Vec<f32>> {
        let buf = self.plan.all_logits().ok_or_else(|| Error::InvalidRequest("no all-logits pass ran".into()))?;
        self.gpu.read_f32(buf, rows * self.cfg.vocab).await
    }

    /// Experts chosen (and their weights) at each row of the last pass, per layer.
    pub async fn router_choices(&self, rows: usize) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        let k = self.cfg.moe.as_ref().map(|m| m.top_k).unwrap_or(0);
        let mut out = Vec::new();
        for (ids, w) in self.bufs.moe.iter().flat_map(|m| &m.choices) {
            out.push((self.gpu.read_u32(ids, rows * k).await?, self.gpu.read_f32(w, rows * k).await?));
        }
        Ok(out)
    }
}
