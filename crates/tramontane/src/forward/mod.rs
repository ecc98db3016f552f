//! The forward pass: activation buffers, KV cache and every dispatch are created
//! once at load; a pass only writes the small `Step` uniform (and the prompt ids)
//! and records the prepared dispatches into one command buffer.

pub mod rope_table;
mod sizes;
pub use sizes::Sizes;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::kernels::{split_groups, Dispatch, Spec};
use crate::gpu::{Family, Gpu, Step};
use crate::parse::{DType, ModelConfig};
use crate::sample::SamplingParams;
use crate::upload::{Ffn, Matrix, Weights};

/// Rows and outputs per workgroup of the tiled matmul (TM, TN in matmul.wgsl).
pub const MM_TILE: u32 = 32;
/// Rows per invocation of `matmul_rows` (CPU drivers' prefill).
pub const MR: u32 = 8;

/// The grid of a linear-layer dispatch (`spec` from [`linear_spec`]) over `n`
/// outputs and `rows` input rows.
pub fn linear_groups(spec: &Spec, n: u32, rows: u32) -> [u32; 3] {
    Grid::of(spec).groups(n, rows)
}

/// Rows per tile of moe.wgsl's `group` (and so of the grouped matmuls): a
/// `matmul` tile on GPUs, a `matmul_rows` invocation's rows on CPU drivers.
pub fn moe_group_tile(cpu: bool) -> u32 {
    if cpu { MR } else { MM_TILE }
}

/// Most tiles `group` can emit for `rows` (token, slot) rows over `experts`
/// experts in tiles of `tile` rows: each expert's run ends in at most one
/// partial tile.
pub fn moe_max_tiles(rows: u32, experts: u32, tile: u32) -> u32 {
    rows.div_ceil(tile.max(1)) + experts.min(rows)
}

fn constant(spec: &Spec, name: &str) -> Option<u32> {
    spec.constants.iter().find(|c| c.0 == name).map(|c| c.1 as u32)
}

/// How a linear kernel's grid follows from its outputs and rows, decided once
/// per dispatch at load.
#[derive(Clone, Copy)]
enum Grid {
    /// `matmul`: 32x32 tiles.
    Tiled,
    /// `matmul_rows`: 64 outputs by MR rows.
    Rows,
    /// `matvec`: this many outputs per workgroup, one row per y.
    Matvec(u32),
    /// `matmul_grouped` / `matmul_rows_grouped`: this many outputs per
    /// workgroup, y over the most tiles of `tile` rows over `experts`.
    Grouped { per: u32, tile: u32, experts: u32 },
}

impl Grid {
    fn of(spec: &Spec) -> Grid {
        let grouped = |per| Grid::Grouped {
            per,
            tile: constant(spec, "GROUP_TILE").unwrap_or(MM_TILE),
            experts: constant(spec, "EXPERTS").unwrap_or(1),
        };
        match spec.entry {
            "matmul" => Grid::Tiled,
            "matmul_rows" => Grid::Rows,
            "matmul_grouped" => grouped(MM_TILE),
            "matmul_rows_grouped" => grouped(64),
            _ => Grid::Matvec(constant(spec, "ROWS").unwrap_or(1).max(1)),
        }
    }

    fn groups(self, n: u32, rows: u32) -> [u32; 3] {
        let (per, y) = match self {
            Grid::Tiled => (MM_TILE, rows.div_ceil(MM_TILE)),
            Grid::Rows => (64, rows.div_ceil(MR)),
            Grid::Matvec(per) => (per, rows),
            Grid::Grouped { per, tile, experts } => (per, moe_max_tiles(rows, experts, tile)),
        };
        let (x, z) = split_groups(n.div_ceil(per));
        [x, y, z]
    }
}

/// Most top alternatives a step can report with its log-probability.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// The sampler's output: token, its logprob, then (id, logprob) pairs.
const OUT_WORDS: usize = 2 + 2 * MAX_TOP_LOGPROBS as usize;

/// What a sampling pass produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-probability of `token` and the top alternatives, when asked for.
    pub logprob: Option<(f32, Vec<(u32, f32)>)>,
}

/// Keys per attention split in decode, and at most this many splits.
const SPLIT_MIN: u32 = 256;
const MAX_SPLITS: u32 = 16;

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Maximum tokens in context (prompt + generated).
    pub context: usize,
    /// Rows per prefill pass.
    pub chunk: usize,
    /// Keep keys and values in f16 (half the memory and attention traffic;
    /// needs `shader-f16`).
    pub kv_f16: bool,
}

/// Receives each dispatch of a pass: what it computes (for profiles), the
/// prepared pipeline and bind group, and its grid. A visitor rather than a
/// list, so a pass allocates nothing.
type Visit<'v, 'a> = &'v mut dyn FnMut(&'static str, &'a Dispatch, [u32; 3]);

