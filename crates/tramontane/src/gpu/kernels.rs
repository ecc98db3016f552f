//! Shader modules and compute pipelines, created once and cached.
//!
//! Each kernel family is one `.wgsl` file under `shaders/`, specialized with
//! pipeline-overridable constants (dtype, shapes, epilogues). The only
//! "preprocessing" is prepending shared preludes: `common.wgsl` (the per-pass
//! `Step` uniform) to all; `weights.wgsl` (weight decoding) to those that read
//! weight tensors, after the binding it reads them from (`weights_in_buffer.wgsl`,
//! or `weights_in_texture.wgsl` where the weights are textures: see
//! [`WeightStore`]); `linear.wgsl` (shapes, input, output, epilogue) to the
//! linear-layer families (`matvec.wgsl`, `matmul_tiled.wgsl`,
//! `matmul_rows.wgsl`), with their optional inputs (`linear_bias.wgsl`, and
//! for the matvec `linear_norm.wgsl` and `linear_experts.wgsl`) in the form
//! the dispatch needs: declared where it binds them, a stand-in function
//! where not, so no dispatch binds a placeholder buffer ([`Optional`]);
//! `rotary.wgsl` (RoPE and the KV-cache store) to rope.wgsl and the matvec;
//! to `matmul_rows.wgsl`, where it reads its input quads
//! (`inputs_in_buffer.wgsl`, or `inputs_in_texture.wgsl`: see [`InputTexture`]);
//! the KV cache's element type `kv_t` (WGSL has no
//! type-valued constants): `f32`, or `f16` with `enable f16;` on devices with
//! `shader-f16`; and, for the families that reduce, `lanes.wgsl` (sums by
//! subgroup shuffles, after `enable subgroups;` in browsers) on devices with
//! subgroups, else `lanes_serial.wgsl`. Before all of them, the constants the
//! kernels share with the host, defined once on the host ([`host_constants`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::bindings::{matmul, weights};
use super::{InputTexture, WeightStore, WEIGHT_TEXTURE_WIDTH};
use crate::gpu::profile::MR;
use crate::parse::{ggml_type_name, SUPPORTED};

/// The WGSL constants whose values the host decides, written from the
/// host's own definitions so the two cannot disagree: `GGML_<TYPE>` for each
/// weight type the engine reads (the values of weights.wgsl's `WTYPE`:
/// `GGML_Q4_K`, `GGML_IQ4_NL`, ...), `TEXTURE_WIDTH` (texels per row of the
/// weight and input textures, [`WEIGHT_TEXTURE_WIDTH`]) and `MR` (rows per
/// invocation of matmul_rows.wgsl, [`MR`]).
pub fn host_constants() -> String {
    let mut s = String::new();
    for d in SUPPORTED {
        let name = ggml_type_name(d.ggml_type()).unwrap_or("UNKNOWN");
        s.push_str(&format!("const GGML_{name}: u32 = {}u;\n", d.shader_code()));
    }
    s.push_str(&format!("const TEXTURE_WIDTH: u32 = {WEIGHT_TEXTURE_WIDTH}u;\nconst MR: u32 = {MR}u;\n"));
    s
}

const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
const WEIGHTS: &str = include_str!("../../../../shaders/weights.wgsl");
const WEIGHTS_IN_BUFFER: &str = include_str!("../../../../shaders/weights_in_buffer.wgsl");
const WEIGHTS_IN_TEXTURE: &str = include_str!("../../../../shaders/weights_in_texture.wgsl");
const INPUTS_IN_BUFFER: &str = include_str!("../../../../shaders/inputs_in_buffer.wgsl");
const INPUTS_IN_TEXTURE: &str = include_str!("../../../../shaders/inputs_in_texture.wgsl");
const LANES: &str = include_str!("../../../../shaders/lanes.wgsl");
const LANES_SERIAL: &str = include_str!("../../../../shaders/lanes_serial.wgsl");
const LINEAR: &str = include_str!("../../../../shaders/linear.wgsl");
const LINEAR_BIAS: &str = include_str!("../../../../shaders/linear_bias.wgsl");
const LINEAR_NORM: &str = include_str!("../../../../shaders/linear_norm.wgsl");
const LINEAR_EXPERTS: &str = include_str!("../../../../shaders/linear_experts.wgsl");
const ROTARY: &str = include_str!("../../../../shaders/rotary.wgsl");

/// The line that splits an optional input's prelude into its two forms.
const ABSENT: &str = "// ---- absent ----\n";

