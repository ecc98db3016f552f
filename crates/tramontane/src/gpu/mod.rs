//! The GPU context: adapter, device, error capture, buffers and readback.
//! Shared unchanged by native (Vulkan/Metal/DX12) and browser (WebGPU) builds.

pub mod bindings;
pub mod kernels;
pub mod profile;
mod readback;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use readback::Callback;

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
pub use kernels::{Family, Kernels};
pub use profile::{DeviceProfile, Shapes, Store};

/// Mirrors `struct Step` in shaders/common.wgsl: what changes between passes.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
pub struct Step {
    pub n_tokens: u32,
    pub start_pos: u32,
    pub n_splits: u32,
    pub split_len: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: u32,
    pub sample_index: u32,
    pub greedy: u32,
    /// 0 = off, else 1 + the number of top alternatives to report.
    pub logprobs: u32,
    /// 1: only tokens allowed by the sampler's mask may be drawn.
    pub masked: u32,
    pub _pad: u32,
}

/// What the engine runs on, for `engine.info` and benchmarks.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub shader_f16: bool,
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
    pub max_texture_2d: u32,
}

/// Where a weight slab lives on the GPU, and so which prelude its kernels
/// read it through (gpu/kernels.rs): a storage buffer of vec4 words
/// (weights_in_buffer.wgsl), or on lavapipe a 2-D `rgba32uint` texture with
/// [`WEIGHT_TEXTURE_WIDTH`] word quads per texel row (weights_in_texture.wgsl),
/// whose loads that driver runs without a branch per SIMD lane, its rows
/// interleaved by 8 where the type allows (upload/interleave.rs): `units`
/// blocks (or super-blocks) per row, 0 for plain rows.
#[derive(Clone)]
pub enum WeightStore {
    Buffer(wgpu::Buffer),
    Texture { texture: wgpu::Texture, view: wgpu::TextureView, units: u32 },
}

/// Word quads (texels) per row of a weight texture; weights_in_texture.wgsl
/// addresses quad i at (i % WEIGHT_TEXTURE_WIDTH, i / WEIGHT_TEXTURE_WIDTH): the shaders get the value as `TEXTURE_WIDTH` (kernels.rs `host_constants`).
pub const WEIGHT_TEXTURE_WIDTH: u64 = 4096;

impl WeightStore {
    pub fn is_texture(&self) -> bool {
        matches!(self, WeightStore::Texture { .. })
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        match self {
            WeightStore::Buffer(b) => b.as_entire_binding(),
            WeightStore::Texture { view, .. } => wgpu::BindingResource::TextureView(view),
        }
    }

    /// GPU bytes it holds.
    pub fn bytes(&self) -> u64 {
        match self {
            WeightStore::Buffer(b) => b.size(),
            WeightStore::Texture { texture, .. } => {
                let s = texture.size();
                u64::from(s.width) * u64::from(s.height) * 16
            }
        }
    }

    /// Blocks per row of interleaved rows (weights.wgsl's `W_UNITS`); 0:
    /// plain rows.
    pub fn interleaved_units(&self) -> u32 {
        match self {
            WeightStore::Buffer(_) => 0,
            WeightStore::Texture { units, .. } => *units,
        }
    }
}

/// A copy of an activation buffer in a texture laid out as weight textures
/// are (quad i at (i % WEIGHT_TEXTURE_WIDTH, i / WEIGHT_TEXTURE_WIDTH)), for kernels that read the same
/// inputs on every SIMD lane of lavapipe (matmul_rows.wgsl, through
/// inputs_in_texture.wgsl): a texel fetch runs there as one gather, a storage
/// load as a branch per lane and component (prefill +20-25% when the input
/// loads cost nothing at all, measured). The pass refreshes it before each
/// dispatch that reads it: [`InputTexture::copy`].
#[derive(Clone)]
pub struct InputTexture {
    pub source: wgpu::Buffer,
    texture: wgpu::Texture,
    pub view: wgpu::TextureView,
}

