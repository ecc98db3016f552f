// Linear layers: Y[r, n] = sum_k X[r, k] * W[n, k]   (W is [out, in], as in HF checkpoints)
//
// Two entry points share the epilogues below:
//   matvec  - decode and MoE: one workgroup per (output feature, row); reads each
//             weight row once with the whole workgroup, reduces in workgroup memory.
//   matmul  - prefill: 16x16 output tiles staged through workgroup memory, so each
//             weight element is read once per 16 rows instead of once per row.
// Epilogues (pipeline constants): bias, SwiGLU (W holds [gate; up] stacked, the
// output is silu(gate.x) * (up.x)), and ACCUMULATE (Y += result: the residual add).
// MoE: rows are (token, slot) pairs and each picks its expert's block of W from
// EXPERT_IDS, so a decode step reads only the chosen experts' weights.
override N: u32 = 1u;              // output features (per expert; per half for SwiGLU)
override K: u32 = 1u;              // input features
override SLOTS: u32 = 1u;          // rows per token (MoE top-k), 1 for dense layers
override X_PER_SLOT: u32 = 0u;     // 1: input has one row per (token, slot)
override MOE: u32 = 0u;
override EXPERT_STRIDE: u32 = 0u;  // elements between experts' blocks in W
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
override SWIGLU: u32 = 0u;

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> B: array<f32>;
@group(0) @binding(5) var<storage, read> EXPERT_IDS: array<u32>;

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

fn epilogue(r: u32, n: u32, a: f32, a_up: f32) {
    var y = a;
    if (HAS_BIAS != 0u) {
        y += B[n];
    }
    if (SWIGLU != 0u) {
        y = silu(a) * a_up;
    }
    let yi = r * N + n;
    if (ACCUMULATE != 0u) {
        y += Y[yi];
    }
    Y[yi] = y;
}

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_up: array<f32, WG>;

// Grid: x (and z, for more than 65535 outputs) over n, y over rows.
@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let n = wg.z * nwg.x + wg.x;
    let r = wg.y;
    if (n >= N || r >= step.n_tokens * SLOTS) {
        return;
    }
    var xoff = (r / SLOTS) * K;
    if (X_PER_SLOT != 0u) {
        xoff = r * K;
    }
    var woff = n * K;
    if (MOE != 0u) {
        woff += EXPERT_IDS[r] * EXPERT_STRIDE;
    }
    let uoff = woff + N * K;
    var acc = 0.0;
    var acc_up = 0.0;
    for (var k = lid; k < K; k += WG) {
        let xv = X[xoff + k];
        acc += load_w(woff + k) * xv;
        if (SWIGLU != 0u) {
            acc_up += load_w(uoff + k) * xv;
        }
    }
    red[lid] = acc;
    red_up[lid] = acc_up;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
            red_up[lid] += red_up[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        epilogue(r, n, red[0], red_up[0]);
    }
}

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;   // [row][k]
var<workgroup> ws: array<array<f32, 16>, 16>;   // [feature][k]
var<workgroup> us: array<array<f32, 16>, 16>;   // [feature][k], up half for SwiGLU

// Dense rows only (SLOTS = 1). Grid: x (and z) over feature tiles, y over row tiles.
@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) li: vec3<u32>) {
    let rows = step.n_tokens;
    let m0 = wg.y * T;
    let n0 = (wg.z * nwg.x + wg.x) * T;
    if (m0 >= rows || n0 >= N) {
        return;
    }
    let tm = li.y;
    let tn = li.x;
    var acc = 0.0;
    var acc_up = 0.0;
    for (var k0 = 0u; k0 < K; k0 += T) {
        let k = k0 + tn;
        var xv = 0.0;
        if (m0 + tm < rows && k < K) {
            xv = X[(m0 + tm) * K + k];
        }
        xs[tm][tn] = xv;
        var wv = 0.0;
        var uv = 0.0;
        if (n0 + tm < N && k < K) {
            wv = load_w((n0 + tm) * K + k);
            if (SWIGLU != 0u) {
                uv = load_w((N + n0 + tm) * K + k);
            }
        }
        ws[tm][tn] = wv;
        us[tm][tn] = uv;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc += xs[tm][kk] * ws[tn][kk];
            if (SWIGLU != 0u) {
                acc_up += xs[tm][kk] * us[tn][kk];
            }
        }
        workgroupBarrier();
    }
    if (m0 + tm < rows && n0 + tn < N) {
        epilogue(m0 + tm, n0 + tn, acc, acc_up);
    }
}
