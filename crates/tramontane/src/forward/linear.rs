//! Linear layers: the matmul kernel's specialization for a weight type, shape
//! and device (`linear_spec`), the grid that follows from it, and a layer's
//! dispatches, one per slab of its weight matrix.

use super::Visit;
use crate::gpu::kernels::{split_groups, Dispatch, Spec};
use crate::gpu::{Family, Gpu, InputTexture};
use crate::parse::DType;
use crate::upload::Matrix;

/// Rows and outputs per workgroup of the tiled matmul (TM, TN in matmul.wgsl).
pub const MM_TILE: u32 = 32;
/// Rows per invocation of `matmul_rows` (CPU drivers' prefill).
pub const MR: u32 = 16;

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

/// A linear-layer kernel (shaders/matmul.wgsl) for `n` outputs of `k` inputs.
/// The matvec is tuned to the row length and the device: on GPUs several
/// invocations share an output (reading four weights, or a whole 32-weight
/// block, at a time) and reduce in workgroup memory (and by subgroup
/// shuffles: [`with_lanes`] adapts the spec to the device's subgroups); on CPU drivers (`cpu`:
/// lavapipe, SwiftShader) each invocation computes whole outputs (up to four,
/// [`cpu_outputs_per_invocation`]), since there a SIMD lane per row beats a
/// barrier-synchronized reduction.
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
        // Two outputs per invocation at most: with MR rows each, more
        // accumulators spill (measured slower on lavapipe).
        s = s.with("NPI", cpu_outputs_per_invocation(n).min(2));
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
        if cpu {
            s = s.with("NPI", cpu_outputs_per_invocation(n));
        }
    }
    s
}

/// `spec` (from [`linear_spec`]) on a device whose subgroups hold at least
/// `lanes` invocations (1: no subgroups). On GPUs the matvec's output's
/// invocations sum by subgroup shuffles (lanes.wgsl), and where a subgroup
/// holds 16 or more, an output gets at most one subgroup's worth, so that
/// sum needs no workgroup barrier (a subgroup per row, as GPU inference
/// kernels commonly do). On CPU drivers, where each invocation owns its
/// outputs, 8 lanes or more share a block's input loads (whole-block types),
/// in the matvec and in prefill's `matmul_rows`: measured on SmolLM2 Q4_1,
/// +17% decode and +80% prefill on lavapipe (8 lanes), but -7% decode on
/// SwiftShader (4 lanes; its shuffles cost more than the loads they save).
pub fn with_lanes(spec: Spec, lanes: u32) -> Spec {
    let rows = constant(&spec, "ROWS").unwrap_or(64);
    if matches!(spec.entry, "matmul_rows" | "matmul_rows_grouped") {
        // Prefill on CPU drivers: the same sharing, row by row.
        return if constant(&spec, "BLOCKS") == Some(1) && lanes >= 8 { spec.lanes(lanes) } else { spec };
    }
    if spec.entry != "matvec" || lanes < 2 {
        return spec;
    }
    if rows >= 64 {
        // CPU drivers: the lanes share the block's input loads.
        return if constant(&spec, "BLOCKS") == Some(1) && lanes >= 8 { spec.lanes(lanes) } else { spec };
    }
    let per_output = 64 / rows;
    let spec = if lanes >= 16 && per_output > lanes { spec.with("ROWS", 64 / lanes) } else { spec };
    spec.lanes(lanes)
}

/// Whether decode applies each RMSNorm inside the matvecs that read its
/// output (matmul.wgsl's `NORM`) instead of in a dispatch of its own: on CPU
/// drivers, where an invocation sees the whole input row and every dispatch
/// costs 40-100 us (lavapipe) however little it computes.
pub fn norm_in_matvec(cpu: bool) -> bool {
    cpu
}

/// A matvec `spec` that applies the RMSNorm (epsilon `eps`, weights bound at
/// 9) to its input, the residual stream, first; `last_row`: its input is the
/// pass's last row (the final norm before the LM head). Only for the CPU
/// drivers' matvec ([`norm_in_matvec`]).
pub fn with_norm(spec: Spec, eps: f32, last_row: bool) -> Spec {
    spec.with("NORM", 1u32).with("NORM_EPS", eps).with("LAST_ROW", last_row as u32)
}