/// An optional input's prelude (`linear_bias.wgsl`, ...) in one form: the
/// binding and its accessor where `bound`, else the accessor's stand-in.
fn optional(prelude: &'static str, bound: bool) -> &'static str {
    match prelude.split_once(ABSENT) {
        Some((with, without)) => if bound { with } else { without },
        None => prelude,
    }
}

/// The optional inputs of the linear-layer kernels a module declares (each
/// set by the spec's own constant, so the two cannot disagree): the bias
/// (`HAS_BIAS`), the RMSNorm's weights (`NORM`, matvec only), the experts'
/// ids (`MOE`, matvec only). A dispatch binds exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Optional {
    pub bias: bool,
    pub norm: bool,
    pub experts: bool,
}

impl Optional {
    fn of(spec: &Spec) -> Optional {
        let on = |name| spec.constants.iter().any(|c| c.0 == name && c.1 != 0.0);
        match spec.family {
            Family::Matvec => Optional { bias: on("HAS_BIAS"), norm: on("NORM"), experts: on("MOE") },
            Family::MatmulTiled | Family::MatmulRows => Optional { bias: on("HAS_BIAS"), ..Optional::default() },
            _ => Optional::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Embed,
    RmsNorm,
    /// Decode's linear layers (matvec.wgsl: `matvec`, `matvec_rope`).
    Matvec,
    /// Prefill's linear layers on GPUs (matmul_tiled.wgsl: `matmul`, `matmul_grouped`).
    MatmulTiled,
    /// Prefill's linear layers on CPU drivers (matmul_rows.wgsl: `matmul_rows`, `matmul_rows_grouped`).
    MatmulRows,
    Rope,
    Attention,
    Moe,
    Sample,
    /// Mistral 3's patch merger (patch_merge.wgsl).
    PatchMerge,
}

/// Each family's WGSL with every prelude it may get (both weight stores, both
/// input stores, every optional input), for checks of what the kernels
/// declare (gpu/bindings.rs).
#[cfg(test)]
pub(crate) fn family_sources() -> Vec<(Family, String)> {
    Family::ALL
        .into_iter()
        .map(|f| {
            let mut src = String::from(COMMON);
            if f.uses_weights() {
                src.extend([WEIGHTS_IN_BUFFER, WEIGHTS_IN_TEXTURE, WEIGHTS]);
            }
            if f.is_linear() {
                src.extend([LINEAR, optional(LINEAR_BIAS, true)]);
            }
            if f == Family::Matvec {
                src.extend([optional(LINEAR_NORM, true), optional(LINEAR_EXPERTS, true)]);
            }
            if f.is_rotary() {
                src.push_str(ROTARY);
            }
            if f == Family::MatmulRows {
                src.extend([INPUTS_IN_BUFFER, INPUTS_IN_TEXTURE]);
            }
            src.push_str(f.source());
            (f, src)
        })
        .collect()
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Embed,
        Family::RmsNorm,
        Family::Matvec,
        Family::MatmulTiled,
        Family::MatmulRows,
        Family::Rope,
        Family::Attention,
        Family::Moe,
        Family::Sample,
        Family::PatchMerge,
    ];

    fn source(self) -> &'static str {
        match self {
            Family::Embed => include_str!("../../../../shaders/embed.wgsl"),
            Family::RmsNorm => include_str!("../../../../shaders/rmsnorm.wgsl"),
            Family::Matvec => include_str!("../../../../shaders/matvec.wgsl"),
            Family::MatmulTiled => include_str!("../../../../shaders/matmul_tiled.wgsl"),
            Family::MatmulRows => include_str!("../../../../shaders/matmul_rows.wgsl"),
            Family::Rope => include_str!("../../../../shaders/rope.wgsl"),
            Family::Attention => include_str!("../../../../shaders/attention.wgsl"),
            Family::Moe => include_str!("../../../../shaders/moe.wgsl"),
            Family::Sample => include_str!("../../../../shaders/sample.wgsl"),
            Family::PatchMerge => include_str!("../../../../shaders/patch_merge.wgsl"),
        }
    }

    /// The linear-layer families (after linear.wgsl).
    pub fn is_linear(self) -> bool {
        matches!(self, Family::Matvec | Family::MatmulTiled | Family::MatmulRows)
    }

    /// Families that read weight tensors (weights.wgsl).
    pub fn uses_weights(self) -> bool {
        self == Family::Embed || self.is_linear()
    }

    /// Families that rotate and store into the KV cache (rotary.wgsl).
    pub fn is_rotary(self) -> bool {
        matches!(self, Family::Rope | Family::Matvec)
    }