/// Time spent in one kind of kernel during a profiled pass.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub dispatches: usize,
    pub seconds: f64,
}

/// A linear layer's dispatches: one per slab of its weight matrix (a single
/// one unless the matrix exceeds the device's binding limit or stacks parts of
/// different types), each computing that slab's range of outputs.
struct Linear(Vec<LinearPart>);

/// One slab's dispatch, its outputs and its grid shape.
struct LinearPart {
    dispatch: Dispatch,
    outputs: u32,
    grid: Grid,
}

impl Linear {
    /// `tune` adds the epilogue constants; `binds` are every binding but the
    /// weights (binding 1).
    fn new(g: &Gpu, m: &Matrix, entry: &'static str, tune: impl Fn(Spec) -> Spec,
           binds: &[(u32, &wgpu::Buffer)]) -> Linear {
        let k = &g.kernels;
        Linear(
            m.slabs
                .iter()
                .map(|s| {
                    let mut spec = tune(linear_spec(s.dtype, entry, s.rows, m.cols, g.is_cpu()));
                    if m.slabs.len() > 1 {
                        spec = spec.with("N_ALL", m.outputs as u32);
                    }
                    if m.experts > 1 {
                        spec = spec.with("EXPERT_STRIDE", m.expert_stride(s) as u32);
                    }
                    let mut b = vec![(1, &s.buf), (6, &s.info)];
                    b.extend_from_slice(binds);
                    LinearPart {
                        dispatch: k.dispatch(&spec, &b),
                        outputs: s.rows as u32,
                        grid: Grid::of(&spec),
                    }
                })
                .collect(),
        )
    }

    /// Decode-style: every output for `rows` input rows.
    fn matvec<'a>(&'a self, label: &'static str, rows: u32, out: Visit<'_, 'a>) {
        self.visit(label, rows, out);
    }

    /// Prefill over `t` rows.
    fn matmul<'a>(&'a self, label: &'static str, t: u32, out: Visit<'_, 'a>) {
        self.visit(label, t, out);
    }

    fn visit<'a>(&'a self, label: &'static str, rows: u32, out: Visit<'_, 'a>) {
        for p in &self.0 {
            out(label, &p.dispatch, p.grid.groups(p.outputs, rows));
        }
    }
}

struct LayerPlan {
    attn_norm: Dispatch,
    qkv_mv: Linear,
    qkv_mm: Linear,
    rope: Dispatch,
    attend: Dispatch,
    combine: Dispatch,
    o_mv: Linear,
    o_mm: Linear,
    ffn_norm: Dispatch,
    ffn: FfnPlan,
    /// MoE only: this layer's chosen experts and weights for the last pass.
    moe_choice: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// `up_*` are there when gate and up are stored in different types: the gate
/// dispatch writes the gate projection, the up one combines (`GATE_IN_Y`).
enum FfnPlan {
    Dense { gate_up_mv: Linear, gate_up_mm: Linear, up_mv: Option<Linear>, up_mm: Option<Linear>, down_mv: Linear, down_mm: Linear },
    /// Decode runs the experts as matvecs over the t*k (token, slot) rows
    /// (`*_mv`); prefill sorts those rows by expert (`group`) and runs each
    /// expert's rows as tiles of one matmul (`*_mm`, weights read once a tile).
    Moe {
        router: Linear,
        route: Dispatch,
        group: Dispatch,
        gate_up_mv: Linear,
        gate_up_mm: Linear,
        up_mv: Option<Linear>,
        up_mm: Option<Linear>,
        down_mv: Linear,
        down_mm: Linear,
        combine: Dispatch,
    },
}

struct AllLogits {
    buf: wgpu::Buffer,
    norm: Dispatch,
    lm_head: Linear,
}

pub struct Runtime {
    gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    pub weights: Weights,
    pub opts: RuntimeOptions,
    /// Slots of the largest KV cache of any layer.
    pub kv_slots: usize,
    /// Each layer's KV cache slots (a sliding layer's ring is window + chunk).
    pub layer_slots: Vec<usize>,
    step: wgpu::Buffer,
    ids: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    last: wgpu::Buffer,
    logits: wgpu::Buffer,
    state: wgpu::Buffer,
    out: wgpu::Buffer,
    out_rb: wgpu::Buffer,
    logits_rb: wgpu::Buffer,
    /// One per slab of the embedding matrix.
    embed: Vec<Dispatch>,
    layers: Vec<LayerPlan>,
    final_norm: Dispatch,
    lm_head: Linear,
    sample: Dispatch,
    all_logits: Option<AllLogits>,
    /// GPU bytes of activations, KV cache and tables.
    pub scratch_bytes: u64,
}

/// What a pass produces after the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Nothing (a prefill chunk that is not the last).
    None,
    /// Logits of the last row, then a sampled token.
    Sample,
    /// Logits of every row (tests, scoring).
    AllLogits,
}

