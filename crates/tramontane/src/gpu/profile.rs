//! The device profile: every choice of kernel shape for one load, made once
//! from what the adapter is (a GPU or a CPU rasterizer, its subgroups, where
//! its loads are fastest) and the `kernels` option. The size plan, the upload
//! and the dispatch plan read it and nothing else, so what a device gets can
//! be read here (and in `info` / `bench --json`, which print it).
//!
//! Two families of shapes exist because the two kinds of device reward
//! opposite things: a GPU hides memory latency with many invocations sharing
//! work through workgroup memory and barriers; a CPU rasterizer (lavapipe,
//! SwiftShader) runs an invocation per SIMD lane, where a barrier or a
//! dispatch costs tens of microseconds and a lane that owns whole outputs
//! wins. Each field says which shape one part of the pass takes.

use serde::Serialize;

use crate::upload::Matrix;

/// Rows and outputs per workgroup of the tiled matmul (TM, TN in matmul_tiled.wgsl).
pub const MM_TILE: u32 = 32;
/// Rows per invocation of `matmul_rows` (CPU drivers' prefill); the WGSL
/// gets it as a host constant (gpu/kernels.rs).
pub const MR: u32 = 16;

/// Which family of shapes: what the `kernels` option (`auto` | `gpu` | `cpu`)
/// resolves to on this adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shapes {
    Gpu,
    Cpu,
}

/// Decode's matrix-vector product (matvec.wgsl `matvec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatvecShape {
    /// Several invocations share an output and sum in workgroup memory (and
    /// by subgroup shuffles where there are lanes).
    SharedOutputs,
    /// Each invocation computes whole outputs (up to four, `NPI`).
    WholeOutputs,
}

/// Prefill's matrix-matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillShape {
    /// `matmul` / `matmul_grouped`: 32x32 tiles through workgroup memory.
    Tiles,
    /// `matmul_rows` / `matmul_rows_grouped`: MR rows of whole vec4s per
    /// invocation, no workgroup memory or barriers (rows of a multiple of 4
    /// inputs; others keep the tiles).
    Rows,
}

/// Attention (attention.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionShape {
    /// `attend` over 64-key tiles, split over the context and combined.
    Tiled,
    /// Decode `attend_scored` (each invocation loads only its keys, then its
    /// output dims of every value), prefill `attend_rows` (a workgroup's 8
    /// query rows share K and V loads): where the head dim is a multiple of
    /// 4 and at most 256; other head dims keep `Tiled`.
    BarrierFree,
}

/// Where a kind of data is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    Buffer,
    /// 2-D `rgba32uint` textures, which lavapipe loads without a branch per
    /// SIMD lane (weights: upload/interleave.rs; prefill inputs: copied
    /// before each `matmul_rows`).
    Texture,
}

/// The linear-layer entry points (matvec.wgsl, matmul_tiled.wgsl, matmul_rows.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulEntry {
    Matvec,
    /// `Matvec` that also rotates q and k and stores k and v in the cache.
    MatvecRope,
    Matmul,
    MatmulRows,
    /// Prefill over experts: each tile's rows sorted to one expert.
    MatmulGrouped,
    MatmulRowsGrouped,
}

impl MatmulEntry {
    pub const ALL: [MatmulEntry; 6] = [
        MatmulEntry::Matvec,
        MatmulEntry::MatvecRope,
        MatmulEntry::Matmul,
        MatmulEntry::MatmulRows,
        MatmulEntry::MatmulGrouped,
        MatmulEntry::MatmulRowsGrouped,
    ];

    /// The WGSL function's name.
    pub fn name(self) -> &'static str {
        match self {
            MatmulEntry::Matvec => "matvec",
            MatmulEntry::MatvecRope => "matvec_rope",
            MatmulEntry::Matmul => "matmul",
            MatmulEntry::MatmulRows => "matmul_rows",
            MatmulEntry::MatmulGrouped => "matmul_grouped",
            MatmulEntry::MatmulRowsGrouped => "matmul_rows_grouped",
        }
    }

    /// The kernel family (shader file) that holds it.
    pub fn family(self) -> crate::gpu::Family {
        use crate::gpu::Family;
        match self {
            MatmulEntry::Matvec | MatmulEntry::MatvecRope => Family::Matvec,
            MatmulEntry::Matmul | MatmulEntry::MatmulGrouped => Family::MatmulTiled,
            MatmulEntry::MatmulRows | MatmulEntry::MatmulRowsGrouped => Family::MatmulRows,
        }
    }

    /// The entry a kernel spec names (None: not a linear-layer entry).
    pub fn of(name: &str) -> Option<MatmulEntry> {
        MatmulEntry::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether it is one of the row-wise CPU drivers' prefill entries.
    pub fn is_rows(self) -> bool {
        matches!(self, MatmulEntry::MatmulRows | MatmulEntry::MatmulRowsGrouped)
    }

    /// Whether it is a matrix-vector entry (one input row per y).
    pub fn is_matvec(self) -> bool {
        matches!(self, MatmulEntry::Matvec | MatmulEntry::MatvecRope)
    }
}