    /// Families that take the `LANES` constant and lanes.wgsl's subgroup
    /// shuffles (the matvec's sums and shared loads, matmul_rows' shared
    /// loads, RMSNorm's sum, `attend_rows`' shared K and V loads).
    fn reduces_in_lanes(self) -> bool {
        matches!(self, Family::Matvec | Family::MatmulRows | Family::RmsNorm | Family::Attention)
    }

    /// Families whose every loop ends whatever the data: a u32 counter
    /// stepping by a positive constant (or halving) toward a bound under 2^31
    /// (widths under 2^21 by the config limits, positions under the checked
    /// context, row counts under the chunk, tile entries clamped). For them
    /// wgpu's loop bounding (an extra counter and exit test in every loop,
    /// which also keeps the driver from unrolling) is left out: +6-12%
    /// prefill and decode on lavapipe. The others (the sampler's bisections,
    /// MoE routing) keep it.
    fn loops_end_by_construction(self) -> bool {
        self.is_linear() || self == Family::Attention
    }

    fn name(self) -> &'static str {
        match self {
            Family::Embed => "embed",
            Family::RmsNorm => "rmsnorm",
            Family::Matvec => "matvec",
            Family::MatmulTiled => "matmul_tiled",
            Family::MatmulRows => "matmul_rows",
            Family::Rope => "rope",
            Family::Attention => "attention",
            Family::Moe => "moe",
            Family::Sample => "sample",
            Family::PatchMerge => "patch_merge",
        }
    }
}

/// A specialized kernel: family, entry point and constant values.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub family: Family,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
    /// The KV cache holds f16 (needs the device's `shader-f16`).
    pub kv_f16: bool,
    /// Built with subgroup shuffles (lanes.wgsl; needs the device's subgroups).
    pub subgroups: bool,
    /// Reads its weights from a texture (weights_in_texture.wgsl); set by
    /// [`Kernels::dispatch_weights`] from the weights it binds.
    pub weights_texture: bool,
    /// `matmul_rows` reads its inputs from a texture (inputs_in_texture.wgsl);
    /// set by [`Kernels::dispatch_rows`].
    pub inputs_texture: bool,
}

impl Spec {
    pub fn new(family: Family, entry: &'static str) -> Self {
        Spec { family, entry, constants: Vec::new(), kv_f16: false, subgroups: false, weights_texture: false, inputs_texture: false }
    }

    pub fn kv_f16(mut self, on: bool) -> Self {
        self.kv_f16 = on;
        self
    }

    /// Shuffle between `lanes` subgroup lanes (the `LANES` constant of
    /// lanes.wgsl's families: sums over runs of lanes, and the CPU drivers'
    /// matvec sharing input loads); 1 or 0: no subgroups.
    pub fn lanes(mut self, lanes: u32) -> Self {
        self.subgroups = lanes > 1;
        self.with("LANES", lanes.max(1))
    }

    /// Set constant `name` (again: the new value replaces the old).
    pub fn with(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        let value = value.into();
        match self.constants.iter_mut().find(|c| c.0 == name) {
            Some(c) => c.1 = value,
            None => self.constants.push((name, value)),
        }
        self
    }

    fn key(&self) -> String {
        let mut k = format!(
            "{}:{}:kv{}:sg{}:wt{}:xt{}",
            self.family.name(),
            self.entry,
            if self.kv_f16 { 16 } else { 32 },
            self.subgroups as u8,
            self.weights_texture as u8,
            self.inputs_texture as u8
        );
        for (n, v) in &self.constants {
            k.push_str(&format!(":{n}={v}"));
        }
        k
    }
}

/// What a shader module is built from: the family and its preludes' forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ModuleKey {
    family: Family,
    kv_f16: bool,
    subgroups: bool,
    weights_texture: bool,
    inputs_texture: bool,
    optional: Optional,
}

impl ModuleKey {
    /// The module `spec` runs in (choices its family has no prelude for are dropped).
    fn of(spec: &Spec) -> ModuleKey {
        let family = spec.family;
        ModuleKey {
            family,
            kv_f16: spec.kv_f16,
            subgroups: spec.subgroups && family.reduces_in_lanes(),
            weights_texture: spec.weights_texture && family.uses_weights(),
            inputs_texture: spec.inputs_texture && family == Family::MatmulRows,
            optional: Optional::of(spec),
        }
    }
}