/// A linear-layer kernel (shaders/matmul.wgsl) for `n` outputs of `k` inputs.
/// The matvec is tuned to the row length and the device: on GPUs several
/// invocations share an output (reading four weights, or a whole 32-weight
/// block, at a time) and reduce in workgroup memory; on CPU drivers (`cpu`:
/// lavapipe, SwiftShader) each invocation computes whole outputs, since there a
/// SIMD lane per row beats a barrier-synchronized reduction.
/// On CPU drivers, prefill uses `matmul_rows` (no workgroup memory or
/// barriers; rows of whole vec4s) instead of the tiled `matmul`, and MoE
/// prefill `matmul_rows_grouped` instead of `matmul_grouped`. The grouped
/// entries also need `GROUP_TILE` ([`moe_group_tile`]) and `EXPERTS`.
pub fn linear_spec(dtype: DType, entry: &'static str, n: usize, k: usize, cpu: bool) -> Spec {
    let rows_ok = cpu && k.is_multiple_of(4);
    let entry = match entry {
        "matmul" if rows_ok => "matmul_rows",
        "matmul_grouped" if rows_ok => "matmul_rows_grouped",
        e => e,
    };
    let mut s = Spec::new(Family::Matmul, entry)
        .with("WTYPE", dtype.shader_code())
        .with("N", n as u32)
        .with("K", k as u32);
    let quad = k.is_multiple_of(4);
    s = s.with("QUAD", quad as u32);
    // 32 weights at a time: every block type (K-quants by 32-weight sub-block).
    let blocks = k.is_multiple_of(32) && dtype.is_quantized();
    let tiled = matches!(entry, "matmul" | "matmul_grouped");
    if blocks && !tiled {
        s = s.with("BLOCKS", 1u32);
    }
    if matches!(entry, "matmul_rows" | "matmul_rows_grouped") {
        s = s.with("MR", MR);
    }
    if entry == "matvec" {
        let per_output = if cpu {
            1
        } else if blocks {
            (k / 32 / 2).clamp(2, 64) // a few blocks per invocation
        } else {
            let steps = if quad { k / 4 } else { k };
            (steps / 8).clamp(4, 64) // ~8 quads per invocation
        };
        let per_output = 1usize << per_output.ilog2(); // a power of two, so 64 / it is exact
        s = s.with("ROWS", (64 / per_output) as u32);
    }
    s
}

