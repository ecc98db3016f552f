// Linear layers: Y[r, n] = sum_k X[r, k] * W[n, k]   (W is [out, in], as in HF checkpoints)
//
// This prelude holds what the linear-layer kernels share: their shape and
// epilogue constants, the input X, the output Y, the slab, the MoE tile table
// and the epilogue. Each kernel shape is its own file after it:
//   matvec.wgsl        - decode and MoE decode (`matvec`), and `matvec_rope`,
//                        the CPU drivers' qkv projection with RoPE and the
//                        KV-cache store in its epilogue (rotary.wgsl).
//   matmul_tiled.wgsl  - prefill on GPUs: 32x32 output tiles staged through
//                        workgroup memory (`matmul`), and MoE prefill over
//                        one expert's rows per tile (`matmul_grouped`).
//   matmul_rows.wgsl   - prefill on CPU drivers (lavapipe, SwiftShader), where
//                        barriers and workgroup memory are costly: each
//                        invocation computes one output for MR rows
//                        (`matmul_rows`, `matmul_rows_grouped`).
// Epilogues (pipeline constants): bias, SwiGLU (W holds [gate; up] stacked, the
// output is silu(gate.x) * (up.x), or GELU-gated), GELU on the output, and
// ACCUMULATE (Y += result: the residual add).
// The optional inputs (the bias B, the norm's NORM_W, MoE's EXPERT_IDS) come
// from their own preludes (linear_bias.wgsl, linear_norm.wgsl,
// linear_experts.wgsl), declared only in the modules of dispatches that bind
// them (kernels.rs): a kernel that does not read one binds nothing for it.
// MoE: rows are (token, slot) pairs and each picks its expert's block of W from
// EXPERT_IDS, so a decode step reads only the chosen experts' weights. MoE
// prefill runs the grouped entries instead: the same tile bodies over one
// expert's rows at a time (moe.wgsl's `group` sorts the rows by expert into
// ORDER and cuts each expert's run into TILES), so an expert's weights are
// read once per tile rather than once per (token, slot) row.
override N: u32 = 1u;              // output features (per expert; per half for SwiGLU)
override K: u32 = 1u;              // input features
override SLOTS: u32 = 1u;          // rows per token (MoE top-k), 1 for dense layers
override X_PER_SLOT: u32 = 0u;     // 1: input has one row per (token, slot)
override MOE: u32 = 0u;
override EXPERT_STRIDE: u32 = 0u;  // elements between experts' blocks in W
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
// 1: Y already holds the gate projection (a previous dispatch of a gate stored
// in another type than up): this one computes up and writes silu(Y) * up.
override GATE_IN_Y: u32 = 0u;
override SWIGLU: u32 = 0u;
// The gate's activation with SWIGLU or GATE_IN_Y: 0 SiLU, 1 GELU (Pixtral's
// encoder MLP where configured so).
override GATE_ACT: u32 = 0u;
// The output's activation after the bias (the vision projector's first
// layer): 0 none, 1 GELU, 2 SiLU.
override OUT_ACT: u32 = 0u;
// Slabs: a matrix too big for one binding is split by output; this dispatch
// computes outputs SLAB.x .. SLAB.x + N of N_ALL (0: N_ALL = N, unsplit). The
// first output is a uniform, not a constant, so equal slabs share a pipeline.
override N_ALL: u32 = 0u;

// Outputs per invocation where an invocation owns whole outputs (the CPU
// drivers' matvec, ROWS == WG: at most 4, ROWS apart; matmul_rows: at most 2).
// There an input value is loaded once per SIMD batch of invocations, and
// those loads cost as much as the weights' (measured on lavapipe: with the
// input loads taken out, a matvec ran 35-40% faster), so each load feeds NPI
// rows' weights instead of one.
override NPI: u32 = 1u;
// 1: K % 4 == 0, read weights four at a time (one block header per quad).
override QUAD: u32 = 0u;
// 1: K % 32 == 0 and a 32-weight block type: read whole blocks (matvec,
// matmul_rows).
override BLOCKS: u32 = 0u;
// Lanes of a subgroup that shuffle (lanes.wgsl), up to the adapter's smallest
// subgroup; 1 without subgroups. GPUs: an output's invocations sum by
// shuffles before the workgroup tree. CPU drivers (8 or more): the lanes
// share a block's input loads (the matvec's and matmul_rows').
override LANES: u32 = 1u;