/// Bytes of the buffer [`Gpu::storage`] (and `storage_init`) makes for `size`
/// bytes: whole 16-byte units, at least one.
pub fn storage_bytes(size: u64) -> u64 {
    size.max(16).next_multiple_of(16)
}

/// Bytes of the buffer [`Gpu::readback`] makes for `size` bytes.
pub fn readback_bytes(size: u64) -> u64 {
    size.max(4).next_multiple_of(4)
}

/// Width and height in texels of a texture of `quads` quads (at least one),
/// [`WEIGHT_TEXTURE_WIDTH`] a row.
fn quad_extent(quads: u64) -> (u64, u64) {
    let quads = quads.max(1);
    (quads.min(WEIGHT_TEXTURE_WIDTH), quads.div_ceil(WEIGHT_TEXTURE_WIDTH))
}

impl InputTexture {
    /// Copy the first `quads` quads of the source buffer in.
    pub fn copy(&self, enc: &mut wgpu::CommandEncoder, quads: u64) {
        copy_quads(enc, &self.source, &self.texture, quads.min(self.source.size() / 16));
    }

    pub fn bytes(&self) -> u64 {
        let s = self.texture.size();
        u64::from(s.width) * u64::from(s.height) * 16
    }
}

/// Record the copy of `buf`'s first `quads` quads into `texture`'s rows of
/// [`WEIGHT_TEXTURE_WIDTH`]: whole rows, then the last row's first texels.
fn copy_quads(enc: &mut wgpu::CommandEncoder, buf: &wgpu::Buffer, texture: &wgpu::Texture, quads: u64) {
    let (full, rest) = (quads / WEIGHT_TEXTURE_WIDTH, quads % WEIGHT_TEXTURE_WIDTH);
    let row_bytes = WEIGHT_TEXTURE_WIDTH * 16;
    for (y, width, height) in [(0, WEIGHT_TEXTURE_WIDTH, full), (full, rest, 1)] {
        if width == 0 || height == 0 {
            continue;
        }
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: buf,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: y * row_bytes,
                    bytes_per_row: Some(row_bytes as u32),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d { x: 0, y: y as u32, z: 0 },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
        );
    }
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub kernels: Kernels,
    /// First uncaptured error or device loss since the last check.
    fault: Arc<Mutex<Option<Error>>>,
    /// Set once the device is lost: every later check fails with DEVICE_LOST,
    /// so callers know to make a new device (the web engine does on `load`).
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// What the adapter is, and the `kernels` option: what [`Gpu::profile`]
    /// builds each load's [`DeviceProfile`] from.
    settings: Mutex<Settings>,
}

/// The inputs of a [`DeviceProfile`] that may change between loads.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// The "GPU" is a CPU rasterizer (lavapipe, SwiftShader). Detected
    /// natively; the browser, where WebGPU hides the device type, sets it
    /// from the adapter's info (`set_cpu`).
    cpu: bool,
    /// The adapter's smallest subgroup size where the device has subgroups,
    /// else 0. Natively from wgpu's SUBGROUP feature; browsers set it
    /// (`set_subgroups`), since wgpu cannot ask WebGPU for `subgroups`.
    subgroup_min: u32,
    /// The device reads textures faster than buffers: lavapipe, natively.
    /// (SwiftShader, native or in Chromium, keeps buffers: the texture path
    /// was measured on lavapipe only.)
    textures_faster: bool,
    shape: KernelShape,
}

/// Which shapes the kernels take: `Auto` as the adapter was detected (CPU
/// shapes on a CPU rasterizer, GPU shapes elsewhere); `Gpu` / `Cpu` force
/// one, so that both can run on any device (the native tests run the GPU
/// shapes on lavapipe; `--kernels` in the CLI, `kernels` in the npm package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelShape {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for KernelShape {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(KernelShape::Auto),
            "gpu" => Ok(KernelShape::Gpu),
            "cpu" => Ok(KernelShape::Cpu),
            _ => Err(Error::InvalidRequest(format!("kernels must be auto, gpu or cpu, not {s:?}"))),
        }
    }
}