impl Runtime {
    pub fn new(gpu: Arc<Gpu>, cfg: ModelConfig, weights: Weights, opts: RuntimeOptions) -> Result<Self> {
        let g = &*gpu;
        let k = &g.kernels;
        let (h, v, hd) = (cfg.hidden, cfg.vocab, cfg.head_dim);
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
        let c = opts.chunk.max(1);
        let inter = cfg.intermediate;
        let slots = cfg.moe.as_ref().map(|m| m.top_k).unwrap_or(1);
        // Sizes checked (again: the loader checked them before downloading).
        let layer_slots = Sizes::plan(&cfg, &opts, g.max_binding())?.layer_slots;
        let kv_slots = layer_slots.iter().copied().max().unwrap_or(opts.context);
        let f = 4u64;
        let scratch = std::cell::Cell::new(0u64);
        let buf = |label: &str, n: usize| {
            scratch.set(scratch.get() + n as u64 * f);
            g.storage(label, n as u64 * f)
        };
        let step = g.uniform("step", std::mem::size_of::<Step>() as u64);
        let ids = buf("ids", c);
        let x = buf("x", c * h);
        let xn = buf("xn", c * h);
        let qkv = buf("qkv", c * qkv_dim);
        let attn = buf("attn", c * cfg.q_dim());
        let part = buf("attn_partials", (c * nh).max(nh * MAX_SPLITS as usize) * (hd + 2));
        let ffn_h = buf("ffn_h", c * slots * inter);
        let last = buf("last", h);
        let logits = buf("logits", v);
        let state = buf("sampler_state", v);
        let out = buf("out", OUT_WORDS);
        let dummy = buf("dummy", 1);
        let table = g.storage_init(
            "rope_table",
            bytemuck::cast_slice(&rope_table::table(&cfg, opts.context)),
        );
        scratch.set(scratch.get() + (opts.context * hd * 4) as u64);
        let (moe_logits, eout) = match &cfg.moe {
            Some(m) => (Some(buf("router_logits", c * m.n_experts)), Some(buf("expert_out", c * slots * h))),
            None => (None, None),
        };
        // MoE prefill: a pass's rows sorted by expert and its tile table, made
        // by each layer's `group` and read by the grouped matmuls right after,
        // so all layers share one pair.
        let group_tile = moe_group_tile(g.is_cpu());
        let moe_groups = cfg.moe.as_ref().map(|m| {
            let rows = (c * m.top_k) as u32;
            let tiles = 1 + moe_max_tiles(rows, m.n_experts as u32, group_tile) as usize;
            (buf("moe_order", rows as usize), buf("moe_tiles", 4 * tiles))
        });
        let mut kv = Vec::new();
        let kv_f16 = opts.kv_f16;
        if kv_f16 && !g.adapter.shader_f16 {
            return Err(Error::Unsupported("an f16 KV cache needs the device's shader-f16 feature".into()));
        }
        for (l, &slots_l) in layer_slots.iter().enumerate() {
            // Sizes in f32 words: an f16 cache takes half.
            let kv_words = if kv_f16 { (slots_l * nkv * hd).div_ceil(2) } else { slots_l * nkv * hd };
            kv.push((buf(&format!("k_cache{l}"), kv_words), buf(&format!("v_cache{l}"), kv_words)));
        }
        let out_rb = g.readback("out_rb", OUT_WORDS as u64 * 4);
        let logits_rb = g.readback("logits_rb", v as u64 * 4);

        let w = &weights;
        let embed = w
            .embed
            .slabs
            .iter()
            .map(|s| {
                let spec = Spec::new(Family::Embed, "main").with("WTYPE", s.dtype.shader_code()).with("H", h as u32);
                k.dispatch(&spec, &[(0, &step), (1, &s.buf), (2, &ids), (3, &x), (4, &s.info)])
            })
            .collect();
        let norm_spec = Spec::new(Family::RmsNorm, "main")
            .with("H", h as u32)
            .with("EPS", cfg.rms_eps)
            .with("LAST_ROW", 0u32);
        // Per layer: its ring's size and its window (layers alike share pipelines).
        let rope_spec = |l: usize| {
            Spec::new(Family::Rope, "main")
                .with("HD", hd as u32)
                .with("NH", nh as u32)
                .with("NKV", nkv as u32)
                .with("CAP", layer_slots[l] as u32)
                .with("STYLE", cfg.rope_interleaved as u32)
                .kv_f16(opts.kv_f16)
        };
        let attn_spec = |entry, l: usize| {
            Spec::new(Family::Attention, entry)
                .with("HD", hd as u32)
                .with("NH", nh as u32)
                .with("NKV", nkv as u32)
                .with("CAP", layer_slots[l] as u32)
                .with("WINDOW", cfg.window(l).unwrap_or(0) as u32)
                .with("SCALE", 1.0 / (hd as f32).sqrt())
                .kv_f16(opts.kv_f16)
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for (l, lw) in w.layers.iter().enumerate() {
            let bias = lw.qkv_bias.as_ref();
            let qkv_tune = |s: Spec| s.with("HAS_BIAS", bias.is_some() as u32);
            let bias_buf = bias.unwrap_or(&dummy);
            let acc = |s: Spec| s.with("ACCUMULATE", 1u32);
            // Optional biases (Llama's attention_bias / mlp_bias) ride in the epilogue.
            let o_bias = lw.o_bias.as_ref();
            let o_tune = |s: Spec| acc(s).with("HAS_BIAS", o_bias.is_some() as u32);
            let o_bias = o_bias.unwrap_or(&dummy);
            let (gu_bias, down_bias) = match &lw.mlp_bias {
                Some((a, b)) => (Some(a), Some(b)),
                None => (None, None),
            };
            let (kc, vc) = &kv[l];
            let mut moe_choice = None;
            let ffn = match &lw.ffn {
                Ffn::Dense { gate_up, up, down } => {
                    // Stacked: one SwiGLU dispatch; split: the gate alone first.
                    let stacked = up.is_none() as u32;
                    let gu = |s: Spec| s.with("SWIGLU", stacked).with("HAS_BIAS", gu_bias.is_some() as u32);
                    let gated = |s: Spec| s.with("GATE_IN_Y", 1u32);
                    let dn = |s: Spec| acc(s).with("HAS_BIAS", down_bias.is_some() as u32);
                    let (gb, db) = (gu_bias.unwrap_or(&dummy), down_bias.unwrap_or(&dummy));
                    FfnPlan::Dense {
                        gate_up_mv: Linear::new(g, gate_up, "matvec", gu, &[(0, &step), (2, &xn), (3, &ffn_h), (4, gb), (5, &dummy)]),
                        gate_up_mm: Linear::new(g, gate_up, "matmul", gu, &[(0, &step), (2, &xn), (3, &ffn_h), (4, gb)]),
                        up_mv: up.as_ref().map(|u| Linear::new(g, u, "matvec", gated, &[(0, &step), (2, &xn), (3, &ffn_h), (4, &dummy), (5, &dummy)])),
                        up_mm: up.as_ref().map(|u| Linear::new(g, u, "matmul", gated, &[(0, &step), (2, &xn), (3, &ffn_h), (4, &dummy)])),
                        down_mv: Linear::new(g, down, "matvec", dn, &[(0, &step), (2, &ffn_h), (3, &x), (4, db), (5, &dummy)]),
                        down_mm: Linear::new(g, down, "matmul", dn, &[(0, &step), (2, &ffn_h), (3, &x), (4, db)]),
                    }
                }
                Ffn::Moe { router, gate_up, up, down } => {
                    let m = cfg.moe.as_ref().ok_or_else(|| Error::Internal("MoE weights without MoE config".into()))?;
                    let (rl, eo, (order, tiles)) = match (&moe_logits, &eout, &moe_groups) {
                        (Some(a), Some(b), Some(c)) => (a, b, c),
                        _ => return Err(Error::Internal("MoE buffers missing".into())),
                    };
                    let ids_l = buf(&format!("moe_ids{l}"), c * m.top_k);
                    let wts_l = buf(&format!("moe_weights{l}"), c * m.top_k);
                    let moe_spec = |e| {
                        Spec::new(Family::Moe, e)
                            .with("E", m.n_experts as u32)
                            .with("TOPK", m.top_k as u32)
                            .with("NORM_TOPK", m.norm_topk as u32)
                            .with("H", h as u32)
                    };
                    let expert = |s: Spec| s.with("SLOTS", m.top_k as u32).with("MOE", 1u32);
                    // The grouped entries take each tile's expert from the
                    // table, not EXPERT_IDS (MOE stays 0 there).
                    let grouped = |s: Spec| {
                        s.with("SLOTS", m.top_k as u32).with("GROUP_TILE", group_tile).with("EXPERTS", m.n_experts as u32)
                    };
                    let gu = |s: Spec| s.with("SWIGLU", up.is_none() as u32);
                    let gated = |s: Spec| s.with("GATE_IN_Y", 1u32);
                    let per_slot = |s: Spec| s.with("X_PER_SLOT", 1u32);
                    let mv_in = [(0, &step), (2, &xn), (3, &ffn_h), (4, &dummy), (5, &ids_l)];
                    let mm_in = [(0, &step), (2, &xn), (3, &ffn_h), (4, &dummy), (7, order), (8, tiles)];
                    let mv_down = [(0, &step), (2, &ffn_h), (3, eo), (4, &dummy), (5, &ids_l)];
                    let mm_down = [(0, &step), (2, &ffn_h), (3, eo), (4, &dummy), (7, order), (8, tiles)];
                    let mm = "matmul_grouped";
                    let plan = FfnPlan::Moe {
                        router: Linear::new(g, router, "matvec", |s| s, &[(0, &step), (2, &xn), (3, rl), (4, &dummy), (5, &dummy)]),
                        route: k.dispatch(&moe_spec("route"), &[(0, &step), (1, rl), (2, &ids_l), (3, &wts_l)]),
                        group: k.dispatch(
                            &moe_spec("group").with("GROUP_TILE", group_tile),
                            &[(0, &step), (2, &ids_l), (6, order), (7, tiles)],
                        ),
                        gate_up_mv: Linear::new(g, gate_up, "matvec", |s| gu(expert(s)), &mv_in),
                        gate_up_mm: Linear::new(g, gate_up, mm, |s| gu(grouped(s)), &mm_in),
                        up_mv: up.as_ref().map(|u| Linear::new(g, u, "matvec", |s| gated(expert(s)), &mv_in)),
                        up_mm: up.as_ref().map(|u| Linear::new(g, u, mm, |s| gated(grouped(s)), &mm_in)),
                        down_mv: Linear::new(g, down, "matvec", |s| per_slot(expert(s)), &mv_down),
                        down_mm: Linear::new(g, down, mm, |s| per_slot(grouped(s)), &mm_down),
                        combine: k.dispatch(&moe_spec("combine"), &[(0, &step), (3, &wts_l), (4, eo), (5, &x)]),
                    };
                    moe_choice = Some((ids_l, wts_l));
                    plan
                }
            };
            layers.push(LayerPlan {
                attn_norm: k.dispatch(&norm_spec, &[(0, &step), (1, &x), (2, &lw.attn_norm), (3, &xn)]),
                qkv_mv: Linear::new(g, &lw.qkv, "matvec", qkv_tune, &[(0, &step), (2, &xn), (3, &qkv), (4, bias_buf), (5, &dummy)]),
                qkv_mm: Linear::new(g, &lw.qkv, "matmul", qkv_tune, &[(0, &step), (2, &xn), (3, &qkv), (4, bias_buf)]),
                rope: match &lw.qk_norm {
                    // Qwen3: each q and k head RMS-normalized in the same kernel, before the rotation.
                    Some(nw) => k.dispatch(
                        &Spec { entry: "qk_norm", ..rope_spec(l) }.with("EPS", cfg.rms_eps),
                        &[(0, &step), (1, &qkv), (2, &table), (3, kc), (4, vc), (5, nw)],
                    ),
                    None => k.dispatch(&rope_spec(l), &[(0, &step), (1, &qkv), (2, &table), (3, kc), (4, vc)]),
                },
                attend: k.dispatch(&attn_spec("attend", l), &[(0, &step), (1, &qkv), (2, kc), (3, vc), (4, &part)]),
                combine: k.dispatch(&attn_spec("combine", l), &[(0, &step), (4, &part), (5, &attn)]),
                o_mv: Linear::new(g, &lw.o, "matvec", o_tune, &[(0, &step), (2, &attn), (3, &x), (4, o_bias), (5, &dummy)]),
                o_mm: Linear::new(g, &lw.o, "matmul", o_tune, &[(0, &step), (2, &attn), (3, &x), (4, o_bias)]),
                ffn_norm: k.dispatch(&norm_spec, &[(0, &step), (1, &x), (2, &lw.ffn_norm), (3, &xn)]),
                ffn,
                moe_choice,
            });
        }
        let lm = w.lm_head();
        let final_norm = k.dispatch(
            &norm_spec.clone().with("LAST_ROW", 1u32),
            &[(0, &step), (1, &x), (2, &w.norm), (3, &last)],
        );
        let lm_head = Linear::new(g, lm, "matvec", |s| s, &[(0, &step), (2, &last), (3, &logits), (4, &dummy), (5, &dummy)]);
        let sample = k.dispatch(
            &Spec::new(Family::Sample, "sample").with("V", v as u32),
            &[(0, &step), (1, &logits), (2, &state), (3, &ids), (4, &out)],
        );
        gpu.check()?;
        Ok(Runtime {
            gpu: gpu.clone(),
            cfg,
            weights,
            opts,
            kv_slots,
            layer_slots,
            step,
            ids,
            x,
            xn,
            last,
            logits,
            state,
            out,
            out_rb,
            logits_rb,
            embed,
            layers,
            final_norm,
            lm_head,
            sample,
            all_logits: None,
            scratch_bytes: scratch.get(),
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn ensure_all_logits(&mut self) -> &AllLogits {
        if self.all_logits.is_none() {
            let g = &*self.gpu;
            let (h, v) = (self.cfg.hidden, self.cfg.vocab);
            let buf = g.storage("logits_all", (self.opts.chunk * v * 4) as u64);
            let norm = g.kernels.dispatch(
                &Spec::new(Family::RmsNorm, "main")
                    .with("H", h as u32)
                    .with("EPS", self.cfg.rms_eps)
                    .with("LAST_ROW", 0u32),
                &[(0, &self.step), (1, &self.x), (2, &self.weights.norm), (3, &self.xn)],
            );
            let lm = self.weights.lm_head();
            let lm_head = Linear::new(g, lm, "matmul", |s| s, &[(0, &self.step), (2, &self.xn), (3, &buf), (4, &self.last)]);
            self.all_logits = Some(AllLogits { buf, norm, lm_head });
        }
        // Just set above when absent.
        self.all_logits.as_ref().expect("all_logits initialized")
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
        self.gpu.queue.write_buffer(&self.state, 0, bytemuck::cast_slice(&st));
    }

    /// Run one pass over `ids` (at most `chunk` tokens) at absolute position
    /// `start`. With `ids` empty, the input is the token the sampler wrote last.
    /// Returns the sampled token for [`Output::Sample`].
    /// `logprobs`: 0 = none, else 1 + how many top alternatives to report.
    #[allow(clippy::too_many_arguments)]
    pub async fn pass(&mut self, ids: &[u32], n_tokens: usize, start: usize, output: Output,
                      sampling: &SamplingParams, sample_index: u32, capture_logits: bool, logprobs: u32) -> Result<Option<Sampled>> {
        let logprobs = logprobs.min(MAX_TOP_LOGPROBS + 1);
        let t = n_tokens as u32;
        if t == 0 || n_tokens > self.opts.chunk {
            return Err(Error::InvalidRequest(format!("pass of {n_tokens} tokens (chunk {})", self.opts.chunk)));
        }
        if start + n_tokens > self.opts.context {
            return Err(Error::ContextOverflow { tokens: start + n_tokens, context: self.opts.context });
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            return Err(Error::InvalidRequest(format!("token id {bad} is outside the vocabulary of {}", self.cfg.vocab)));
        }
        let g = self.gpu.clone();
        if !ids.is_empty() {
            g.queue.write_buffer(&self.ids, 0, bytemuck::cast_slice(ids));
        }
        let last_pos = (start + n_tokens - 1) as u32;
        // Keys the most-seeing layer attends to: splits cover them; a sliding
        // layer's extra splits are empty (the combine step weighs them 0).
        let keys = if self.cfg.layer_windows.iter().all(Option::is_some) {
            (last_pos + 1).min(self.cfg.sliding_window.unwrap_or(usize::MAX) as u32)
        } else {
            last_pos + 1
        };
        let (n_splits, split_len) = if t == 1 {
            let len = SPLIT_MIN.max(keys.div_ceil(MAX_SPLITS));
            (keys.div_ceil(len), len)
        } else {
            (1, 1 << 30)
        };
        let s = sampling;
        let u = Step {
            n_tokens: t,
            start_pos: start as u32,
            n_splits,
            split_len,
            temperature: s.temperature.max(1e-6),
            top_k: s.top_k,
            top_p: if s.top_p > 0.0 && s.top_p < 1.0 { s.top_p } else { 1.0 },
            repetition_penalty: if s.repetition_penalty > 0.0 { s.repetition_penalty } else { 1.0 },
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
            seed: (s.seed ^ (s.seed >> 32)) as u32,
            sample_index,
            greedy: s.is_greedy() as u32,
            logprobs,
            _pad: [0; 2],
        };
        g.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&u));
        if output == Output::AllLogits {
            self.ensure_all_logits();
        }
        let v = self.cfg.vocab as u32;
        let mut enc = g.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        {
            let mut p = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
            self.steps(t, n_splits, output, &mut |_, d, groups| d.record(&mut p, groups));
        }
        if output == Output::Sample {
            if capture_logits {
                enc.copy_buffer_to_buffer(&self.logits, 0, &self.logits_rb, 0, v as u64 * 4);
            }
            {
                let mut p = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sample"), timestamp_writes: None });
                self.sample.record(&mut p, [1, 1, 1]);
            }
            enc.copy_buffer_to_buffer(&self.out, 0, &self.out_rb, 0, self.out_bytes(logprobs));
        }
        g.queue.submit([enc.finish()]);
        if output != Output::Sample {
            #[cfg(not(target_arch = "wasm32"))]
            let _ = g.device.poll(wgpu::PollType::Poll);
            g.check()?;
            return Ok(None);
        }
        let bytes = g.read_mapped(&self.out_rb, self.out_bytes(logprobs)).await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let token = words[0];
        if token as usize >= self.cfg.vocab {
            return Err(Error::Internal(format!("sampler returned token {token} outside the vocabulary")));
        }
        let logprob = (logprobs > 0).then(|| {
            let top = (0..logprobs as usize - 1)
                .map(|n| (words[2 + 2 * n], f32::from_bits(words[3 + 2 * n])))
                .filter(|(id, _)| (*id as usize) < self.cfg.vocab)
                .collect();
            (f32::from_bits(words[1]), top)
        });
        Ok(Some(Sampled { token, logprob }))
    }

    /// Every dispatch of a pass over `t` rows, in order.
    fn steps<'a>(&'a self, t: u32, n_splits: u32, output: Output, s: Visit<'_, 'a>) {
        let cfg = &self.cfg;
        let (h, nh) = (cfg.hidden as u32, cfg.n_heads as u32);
        let rope_items = ((cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim / 2 + cfg.kv_dim()) as u32;
        // `qk_norm` runs a workgroup per head (q, k and v) of a row; `main` an
        // invocation per rotated pair or stored v element.
        let rope_x = if cfg.qk_norm { (cfg.n_heads + 2 * cfg.n_kv_heads) as u32 } else { rope_items.div_ceil(64) };
        for e in &self.embed {
            s("embed", e, [h.div_ceil(64), t, 1]);
        }
        for l in &self.layers {
            s("rmsnorm", &l.attn_norm, [t, 1, 1]);
            if t == 1 {
                l.qkv_mv.matvec("qkv matvec", 1, s);
            } else {
                l.qkv_mm.matmul("qkv matmul", t, s);
            }
            s("rope + kv store", &l.rope, [rope_x, t, 1]);
            s("attention", &l.attend, [nh, t, n_splits]);
            s("attention combine", &l.combine, [nh, t, 1]);
            if t == 1 {
                l.o_mv.matvec("o matvec", 1, s);
            } else {
                l.o_mm.matmul("o matmul", t, s);
            }
            s("rmsnorm", &l.ffn_norm, [t, 1, 1]);
            match &l.ffn {
                FfnPlan::Dense { gate_up_mv, gate_up_mm, up_mv, up_mm, down_mv, down_mm } => {
                    if t == 1 {
                        gate_up_mv.matvec("gate/up + swiglu matvec", 1, s);
                        if let Some(u) = up_mv {
                            u.matvec("up (own type) + swiglu matvec", 1, s);
                        }
                        down_mv.matvec("down matvec", 1, s);
                    } else {
                        gate_up_mm.matmul("gate/up + swiglu matmul", t, s);
                        if let Some(u) = up_mm {
                            u.matmul("up (own type) + swiglu matmul", t, s);
                        }
                        down_mm.matmul("down matmul", t, s);
                    }
                }
                FfnPlan::Moe { router, route, group, gate_up_mv, gate_up_mm, up_mv, up_mm, down_mv, down_mm, combine } => {
                    let k = cfg.moe.as_ref().map(|m| m.top_k as u32).unwrap_or(1);
                    router.matvec("moe router", t, s);
                    s("moe top-k", route, [t.div_ceil(64), 1, 1]);
                    if t == 1 {
                        gate_up_mv.matvec("expert gate/up + swiglu matvec", k, s);
                        if let Some(u) = up_mv {
                            u.matvec("expert up (own type) + swiglu matvec", k, s);
                        }
                        down_mv.matvec("expert down matvec", k, s);
                    } else {
                        s("moe group by expert", group, [1, 1, 1]);
                        gate_up_mm.matmul("expert gate/up + swiglu grouped", t * k, s);
                        if let Some(u) = up_mm {
                            u.matmul("expert up (own type) + swiglu grouped", t * k, s);
                        }
                        down_mm.matmul("expert down grouped", t * k, s);
                    }
                    s("moe combine", combine, [h.div_ceil(64), t, 1]);
                }
            }
        }
        match output {
            Output::None => {}
            Output::Sample => {
                s("rmsnorm", &self.final_norm, [1, 1, 1]);
                self.lm_head.matvec("lm head matvec", 1, s);
            }
            Output::AllLogits => {
                if let Some(a) = &self.all_logits {
                    s("rmsnorm", &a.norm, [t, 1, 1]);
                    a.lm_head.matmul("lm head matmul", t, s);
                }
            }
        }
    }

    /// Time each kind of kernel in one pass over `n_tokens` (decode when 1)
    /// at position `start`, by submitting every dispatch on its own and
    /// waiting for it. Slower than a real pass (no overlap, a submit per
    /// dispatch), but on CPU drivers it shows where the time goes. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(&mut self, n_tokens: usize, start: usize) -> Result<Vec<KernelTime>> {
        let t = n_tokens.clamp(1, self.opts.chunk) as u32;
        if start + t as usize > self.opts.context {
            return Err(Error::ContextOverflow { tokens: start + t as usize, context: self.opts.context });
        }
        let keys = start as u32 + t;
        let (n_splits, split_len) = if t == 1 {
            let len = SPLIT_MIN.max(keys.div_ceil(MAX_SPLITS));
            (keys.div_ceil(len), len)
        } else {
            (1, 1 << 30)
        };
        let u = Step { n_tokens: t, start_pos: start as u32, n_splits, split_len, temperature: 1.0, top_p: 1.0,
                       repetition_penalty: 1.0, greedy: 1, ..Default::default() };
        let g = self.gpu.clone();
        g.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&u));
        g.queue.write_buffer(&self.ids, 0, bytemuck::cast_slice(&vec![0u32; t as usize]));
        let _ = g.device.poll(wgpu::PollType::wait_indefinitely());
        let mut times: Vec<KernelTime> = Vec::new();
        let mut plan: Vec<(&'static str, &Dispatch, [u32; 3])> = Vec::new();
        self.steps(t, n_splits, Output::Sample, &mut |label, d, groups| plan.push((label, d, groups)));
        for (label, d, groups) in plan {
            let t0 = web_time::Instant::now();
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut p = enc.begin_compute_pass(&Default::default());
                d.record(&mut p, groups);
            }
            g.queue.submit([enc.finish()]);
            g.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("profiling: {e}")))?;
            let dt = t0.elapsed().as_secs_f64();
            match times.iter_mut().find(|k| k.kernel == label) {
                Some(k) => {
                    k.dispatches += 1;
                    k.seconds += dt;
                }
                None => times.push(KernelTime { kernel: label, dispatches: 1, seconds: dt }),
            }
        }
        g.check()?;
        Ok(times)
    }

    fn out_bytes(&self, logprobs: u32) -> u64 {
        if logprobs == 0 {
            8
        } else {
            (2 + 2 * (logprobs as u64 - 1)) * 4
        }
    }

    /// Logits captured by the last `pass(.., capture_logits = true)`.
    pub async fn captured_logits(&self) -> Result<Vec<f32>> {
        let bytes = self.gpu.read_mapped(&self.logits_rb, self.cfg.vocab as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Logits of every row of the last [`Output::AllLogits`] pass.
    pub async fn read_all_logits(&self, rows: usize) -> Result<Vec<f32>> {
        let a = self.all_logits.as_ref().ok_or_else(|| Error::InvalidRequest("no all-logits pass ran".into()))?;
        self.gpu.read_f32(&a.buf, rows * self.cfg.vocab).await
    }

    /// Experts chosen (and their weights) at each row of the last pass, per layer.
    pub async fn router_choices(&self, rows: usize) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        let k = self.cfg.moe.as_ref().map(|m| m.top_k).unwrap_or(0);
        let mut out = Vec::new();
        for l in &self.layers {
            if let Some((ids, w)) = &l.moe_choice {
                out.push((self.gpu.read_u32(ids, rows * k).await?, self.gpu.read_f32(w, rows * k).await?));
            }
        }
        Ok(out)
    }

    /// Bytes of hidden state rows, for tests of the residual stream.
    pub fn hidden_buffers(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.x, &self.xn)
    }
}