/// Whether decode's qkv matvec also rotates q and k and stores k and v in
/// the KV cache (matmul.wgsl's `matvec_rope`), instead of rope.wgsl's
/// dispatch after it: on CPU drivers (as [`norm_in_matvec`]), where every
/// slab of the qkv matrix `m` holds whole heads of an even `head_dim` (an
/// invocation rotates pairs of outputs of one head), and not with Qwen3's
/// `qk_norm`, which normalizes whole heads before the rotation.
pub fn rope_in_matvec(cpu: bool, m: &Matrix, head_dim: usize, qk_norm: bool) -> bool {
    cpu && !qk_norm && head_dim.is_multiple_of(2) && m.experts == 1 && m.slabs.iter().all(|s| s.rows.is_multiple_of(head_dim))
}

/// A CPU drivers' matvec `spec` turned into `matvec_rope`
/// ([`rope_in_matvec`]); the caller adds rope.wgsl's constants (HD, NH, NKV,
/// CAP, STYLE) and the cache's type. Outputs per invocation are pairs, so
/// at least 2.
pub fn with_rope(spec: Spec) -> Spec {
    let npi = constant(&spec, "NPI").unwrap_or(1).max(2);
    Spec { entry: "matvec_rope", ..spec }.with("NPI", npi)
}

/// Outputs per invocation of the CPU drivers' matvec (`NPI`): 4 (each input
/// load feeds four rows of weights; +13-18% decode on lavapipe for SmolLM2),
/// fewer where that would leave under four workgroups of 64 invocations to
/// spread over the driver's threads.
fn cpu_outputs_per_invocation(n: usize) -> u32 {
    let groups = |npi: usize| n.div_ceil(64 * npi);
    if groups(4) >= 4 {
        4
    } else if groups(2) >= 4 {
        2
    } else {
        1
    }
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
    /// `matmul_rows`: this many outputs (64 per output an invocation
    /// computes) by MR rows.
    Rows(u32),
    /// `matvec`: this many outputs per workgroup, one row per y.
    Matvec(u32),
    /// `matmul_grouped` / `matmul_rows_grouped`: this many outputs per
    /// workgroup, y over the most tiles of `tile` rows over `experts`.
    Grouped { per: u32, tile: u32, experts: u32 },
}

impl Grid {
    fn of(spec: &Spec) -> Grid {
        let npi = constant(spec, "NPI").unwrap_or(1).max(1);
        let grouped = |per| Grid::Grouped {
            per,
            tile: constant(spec, "GROUP_TILE").unwrap_or(MM_TILE),
            experts: constant(spec, "EXPERTS").unwrap_or(1),
        };
        match spec.entry {
            "matmul" => Grid::Tiled,
            "matmul_rows" => Grid::Rows(64 * npi),
            "matmul_grouped" => grouped(MM_TILE),
            "matmul_rows_grouped" => grouped(64 * npi),
            _ => Grid::Matvec(constant(spec, "ROWS").unwrap_or(1).max(1) * npi),
        }
    }

    fn groups(self, n: u32, rows: u32) -> [u32; 3] {
        let (per, y) = match self {
            Grid::Tiled => (MM_TILE, rows.div_ceil(MM_TILE)),
            Grid::Rows(per) => (per, rows.div_ceil(MR)),
            Grid::Matvec(per) => (per, rows),
            Grid::Grouped { per, tile, experts } => (per, moe_max_tiles(rows, experts, tile)),
        };
        let (x, z) = split_groups(n.div_ceil(per));
        [x, y, z]
    }
}

/// A linear layer's dispatches: one per slab of its weight matrix (a single
/// one unless the matrix exceeds the device's binding limit or stacks parts of
/// different types), each computing that slab's range of outputs.
pub(super) struct Linear(Vec<LinearPart>);

/// One slab's dispatch, its outputs and its grid shape.
struct LinearPart {
    dispatch: Dispatch,
    outputs: u32,
    grid: Grid,
}

impl Linear {
    /// `entry` is matmul.wgsl's entry point before [`linear_spec`] adapts it
    /// to the device; `tune` adds the epilogue constants; `binds` are every
    /// binding but the weights (1) and the slab (6).
    pub(super) fn new(g: &Gpu, m: &Matrix, entry: &'static str, tune: impl Fn(Spec) -> Spec,
                      binds: &[(u32, &wgpu::Buffer)]) -> Linear {
        Linear::reading(g, m, entry, tune, binds, &[])
    }