/// attention.wgsl's entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionEntry {
    Attend,
    AttendScored,
    AttendRows,
    Combine,
}

impl AttentionEntry {
    pub fn name(self) -> &'static str {
        match self {
            AttentionEntry::Attend => "attend",
            AttentionEntry::AttendScored => "attend_scored",
            AttentionEntry::AttendRows => "attend_rows",
            AttentionEntry::Combine => "combine",
        }
    }
}

/// Every kernel-shape choice of one load. Built by [`crate::gpu::Gpu::profile`]
/// (the adapter and the `kernels` option) or, for kernel tests, by
/// [`DeviceProfile::shaped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceProfile {
    pub shapes: Shapes,
    pub decode_matvec: MatvecShape,
    pub prefill_matmul: PrefillShape,
    pub attention: AttentionShape,
    /// Decode applies each RMSNorm inside the matvecs that read its output
    /// (matvec.wgsl `NORM`), saving a dispatch per norm: on CPU drivers,
    /// where an invocation sees a whole input row and every dispatch costs
    /// 40-100 us (lavapipe) however little it computes.
    pub norm_in_matvec: bool,
    /// Decode's qkv matvec also rotates q and k and stores k and v
    /// (`matvec_rope`) instead of rope.wgsl's dispatch after it, where the
    /// model allows ([`DeviceProfile::rope_in_matvec_for`]).
    pub rope_in_matvec: bool,
    pub weights: Store,
    pub prefill_inputs: Store,
    /// Invocations a reduction may sum by subgroup shuffles (lanes.wgsl); 1:
    /// none.
    pub lanes: u32,
    /// Rows per tile of moe.wgsl's `group` (and so of the grouped matmuls):
    /// a `matmul` tile, or a `matmul_rows` invocation's rows.
    pub moe_tile: u32,
}

impl DeviceProfile {
    /// The profile of one family of shapes on a device with `lanes` subgroup
    /// lanes (1: none); `textures`: the device reads textures faster than
    /// buffers (lavapipe natively; only with the CPU shapes, which were
    /// measured there).
    pub fn new(shapes: Shapes, lanes: u32, textures: bool) -> DeviceProfile {
        let cpu = shapes == Shapes::Cpu;
        let store = if cpu && textures { Store::Texture } else { Store::Buffer };
        DeviceProfile {
            shapes,
            decode_matvec: if cpu { MatvecShape::WholeOutputs } else { MatvecShape::SharedOutputs },
            prefill_matmul: if cpu { PrefillShape::Rows } else { PrefillShape::Tiles },
            attention: if cpu { AttentionShape::BarrierFree } else { AttentionShape::Tiled },
            norm_in_matvec: cpu,
            rope_in_matvec: cpu,
            weights: store,
            prefill_inputs: store,
            lanes: lanes.max(1),
            moe_tile: if cpu { MR } else { MM_TILE },
        }
    }

    /// [`DeviceProfile::new`] with buffers: the kernel tests' tunings.
    pub fn shaped(cpu: bool, lanes: u32) -> DeviceProfile {
        DeviceProfile::new(if cpu { Shapes::Cpu } else { Shapes::Gpu }, lanes, false)
    }

    /// The profile with subgroup sums off: what the adapter self-test falls
    /// back to where the shuffles give wrong sums.
    pub fn without_lanes(self) -> DeviceProfile {
        DeviceProfile { lanes: 1, ..self }
    }