// Binding 1, the weights: a prelude's (weights.wgsl's `w_quad`).
@group(0) @binding(2) var<storage, read> X: array<f32>;
// The same input as vec4s, one load per four values, for matvec and
// matmul_rows (the tiled matmul reads X): no entry point uses both. Buffers are
// sized in whole 16-byte units (Gpu::storage), so X4 covers every element.
// matmul_rows reads it through the prelude's `x_quad` (inputs_in_buffer.wgsl),
// or on lavapipe a texture copy of it (inputs_in_texture.wgsl).
@group(0) @binding(2) var<storage, read> X4: array<vec4<f32>>;

fn x_at(i: u32) -> f32 {
    return X4[i >> 2u][i & 3u];
}
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(6) var<uniform> SLAB: vec4<u32>;
// Grouped entries only: rows sorted by expert, and (expert, first position in
// ORDER, rows) per tile after the tile count in TILES[0].x (moe.wgsl `group`).
@group(0) @binding(7) var<storage, read> ORDER: array<u32>;
@group(0) @binding(8) var<storage, read> TILES: array<vec4<u32>>;
// Rows per tile `group` emits (the grid is sized from it) and the experts: both
// bound what a tile entry may say, so a bad table cannot index past W or Y's tile.
override GROUP_TILE: u32 = 32u;
override EXPERTS: u32 = 1u;

// The input row of output row r: a token's row serves all its slots, unless
// the input has one row per (token, slot) (the experts' down projection).
fn x_row(r: u32) -> u32 {
    return select(r / SLOTS, r, X_PER_SLOT != 0u);
}

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

// erf by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf.
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - p * exp(-a * a));
}

// transformers' `gelu`: exact, by erf (not the tanh approximation).
fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
}

// The gate's activation in SwiGLU-shaped MLPs (SWIGLU, GATE_IN_Y).
fn gate_act(g: f32) -> f32 {
    if (GATE_ACT == 1u) {
        return gelu(g);
    }
    return silu(g);
}

fn epilogue(r: u32, n_slab: u32, a: f32, a_up: f32) {
    let n = SLAB.x + n_slab;
    var y = a;
    var up = a_up;
    if (HAS_BIAS != 0u) {
        y += bias(n);
        // Stacked gate/up biases: the up half's follow the gate half's.
        if (SWIGLU != 0u) {
            up += bias(select(N, N_ALL, N_ALL != 0u) + n);
        }
    }
    if (SWIGLU != 0u) {
        y = gate_act(y) * up;
    }
    if (OUT_ACT == 1u) {
        y = gelu(y);
    } else if (OUT_ACT == 2u) {
        y = silu(y);
    }
    let yi = r * select(N, N_ALL, N_ALL != 0u) + n;
    if (GATE_IN_Y != 0u) {
        y = gate_act(Y[yi]) * y;
    }
    if (ACCUMULATE != 0u) {
        y += Y[yi];
    }
    Y[yi] = y;
}

// One entry of moe.wgsl's tile table: (expert, first position in ORDER, rows),
// rows 0 past the table's end (the grid covers the worst case, the table says
// how many tiles this pass has). Clamped to the experts, the tile size and
// this pass's (token, slot) rows, so an entry cannot send a tile out of them.
fn group_tile(i: u32) -> vec3<u32> {
    if (i >= TILES[0].x) {
        return vec3<u32>(0u);
    }
    let t = TILES[1u + i];
    let rows = step.n_tokens * SLOTS;
    let first = min(t.y, rows);
    return vec3<u32>(min(t.x, EXPERTS - 1u), first, min(min(t.z, rows - first), GROUP_TILE));
}

