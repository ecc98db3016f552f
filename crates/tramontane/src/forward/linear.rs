//! Linear layers: the matmul kernel's specialization for a weight type, shape
//! and device (`linear_spec`), the grid that follows from it, and a layer's
//! dispatches, one per slab of its weight matrix.

use super::Visit;
use crate::gpu::bindings::matmul;
use crate::gpu::kernels::{split_groups, Dispatch, Spec};
use crate::gpu::profile::{DeviceProfile, MatmulEntry, MatvecShape, MM_TILE, MR};
use crate::gpu::{Gpu, InputTexture};
use crate::parse::DType;
use crate::upload::Matrix;

/// The grid of a linear-layer dispatch (`spec` from [`linear_spec`]) over `n`
/// outputs and `rows` input rows.
pub fn linear_groups(spec: &Spec, n: u32, rows: u32) -> [u32; 3] {
    Grid::of(spec).groups(n, rows)
}

/// Outputs one workgroup of `spec` computes: along x of [`linear_groups`],
/// workgroup i computes outputs from i times this.
pub fn linear_outputs_per_group(spec: &Spec) -> u32 {
    match Grid::of(spec) {
        Grid::Tiled => MM_TILE,
        Grid::Rows(per) | Grid::Matvec(per) | Grid::Grouped { per, .. } => per,
    }
}

/// A linear layer's bindings `binds` and, each only where it has one, its
/// bias (`matmul::B`, with the spec's `HAS_BIAS`), its RMSNorm's weights
/// (`NORM_W`, with `NORM`) and its rows' expert ids (`EXPERT_IDS`, with
/// `MOE`): the kernel's module declares exactly those (gpu/kernels.rs
/// `Optional`), so nothing is bound in place of an absent one.
pub fn linear_binds<'a>(binds: &[(u32, &'a wgpu::Buffer)], bias: Option<&'a wgpu::Buffer>, norm: Option<&'a wgpu::Buffer>,
                        experts: Option<&'a wgpu::Buffer>) -> Vec<(u32, &'a wgpu::Buffer)> {
    let optional = [(matmul::B, bias), (matmul::NORM_W, norm), (matmul::EXPERT_IDS, experts)];
    binds.iter().copied().chain(optional.into_iter().filter_map(|(i, b)| b.map(|b| (i, b)))).collect()
}

/// A linear layer that adds into the residual stream (the o- and
/// down-projections), with its optional bias.
pub fn residual(spec: Spec, bias: bool) -> Spec {
    spec.with("ACCUMULATE", 1u32).with("HAS_BIAS", bias as u32)
}

/// Most tiles `group` can emit for `rows` (token, slot) rows over `experts`
/// experts in tiles of `tile` rows: each expert's run ends in at most one
/// partial tile.
pub fn moe_max_tiles(rows: u32, experts: u32, tile: u32) -> u32 {
    rows.div_ceil(tile.max(1)) + experts.min(rows)
}