    /// The entry for a linear layer of `k` inputs: `Matvec`
    /// (decode), `Matmul` (prefill) or `MatmulGrouped` (prefill over
    /// experts) as this device runs it.
    pub fn linear_entry(&self, wanted: MatmulEntry, k: usize) -> MatmulEntry {
        let rows = self.prefill_matmul == PrefillShape::Rows && k.is_multiple_of(4);
        match wanted {
            MatmulEntry::Matmul if rows => MatmulEntry::MatmulRows,
            MatmulEntry::MatmulGrouped if rows => MatmulEntry::MatmulRowsGrouped,
            e => e,
        }
    }

    /// Whether attention runs barrier-free at this head dim.
    fn barrier_free(&self, head_dim: u32) -> bool {
        self.attention == AttentionShape::BarrierFree && head_dim.is_multiple_of(4) && head_dim <= 256
    }

    /// Decode's attention entry: `AttendScored` or `Attend` (lavapipe,
    /// SmolLM2, 64 keys: 13.5 -> 9.3 ms of a decode step barrier-free).
    pub fn decode_attention(&self, head_dim: u32) -> AttentionEntry {
        if self.barrier_free(head_dim) { AttentionEntry::AttendScored } else { AttentionEntry::Attend }
    }

    /// Prefill's attention entry and the query rows per workgroup of its
    /// grid (lavapipe prefill +25% for SmolLM2 with `attend_rows`).
    pub fn prefill_attention(&self, head_dim: u32) -> (AttentionEntry, u32) {
        if self.barrier_free(head_dim) { (AttentionEntry::AttendRows, 8) } else { (AttentionEntry::Attend, 1) }
    }

    /// Subgroup lanes `attend_rows` shares its K and V loads over: 8 or more
    /// (its workgroup of 8 is one subgroup) and head dims of whole groups of
    /// 8 quads; else 1 (each invocation loads them all).
    pub fn attend_rows_lanes(&self, head_dim: u32) -> u32 {
        if self.lanes >= 8 && head_dim.is_multiple_of(32) { self.lanes } else { 1 }
    }

    /// Whether decode's qkv matrix `m` rotates and stores in its matvec: the
    /// profile says so, every slab holds whole heads of an even `head_dim`
    /// (an invocation rotates pairs of outputs of one head), and not with
    /// Qwen3's `qk_norm`, which normalizes whole heads before the rotation.
    pub fn rope_in_matvec_for(&self, m: &Matrix, head_dim: usize, qk_norm: bool) -> bool {
        self.rope_in_matvec
            && !qk_norm
            && head_dim.is_multiple_of(2)
            && m.experts == 1
            && m.slabs.iter().all(|s| s.rows.is_multiple_of(head_dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_of_shapes_is_one_profile() {
        let gpu = DeviceProfile::new(Shapes::Gpu, 32, true);
        assert_eq!(
            (gpu.decode_matvec, gpu.prefill_matmul, gpu.attention, gpu.weights, gpu.norm_in_matvec, gpu.moe_tile),
            (MatvecShape::SharedOutputs, PrefillShape::Tiles, AttentionShape::Tiled, Store::Buffer, false, MM_TILE),
            "GPU shapes keep weights in buffers even where textures are faster for the CPU shapes"
        );
        let cpu = DeviceProfile::new(Shapes::Cpu, 8, true);
        assert_eq!((cpu.weights, cpu.prefill_inputs, cpu.moe_tile), (Store::Texture, Store::Texture, MR));
        assert_eq!(cpu.linear_entry(MatmulEntry::Matmul, 64), MatmulEntry::MatmulRows);
        assert_eq!(cpu.linear_entry(MatmulEntry::Matmul, 63), MatmulEntry::Matmul, "rows need whole vec4s");
        assert_eq!(cpu.linear_entry(MatmulEntry::MatmulGrouped, 64), MatmulEntry::MatmulRowsGrouped);
        assert_eq!(gpu.linear_entry(MatmulEntry::Matmul, 64), MatmulEntry::Matmul);
        assert_eq!(cpu.decode_attention(64), AttentionEntry::AttendScored);
        assert_eq!(cpu.decode_attention(320), AttentionEntry::Attend, "head dims past 256 keep the tiles");
        assert_eq!(gpu.prefill_attention(64), (AttentionEntry::Attend, 1));
        assert_eq!(cpu.prefill_attention(64), (AttentionEntry::AttendRows, 8));
        assert_eq!((cpu.attend_rows_lanes(64), cpu.without_lanes().attend_rows_lanes(64)), (8, 1));
        for e in MatmulEntry::ALL {
            assert_eq!(MatmulEntry::of(e.name()), Some(e));
        }
    }
}