/// Lanes for a smallest subgroup size of `min_size`: a power of two, at most
/// a workgroup (64); 1 (no subgroup sums) below 2.
fn lanes_of(min_size: u32) -> u32 {
    if min_size < 2 { 1 } else { 1 << min_size.min(64).ilog2() }
}

impl Gpu {
    /// Pick the best adapter and open a device with the adapter's own limits
    /// (WebGPU's defaults are too small for model weights).
    pub async fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unsupported(format!("no WebGPU/Vulkan adapter: {e}")))?;
        Self::from_adapter(adapter).await
    }

    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let shader_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
        let mut features = wgpu::Features::empty();
        if shader_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tramontane"),
                // f16 KV caches (see forward/) and subgroup sums where the
                // device has them.
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("request_device failed: {e}")))?;
        let fault: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        {
            let fault = fault.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let err = match &e {
                    wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
                    _ => Error::Gpu(e.to_string()),
                };
                if let Ok(mut f) = fault.lock() {
                    f.get_or_insert(err);
                }
            }));
        }
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (fault, lost) = (fault.clone(), lost.clone());
            // Any reason counts, "destroyed" included: we never destroy our own
            // device (dropping it after the engine is gone sets a flag no one reads).
            device.set_device_lost_callback(move |reason, msg| {
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Ok(mut f) = fault.lock() {
                    f.get_or_insert(Error::DeviceLost(format!("{reason:?}: {msg}")));
                }
            });
        }
        let adapter = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            shader_f16,
            max_buffer_size: limits.max_buffer_size,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_texture_2d: limits.max_texture_dimension_2d,
        };
        let kernels = Kernels::new(&device, info.backend == wgpu::Backend::BrowserWebGpu);
        let name = info.name.to_lowercase();
        let cpu = info.device_type == wgpu::DeviceType::Cpu || name.contains("llvmpipe") || name.contains("swiftshader");
        let textures = name.contains("llvmpipe") && info.backend != wgpu::Backend::BrowserWebGpu;
        let subgroup_min = if subgroups { info.subgroup_min_size } else { 0 };
        let settings = Mutex::new(Settings { cpu, subgroup_min, textures_faster: textures, shape: KernelShape::Auto });
        Ok(Gpu { device, queue, adapter, kernels, fault, lost, settings })
    }

    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Settings)) {
        f(&mut self.settings.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The kernel shapes a model loaded now gets: the adapter and the
    /// `kernels` option (see [`DeviceProfile`]). A load builds it once; a
    /// loaded model keeps its own.
    pub fn profile(&self) -> DeviceProfile {
        let s = self.settings();
        let cpu = match s.shape {
            KernelShape::Auto => s.cpu,
            KernelShape::Gpu => false,
            KernelShape::Cpu => true,
        };
        DeviceProfile::new(if cpu { Shapes::Cpu } else { Shapes::Gpu }, lanes_of(s.subgroup_min), s.textures_faster)
    }

    /// Say that the device has subgroups of at least `min_size` invocations
    /// (0: none), for models loaded later: browsers, where the page asked
    /// WebGPU for `subgroups` itself.
    pub fn set_subgroups(&self, min_size: u32) {
        self.update(|s| s.subgroup_min = min_size);
    }

    /// Return (and clear) the first GPU error seen since the last call; a lost
    /// device fails every check.
    pub fn check(&self) -> Result<()> {
        match self.fault.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None if self.is_lost() => Err(Error::DeviceLost("the GPU device was lost earlier; load the model again".into())),
            None => Ok(()),
        }
    }

    /// Say whether the adapter is a CPU rasterizer (for models loaded later).
    pub fn set_cpu(&self, cpu: bool) {
        self.update(|s| s.cpu = cpu);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Record a loss seen some other way (a readback that cannot map).
    pub(crate) fn mark_lost(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Largest buffer a kernel may bind.
    pub fn max_binding(&self) -> u64 {
        self.adapter.max_storage_binding.min(self.adapter.max_buffer_size)
    }

    /// Force the kernels' shapes (for models loaded later; a loaded model
    /// keeps the shapes it was built with).
    pub fn set_kernel_shape(&self, shape: KernelShape) {
        self.update(|s| s.shape = shape);
    }

    /// Largest weight slab the kernels may bind: the binding limit, and in
    /// textures the largest texture.
    pub fn max_weight_binding(&self, store: Store) -> u64 {
        let texture = u64::from(self.adapter.max_texture_2d) * WEIGHT_TEXTURE_WIDTH * 16;
        match store {
            Store::Texture => self.max_binding().min(texture),
            Store::Buffer => self.max_binding(),
        }
    }

    /// A weight buffer's words copied into a texture of
    /// [`WEIGHT_TEXTURE_WIDTH`] quads per row (the last row partly filled), on
    /// the GPU; the buffer may be dropped once this is submitted. `units`:
    /// see [`WeightStore`].
    pub fn weight_texture(&self, label: &str, buf: &wgpu::Buffer, units: u32) -> WeightStore {
        let texture = self.quad_texture(label, buf.size() / 16);
        let mut enc = self.device.create_command_encoder(&Default::default());
        copy_quads(&mut enc, buf, &texture, buf.size() / 16);
        self.queue.submit([enc.finish()]);
        let view = texture.create_view(&Default::default());
        WeightStore::Texture { texture, view, units }
    }

    /// An [`InputTexture`] for the activations in `source`, as large as it
    /// (None where that exceeds the device's largest texture).
    pub fn input_texture(&self, label: &str, source: &wgpu::Buffer) -> Option<InputTexture> {
        self.input_texture_bytes(source.size())?;
        let texture = self.quad_texture(label, source.size() / 16);
        let view = texture.create_view(&Default::default());
        Some(InputTexture { source: source.clone(), texture, view })
    }

    /// Bytes of the [`InputTexture`] [`Gpu::input_texture`] makes for a
    /// `source_bytes` buffer (None: it makes none, the buffer is too large).
    pub fn input_texture_bytes(&self, source_bytes: u64) -> Option<u64> {
        let (width, height) = quad_extent(source_bytes / 16);
        (height <= u64::from(self.adapter.max_texture_2d)).then_some(width * height * 16)
    }

    /// An `rgba32uint` texture holding `quads` 16-byte quads,
    /// [`WEIGHT_TEXTURE_WIDTH`] per row, filled by [`copy_quads`].
    fn quad_texture(&self, label: &str, quads: u64) -> wgpu::Texture {
        let (width, height) = quad_extent(quads);
        self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        })
    }

    /// A storage buffer of `size` bytes, zero-filled, rounded up to whole
    /// 16-byte units so kernels may read any f32 buffer as vec4s.
    pub fn storage(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: storage_bytes(size),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    pub fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let mut padded;
        let data = if storage_bytes(data.len() as u64) != data.len() as u64 {
            padded = data.to_vec();
            padded.resize(storage_bytes(data.len() as u64) as usize, 0);
            &padded[..]
        } else {
            data
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        })
    }

    pub fn uniform(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub fn uniform_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    pub fn readback(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: readback_bytes(size),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Map a MAP_READ buffer and copy out its first `size` bytes.
    pub async fn read_mapped(&self, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        readback::read_mapped(self, buf, size).await
    }

    /// Resolves once the GPU has done the work submitted so far (browsers
    /// only: natively wait with `device.poll`).
    #[cfg(target_arch = "wasm32")]
    pub fn submitted_work_done(&self) -> impl std::future::Future<Output = ()> + use<> {
        readback::submitted_work_done(self)
    }

    /// Copy `size` bytes of a storage buffer to the host (tests, debugging).
    pub async fn read_buffer(&self, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let size = size.next_multiple_of(4);
        let rb = self.readback("read_buffer", size);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &rb, 0, size);
        self.queue.submit([enc.finish()]);
        self.read_mapped(&rb, size).await
    }

    pub async fn read_f32(&self, buf: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        let bytes = self.read_buffer(buf, 4 * n as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[..4 * n]))
    }

    pub async fn read_u32(&self, buf: &wgpu::Buffer, n: usize) -> Result<Vec<u32>> {
        let bytes = self.read_buffer(buf, 4 * n as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[..4 * n]))
    }
}