pub struct Kernels {
    device: wgpu::Device,
    /// WGSL goes to a browser's WebGPU as written, where subgroup builtins
    /// need `enable subgroups;` (naga rejects that directive: natively the
    /// device's features decide).
    browser: bool,
    modules: Mutex<HashMap<ModuleKey, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    /// A text replacement made in every module built from now on (see
    /// [`Kernels::inject_fault`]).
    fault: Mutex<Option<(String, String)>>,
    /// Seconds spent creating shader modules and pipelines so far (natively
    /// that is compiling them; browsers compile at the first dispatch).
    creating: Mutex<f64>,
}

/// A pipeline with the bind group that feeds it, recorded at load time.
pub struct Dispatch {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    /// The texture it reads its inputs from, and the quads per input row:
    /// copied in before it runs ([`Dispatch::copy_inputs`]); None also where
    /// an earlier dispatch of the pass copies them (a split matrix's later
    /// slabs). Boxed: most dispatches have none.
    pub inputs: Option<Box<(InputTexture, u32)>>,
}

impl Dispatch {
    /// Record the copy of the first `rows` input rows into the texture the
    /// dispatch reads them from, if it reads a texture (outside any compute
    /// pass: a pass that records this dispatch starts after it).
    pub fn copy_inputs(&self, enc: &mut wgpu::CommandEncoder, rows: u32) {
        if let Some((tex, row_quads)) = self.inputs.as_deref() {
            tex.copy(enc, u64::from(rows) * u64::from(*row_quads));
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, groups: [u32; 3]) {
        if groups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }
}

impl Kernels {
    pub fn new(device: &wgpu::Device, browser: bool) -> Self {
        Kernels {
            device: device.clone(),
            browser,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            fault: Mutex::default(),
            creating: Mutex::default(),
        }
    }

    /// The fault [`Kernels::inject_fault`] set, if any.
    pub fn fault(&self) -> Option<(String, String)> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Build every kernel from now on with `from` replaced by `to` in its
    /// WGSL (None: as written again), forgetting the modules and pipelines
    /// built so far: how the tests make a driver that computes wrong values
    /// (forward/self_test.rs). Models loaded before keep their pipelines.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Option<(&str, &str)>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault.map(|(a, b)| (a.to_string(), b.to_string()));
        self.modules.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn module(&self, key: ModuleKey) -> wgpu::ShaderModule {
        let ModuleKey { family, kv_f16, subgroups, weights_texture, inputs_texture, optional: opt } = key;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        modules
            .entry(key)
            .or_insert_with(|| {
                let mut src = String::new();
                if subgroups && self.browser {
                    src.push_str("enable subgroups;\n");
                }
                src.push_str(if kv_f16 { "enable f16;\nalias kv_t = f16;\n" } else { "alias kv_t = f32;\n" });
                src.push_str(&host_constants());
                src.push_str(COMMON);
                if family.uses_weights() {
                    src.push_str(if weights_texture { WEIGHTS_IN_TEXTURE } else { WEIGHTS_IN_BUFFER });
                    src.push_str(WEIGHTS);
                }
                if family.is_linear() {
                    src.push_str(LINEAR);
                    src.push_str(optional(LINEAR_BIAS, opt.bias));
                }
                if family == Family::Matvec {
                    src.push_str(optional(LINEAR_NORM, opt.norm));
                    src.push_str(optional(LINEAR_EXPERTS, opt.experts));
                }
                if family.is_rotary() {
                    src.push_str(ROTARY);
                }
                if family == Family::MatmulRows {
                    src.push_str(if inputs_texture { INPUTS_IN_TEXTURE } else { INPUTS_IN_BUFFER });
                }
                if family.reduces_in_lanes() {
                    src.push_str(if subgroups { LANES } else { LANES_SERIAL });
                }
                src.push_str(family.source());
                if let Some((from, to)) = &*self.fault.lock().unwrap_or_else(|p| p.into_inner()) {
                    src = src.replace(from.as_str(), to);
                }
                let desc = wgpu::ShaderModuleDescriptor { label: Some(family.name()), source: wgpu::ShaderSource::Wgsl(src.into()) };
                if family.loops_end_by_construction() {
                    let mut checks = wgpu::ShaderRuntimeChecks::checked();
                    checks.force_loop_bounding = false;
                    // SAFETY: wgpu asks that such shaders have no infinite
                    // loops; see `loops_end_by_construction`. Bounds checks
                    // and the rest stay on.
                    unsafe { self.device.create_shader_module_trusted(desc, checks) }
                } else {
                    self.device.create_shader_module(desc)
                }
            })
            .clone()
    }