/// A linear-layer kernel (shaders/matvec.wgsl, matmul_tiled.wgsl, matmul_rows.wgsl) for `n` outputs of `k` inputs:
/// `wanted` is `Matvec` (decode), `Matmul` (prefill) or `MatmulGrouped`
/// (prefill over experts), shaped as the device `p` runs it. The matvec is
/// tuned to the row length: with [`MatvecShape::SharedOutputs`] several
/// invocations share an output (reading four weights, or a whole 32-weight
/// block, at a time) and reduce in workgroup memory and by subgroup
/// shuffles; with [`MatvecShape::WholeOutputs`] each invocation computes up
/// to four whole outputs ([`cpu_outputs_per_invocation`]), since on CPU
/// drivers a SIMD lane per row beats a barrier-synchronized reduction. The
/// grouped entries also need `GROUP_TILE` (the profile's `moe_tile`) and
/// `EXPERTS`.
pub fn linear_spec(dtype: DType, wanted: MatmulEntry, n: usize, k: usize, p: &DeviceProfile) -> Spec {
    let entry = p.linear_entry(wanted, k);
    let mut s = Spec::new(entry.family(), entry.name())
        .with("WTYPE", dtype.shader_code())
        .with("N", n as u32)
        .with("K", k as u32);
    let quad = k.is_multiple_of(4);
    s = s.with("QUAD", quad as u32);
    // 32 weights at a time: every block type (K-quants by 32-weight sub-block).
    let blocks = k.is_multiple_of(32) && dtype.is_quantized();
    let tiled = matches!(entry, MatmulEntry::Matmul | MatmulEntry::MatmulGrouped);
    if blocks && !tiled {
        s = s.with("BLOCKS", 1u32);
    }
    if entry.is_rows() {
        // Two outputs per invocation at most: with MR rows each, more
        // accumulators spill (measured slower on lavapipe).
        s = s.with("NPI", cpu_outputs_per_invocation(n).min(2));
    }
    let whole = p.decode_matvec == MatvecShape::WholeOutputs;
    if entry.is_matvec() {
        let per_output = if whole {
            1
        } else if blocks {
            (k / 32 / 2).clamp(2, 64) // a few blocks per invocation
        } else {
            let steps = if quad { k / 4 } else { k };
            (steps / 8).clamp(4, 64) // ~8 quads per invocation
        };
        let per_output = 1usize << per_output.ilog2(); // a power of two, so 64 / it is exact
        s = s.with("ROWS", (64 / per_output) as u32);
        if whole {
            s = s.with("NPI", cpu_outputs_per_invocation(n));
        }
    }
    with_lanes(s, entry, whole, p.lanes)
}

/// `spec` on a device whose subgroups hold at least `lanes` invocations (1:
/// no subgroups). Where invocations share an output, they sum by subgroup
/// shuffles (lanes.wgsl), and where a subgroup holds 16 or more, an output
/// gets at most one subgroup's worth, so that sum needs no workgroup barrier
/// (a subgroup per row, as GPU inference kernels commonly do). Where each
/// invocation owns whole outputs (`whole`, and `matmul_rows`), 8 lanes or
/// more share a block's input loads (whole-block types): measured on SmolLM2
/// Q4_1, +17% decode and +80% prefill on lavapipe (8 lanes), but -7% decode
/// on SwiftShader (4 lanes; its shuffles cost more than the loads they save).
fn with_lanes(spec: Spec, entry: MatmulEntry, whole: bool, lanes: u32) -> Spec {
    let share_loads = |spec: Spec| if constant(&spec, "BLOCKS") == Some(1) && lanes >= 8 { spec.lanes(lanes) } else { spec };
    if entry.is_rows() || (entry.is_matvec() && whole) {
        return share_loads(spec);
    }
    if !entry.is_matvec() || lanes < 2 {
        return spec;
    }
    let per_output = 64 / constant(&spec, "ROWS").unwrap_or(64).max(1);
    let spec = if lanes >= 16 && per_output > lanes { spec.with("ROWS", 64 / lanes) } else { spec };
    spec.lanes(lanes)
}

/// A matvec `spec` that applies the RMSNorm (epsilon `eps`, weights bound at
/// 9) to its input, the residual stream, first; `last_row`: its input is the
/// pass's last row (the final norm before the LM head). Only for the
/// whole-output matvec (the profile's `norm_in_matvec`).
pub fn with_norm(spec: Spec, eps: f32, last_row: bool) -> Spec {
    spec.with("NORM", 1u32).with("NORM_EPS", eps).with("LAST_ROW", last_row as u32)
}