    /// [`Linear::new`] whose `matmul_rows` reads its inputs from whichever of
    /// `inputs` copies its input buffer (see [`Kernels::dispatch_rows`]); the
    /// first slab's dispatch copies them in, for every slab.
    pub(super) fn reading(g: &Gpu, m: &Matrix, entry: &'static str, tune: impl Fn(Spec) -> Spec,
                          binds: &[(u32, &wgpu::Buffer)], inputs: &[InputTexture]) -> Linear {
        let mut copied = false;
        Linear(
            m.slabs
                .iter()
                .map(|s| {
                    let spec = linear_spec(s.dtype, entry, s.rows, m.cols, g.is_cpu());
                    let mut spec = tune(with_lanes(spec, g.subgroup_lanes()));
                    if m.slabs.len() > 1 {
                        spec = spec.with("N_ALL", m.outputs as u32);
                    }
                    if m.experts > 1 {
                        spec = spec.with("EXPERT_STRIDE", m.expert_stride(s) as u32);
                    }
                    let mut b = vec![(6, &s.info)];
                    b.extend_from_slice(binds);
                    let mut dispatch = g.kernels.dispatch_rows(&spec, &s.store, &b, inputs);
                    if copied {
                        dispatch.inputs = None;
                    }
                    copied |= dispatch.inputs.is_some();
                    LinearPart {
                        dispatch,
                        outputs: s.rows as u32,
                        grid: Grid::of(&spec),
                    }
                })
                .collect(),
        )
    }

    /// Every slab's dispatch over `rows` input rows (1 for a decode matvec,
    /// `t` for a prefill matmul, `t * top_k` for experts).
    pub(super) fn visit<'a>(&'a self, label: &'static str, rows: u32, out: Visit<'_, 'a>) {
        for p in &self.0 {
            out(label, &p.dispatch, p.grid.groups(p.outputs, rows));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subgroup sums go where invocations share an output, and adapters with
    /// subgroups of 16 or more give an output at most one subgroup; on CPU
    /// drivers the lanes share whole blocks' input loads.
    #[test]
    fn subgroup_lanes_shape_the_matvec() {
        let rows = |s: &Spec| constant(s, "ROWS");
        let gpu = linear_spec(DType::Q4_0, "matvec", 4096, 4096, false);
        assert_eq!(rows(&gpu), Some(1), "64 invocations per output for long rows");
        let wide = with_lanes(gpu.clone(), 32);
        assert_eq!((rows(&wide), constant(&wide, "LANES"), wide.subgroups), (Some(2), Some(32), true));
        let narrow = with_lanes(gpu.clone(), 8);
        assert_eq!((rows(&narrow), constant(&narrow, "LANES")), (Some(1), Some(8)), "runs of 8, then workgroup memory");
        assert_eq!(with_lanes(gpu.clone(), 1), gpu, "no subgroups: unchanged");
        let cpu = linear_spec(DType::Q4_0, "matvec", 4096, 4096, true);
        let shared = with_lanes(cpu.clone(), 8);
        assert_eq!((rows(&shared), constant(&shared, "LANES")), (Some(64), Some(8)), "CPU drivers: lanes share input loads");
        assert_eq!(with_lanes(cpu.clone(), 4), cpu, "fewer than 8 lanes: loads cost less than shuffles");
        let cpu_f16 = linear_spec(DType::F16, "matvec", 4096, 4096, true);
        assert_eq!(with_lanes(cpu_f16.clone(), 8), cpu_f16, "no whole blocks: nothing to share");
        let tiled = linear_spec(DType::Q4_0, "matmul", 4096, 4096, false);
        assert_eq!(with_lanes(tiled.clone(), 32), tiled);
        for entry in ["matmul", "matmul_grouped"] {
            let rows = linear_spec(DType::Q4_0, entry, 4096, 4096, true);
            assert_eq!(constant(&with_lanes(rows.clone(), 8), "LANES"), Some(8), "CPU drivers' prefill: lanes share input loads");
            assert_eq!(with_lanes(rows.clone(), 4), rows);
            let rows_f16 = linear_spec(DType::F16, entry, 4096, 4096, true);
            assert_eq!(with_lanes(rows_f16.clone(), 8), rows_f16);
        }
    }
}