    /// Seconds spent creating shader modules and pipelines so far.
    pub fn creating_seconds(&self) -> f64 {
        *self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pipeline(&self, spec: &Spec) -> wgpu::ComputePipeline {
        let key = spec.key();
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return p.clone();
        }
        let t0 = web_time::Instant::now();
        let module = self.module(ModuleKey::of(spec));
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &spec.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, p.clone());
        *self.creating.lock().unwrap_or_else(|p| p.into_inner()) += t0.elapsed().as_secs_f64();
        p
    }

    /// Pipeline plus bind group. `bindings` are (binding index, buffer) pairs:
    /// exactly the bindings the entry point uses (its layout is derived from it).
    pub fn dispatch(&self, spec: &Spec, bindings: &[(u32, &wgpu::Buffer)]) -> Dispatch {
        self.dispatch_entries(spec, bindings, None, None)
    }

    /// [`Kernels::dispatch`] for a kernel that reads weights (weights.wgsl):
    /// `weights` at `weights::W4` (or `W_TEX`), from a buffer or a texture, the spec built
    /// for whichever it is and for its row order.
    pub fn dispatch_weights(&self, spec: &Spec, weights: &WeightStore, bindings: &[(u32, &wgpu::Buffer)]) -> Dispatch {
        self.dispatch_rows(spec, weights, bindings, &[])
    }

    /// [`Kernels::dispatch_weights`], and where `spec` is a dense
    /// `matmul_rows` and one of `inputs` is a texture copy of its input buffer
    /// (`matmul::X`), reading its inputs from that texture instead (`matmul::X_TEX`).
    pub fn dispatch_rows(&self, spec: &Spec, weights: &WeightStore, bindings: &[(u32, &wgpu::Buffer)],
                         inputs: &[InputTexture]) -> Dispatch {
        let mut spec = Spec { weights_texture: weights.is_texture(), ..spec.clone() };
        if weights.interleaved_units() > 0 {
            spec = spec.with("W_INTERLEAVE", 1u32).with("W_UNITS", weights.interleaved_units());
        }
        let reads = |name| spec.constants.iter().find(|c| c.0 == name).map(|c| c.1 as u32);
        let dense_rows = spec.entry == "matmul_rows" && reads("MOE").unwrap_or(0) == 0;
        let input = bindings.iter().find(|(i, _)| *i == matmul::X).map(|(_, b)| *b);
        let texture = inputs.iter().find(|x| dense_rows && input == Some(&x.source));
        let Some(x) = texture else {
            return self.dispatch_entries(&spec, bindings, Some(weights.binding()), None);
        };
        let row_quads = reads("K").unwrap_or(0) / 4;
        let spec = Spec { inputs_texture: true, ..spec };
        let bindings: Vec<_> = bindings.iter().copied().filter(|(i, _)| *i != matmul::X).collect();
        let mut d = self.dispatch_entries(&spec, &bindings, Some(weights.binding()), Some(&x.view));
        d.inputs = Some(Box::new((x.clone(), row_quads)));
        d
    }

    fn dispatch_entries(&self, spec: &Spec, bindings: &[(u32, &wgpu::Buffer)], weights: Option<wgpu::BindingResource>,
                        inputs: Option<&wgpu::TextureView>) -> Dispatch {
        let pipeline = self.pipeline(spec);
        let mut entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: *i, resource: b.as_entire_binding() })
            .collect();
        entries.extend(weights.map(|resource| wgpu::BindGroupEntry { binding: weights::W4, resource }));
        entries.extend(inputs.map(|v| wgpu::BindGroupEntry { binding: matmul::X_TEX, resource: wgpu::BindingResource::TextureView(v) }));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(spec.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch { pipeline, bind_group, inputs: None }
    }
}

/// Split a large 1-D workgroup count over x and z (each at most 65535).
pub fn split_groups(n: u32) -> (u32, u32) {
    const MAX: u32 = 32768;
    if n <= MAX {
        (n, 1)
    } else {
        (MAX, n.div_ceil(MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each optional input's prelude: the bound form declares its one binding
    /// and the accessor, the absent form the same accessor and no binding.
    #[test]
    fn optional_inputs_have_a_bound_and_an_absent_form() {
        for (prelude, accessor) in [(LINEAR_BIAS, "fn bias("), (LINEAR_NORM, "fn norm_w4("), (LINEAR_EXPERTS, "fn expert_id(")] {
            let (with, without) = (optional(prelude, true), optional(prelude, false));
            assert_eq!(with.matches("@binding(").count(), 1, "{prelude}");
            assert_eq!(without.matches("@binding(").count(), 0, "{prelude}");
            assert_eq!(with.matches(accessor).count(), 1, "{prelude}");
            assert_eq!(without.matches(accessor).count(), 1, "{prelude}");
        }
    }
}