/// A whole-output matvec `spec` turned into `matvec_rope`
/// ([`DeviceProfile::rope_in_matvec_for`]); the caller adds rope.wgsl's
/// constants (HD, NH, NKV, CAP, STYLE) and the cache's type. Outputs per
/// invocation are pairs, so at least 2.
pub fn with_rope(spec: Spec) -> Spec {
    let npi = constant(&spec, "NPI").unwrap_or(1).max(2);
    Spec { entry: MatmulEntry::MatvecRope.name(), family: MatmulEntry::MatvecRope.family(), ..spec }.with("NPI", npi)
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
        match MatmulEntry::of(spec.entry) {
            Some(MatmulEntry::Matmul) => Grid::Tiled,
            Some(MatmulEntry::MatmulRows) => Grid::Rows(64 * npi),
            Some(MatmulEntry::MatmulGrouped) => grouped(MM_TILE),
            Some(MatmulEntry::MatmulRowsGrouped) => grouped(64 * npi),
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
    /// `entry` is the linear-layer entry point before the profile `p` adapts
    /// it to the device ([`linear_spec`]); `tune` adds the epilogue
    /// constants; `binds` are every binding but the weights and the slab.
    pub(super) fn new(g: &Gpu, p: &DeviceProfile, m: &Matrix, entry: MatmulEntry, tune: impl Fn(Spec) -> Spec,
                      binds: &[(u32, &wgpu::Buffer)]) -> Linear {
        Linear::reading(g, p, m, entry, tune, binds, &[])
    }

    /// [`Linear::new`] whose `matmul_rows` reads its inputs from whichever of
    /// `inputs` copies its input buffer (see [`Kernels::dispatch_rows`]); the
    /// first slab's dispatch copies them in, for every slab.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reading(g: &Gpu, p: &DeviceProfile, m: &Matrix, entry: MatmulEntry, tune: impl Fn(Spec) -> Spec,
                          binds: &[(u32, &wgpu::Buffer)], inputs: &[InputTexture]) -> Linear {
        let mut copied = false;
        Linear(
            m.slabs
                .iter()
                .map(|s| {
                    let mut spec = tune(linear_spec(s.dtype, entry, s.rows, m.cols, p));
                    if m.slabs.len() > 1 {
                        spec = spec.with("N_ALL", m.outputs as u32);
                    }
                    if m.experts > 1 {
                        spec = spec.with("EXPERT_STRIDE", m.expert_stride(s) as u32);
                    }
                    let mut b = vec![(matmul::SLAB, &s.info)];
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
    /// subgroups of 16 or more give an output at most one subgroup; where
    /// invocations own whole outputs the lanes share whole blocks' input loads.
    #[test]
    fn subgroup_lanes_shape_the_matvec() {
        use MatmulEntry::{Matmul, MatmulGrouped, Matvec};
        let rows = |s: &Spec| constant(s, "ROWS");
        let spec = |dtype, entry, cpu, lanes| linear_spec(dtype, entry, 4096, 4096, &DeviceProfile::shaped(cpu, lanes));
        let gpu = spec(DType::Q4_0, Matvec, false, 1);
        assert_eq!(rows(&gpu), Some(1), "64 invocations per output for long rows");
        let wide = spec(DType::Q4_0, Matvec, false, 32);
        assert_eq!((rows(&wide), constant(&wide, "LANES"), wide.subgroups), (Some(2), Some(32), true));
        let narrow = spec(DType::Q4_0, Matvec, false, 8);
        assert_eq!((rows(&narrow), constant(&narrow, "LANES")), (Some(1), Some(8)), "runs of 8, then workgroup memory");
        assert!(!gpu.subgroups && constant(&gpu, "LANES").is_none(), "no subgroups: no lanes");
        let cpu = spec(DType::Q4_0, Matvec, true, 1);
        let shared = spec(DType::Q4_0, Matvec, true, 8);
        assert_eq!((rows(&shared), constant(&shared, "LANES")), (Some(64), Some(8)), "CPU drivers: lanes share input loads");
        assert_eq!(spec(DType::Q4_0, Matvec, true, 4), cpu, "fewer than 8 lanes: loads cost less than shuffles");
        assert_eq!(spec(DType::F16, Matvec, true, 8), spec(DType::F16, Matvec, true, 1), "no whole blocks: nothing to share");
        assert_eq!(spec(DType::Q4_0, Matmul, false, 32), spec(DType::Q4_0, Matmul, false, 1), "tiles take no lanes");
        for entry in [Matmul, MatmulGrouped] {
            assert_eq!(constant(&spec(DType::Q4_0, entry, true, 8), "LANES"), Some(8), "CPU drivers' prefill: lanes share input loads");
            assert_eq!(spec(DType::Q4_0, entry, true, 4), spec(DType::Q4_0, entry, true, 1));
            assert_eq!(spec(DType::F16, entry, true, 8), spec(DType::F16, entry, true, 1));
        }
    }
}
