// Linear layers: Y[r, n] = sum_k X[r, k] * W[n, k]   (W is [out, in], as in HF checkpoints)
//
// Three entry points share the epilogues below:
//   matvec      - decode and MoE: a few outputs per workgroup, each reduced over
//                 its invocations in workgroup memory (one invocation per output
//                 on CPU drivers); weights read four, or a block, at a time.
//   matmul      - prefill on GPUs: 32x32 output tiles staged through workgroup
//                 memory, so each weight is read once per 32 rows.
//   matmul_rows - prefill on CPU drivers (lavapipe, SwiftShader), where barriers
//                 and workgroup memory are costly: each invocation computes one
//                 output for MR rows, decoding each weight once per MR rows.
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
// Slabs: a matrix too big for one binding is split by output; this dispatch
// computes outputs SLAB.x .. SLAB.x + N of N_ALL (0: N_ALL = N, unsplit). The
// first output is a uniform, not a constant, so equal slabs share a pipeline.
override N_ALL: u32 = 0u;

@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
// The same input as vec4s, one load per four values, for matvec and
// matmul_rows (the tiled matmul reads X): no entry point uses both. Buffers are
// sized in whole 16-byte units (Gpu::storage), so X4 covers every element.
@group(0) @binding(2) var<storage, read> X4: array<vec4<f32>>;

fn x_at(i: u32) -> f32 {
    return X4[i >> 2u][i & 3u];
}
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> B: array<f32>;
@group(0) @binding(5) var<storage, read> EXPERT_IDS: array<u32>;
@group(0) @binding(6) var<uniform> SLAB: vec4<u32>;

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

fn epilogue(r: u32, n_slab: u32, a: f32, a_up: f32) {
    let n = SLAB.x + n_slab;
    var y = a;
    if (HAS_BIAS != 0u) {
        y += B[n];
    }
    if (SWIGLU != 0u) {
        y = silu(a) * a_up;
    }
    let yi = r * select(N, N_ALL, N_ALL != 0u) + n;
    if (ACCUMULATE != 0u) {
        y += Y[yi];
    }
    Y[yi] = y;
}

const WG: u32 = 64u;
// matvec: ROWS outputs per workgroup, WG / ROWS invocations per output. Fewer,
// fuller workgroups and shorter reductions suit short rows (and CPU drivers).
override ROWS: u32 = 1u;
// 1: K % 4 == 0, read weights four at a time (one block header per quad).
override QUAD: u32 = 0u;
// 1: K % 32 == 0 and a 32-weight block type: read whole blocks (dot_block32).
override BLOCKS: u32 = 0u;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_up: array<f32, WG>;

// Grid: x (and z, for many outputs) over groups of ROWS outputs, y over rows.
@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let tpr = WG / ROWS;
    let n = (wg.z * nwg.x + wg.x) * ROWS + lid / tpr;
    let sub = lid % tpr;
    let r = wg.y;
    if (r >= step.n_tokens * SLOTS) {
        return;
    }
    let live = n < N;
    var xoff = (r / SLOTS) * K;
    if (X_PER_SLOT != 0u) {
        xoff = r * K;
    }
    var woff = min(n, N - 1u) * K;
    if (MOE != 0u) {
        woff += EXPERT_IDS[r] * EXPERT_STRIDE;
    }
    let uoff = woff + N * K;
    var acc = 0.0;
    var acc_up = 0.0;
    if (live) {
        if (BLOCKS != 0u) {
            // Whole 32-weight blocks per invocation (K % 32 == 0, q4_0/q4_1/q8_0).
            for (var k = sub * 32u; k < K; k += tpr * 32u) {
                var xs8: array<vec4<f32>, 8>;
                for (var j = 0u; j < 8u; j++) {
                    xs8[j] = X4[((xoff + k) >> 2u) + j];
                }
                acc += dot_block32((woff + k) >> 5u, &xs8);
                if (SWIGLU != 0u) {
                    acc_up += dot_block32((uoff + k) >> 5u, &xs8);
                }
            }
        } else if (QUAD != 0u) {
            for (var k = sub * 4u; k < K; k += tpr * 4u) {
                let xv = X4[(xoff + k) >> 2u];
                acc += dot(load_w4(woff + k), xv);
                if (SWIGLU != 0u) {
                    acc_up += dot(load_w4(uoff + k), xv);
                }
            }
        } else {
            for (var k = sub; k < K; k += tpr) {
                let xv = x_at(xoff + k);
                acc += load_w(woff + k) * xv;
                if (SWIGLU != 0u) {
                    acc_up += load_w(uoff + k) * xv;
                }
            }
        }
    }
    if (ROWS == WG) {
        // One invocation per output (CPU drivers): no reduction, no barrier.
        if (live) {
            epilogue(r, n, acc, acc_up);
        }
        return;
    }
    red[lid] = acc;
    red_up[lid] = acc_up;
    workgroupBarrier();
    for (var s = tpr / 2u; s > 0u; s >>= 1u) {
        if (sub < s) {
            red[lid] += red[lid + s];
            red_up[lid] += red_up[lid + s];
        }
        workgroupBarrier();
    }
    if (sub == 0u && live) {
        epilogue(r, n, red[lid], red_up[lid]);
    }
}

// matmul tiles: 32 rows x 32 outputs per workgroup, K in steps of 16; each
// invocation computes a 4x4 block of outputs, so every value staged in
// workgroup memory feeds four multiply-adds and barriers are few.
const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 512>;   // [TM][TK]
var<workgroup> ws: array<f32, 512>;   // [TN][TK]
var<workgroup> us: array<f32, 512>;   // [TN][TK], up half for SwiGLU

fn stage_w(row: u32, k: u32, at: u32, up: bool) {
    var v = vec4<f32>(0.0);
    if (row < N && k < K) {
        let base = select(0u, N * K, up) + row * K + k;
        if (QUAD != 0u) {
            v = load_w4(base);
        } else {
            for (var c = 0u; c < 4u; c++) {
                if (k + c < K) {
                    v[c] = load_w(base + c);
                }
            }
        }
    }
    if (up) {
        us[at] = v.x; us[at + 1u] = v.y; us[at + 2u] = v.z; us[at + 3u] = v.w;
    } else {
        ws[at] = v.x; ws[at + 1u] = v.y; ws[at + 2u] = v.z; ws[at + 3u] = v.w;
    }
}

// Dense rows only (SLOTS = 1). Grid: x (and z) over output tiles, y over row tiles.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let rows = step.n_tokens;
    let m0 = wg.y * TM;
    let n0 = (wg.z * nwg.x + wg.x) * TN;
    if (m0 >= rows || n0 >= N) {
        return;
    }
    let tr = (lid >> 3u) * 4u;   // first of this invocation's 4 rows in the tile
    let tc = (lid & 7u) * 4u;    // first of its 4 outputs
    var acc: array<f32, 16>;
    var acc_up: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 += TK) {
        for (var i = 0u; i < 8u; i++) {
            let e = lid + 64u * i;
            let r = m0 + (e >> 4u);
            let k = k0 + (e & 15u);
            var xv = 0.0;
            if (r < rows && k < K) {
                xv = X[r * K + k];
            }
            xs[e] = xv;
        }
        for (var i = 0u; i < 2u; i++) {
            let q = lid + 64u * i;
            let r = q >> 2u;
            let c = (q & 3u) * 4u;
            stage_w(n0 + r, k0 + c, r * TK + c, false);
            if (SWIGLU != 0u) {
                stage_w(n0 + r, k0 + c, r * TK + c, true);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let xv = vec4<f32>(xs[tr * TK + kk], xs[(tr + 1u) * TK + kk], xs[(tr + 2u) * TK + kk], xs[(tr + 3u) * TK + kk]);
            let wv = vec4<f32>(ws[tc * TK + kk], ws[(tc + 1u) * TK + kk], ws[(tc + 2u) * TK + kk], ws[(tc + 3u) * TK + kk]);
            for (var a = 0u; a < 4u; a++) {
                acc[a * 4u] += xv[a] * wv.x;
                acc[a * 4u + 1u] += xv[a] * wv.y;
                acc[a * 4u + 2u] += xv[a] * wv.z;
                acc[a * 4u + 3u] += xv[a] * wv.w;
            }
            if (SWIGLU != 0u) {
                let uv = vec4<f32>(us[tc * TK + kk], us[(tc + 1u) * TK + kk], us[(tc + 2u) * TK + kk], us[(tc + 3u) * TK + kk]);
                for (var a = 0u; a < 4u; a++) {
                    acc_up[a * 4u] += xv[a] * uv.x;
                    acc_up[a * 4u + 1u] += xv[a] * uv.y;
                    acc_up[a * 4u + 2u] += xv[a] * uv.z;
                    acc_up[a * 4u + 3u] += xv[a] * uv.w;
                }
            }
        }
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            let r = m0 + tr + a;
            let n = n0 + tc + b;
            if (r < rows && n < N) {
                epilogue(r, n, acc[a * 4u + b], acc_up[a * 4u + b]);
            }
        }
    }
}

// matmul_rows (K % 4 == 0 only): rows per invocation (at most 8).
override MR: u32 = 8u;

// Grid: x (and z) over groups of 64 outputs, y over groups of MR rows.
@compute @workgroup_size(64)
fn matmul_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let n = (wg.z * nwg.x + wg.x) * 64u + lid;
    let r0 = wg.y * MR;
    let rows = step.n_tokens;
    if (n >= N || r0 >= rows) {
        return;
    }
    let nr = min(MR, rows - r0);
    let woff = n * K;
    let uoff = woff + N * K;
    var acc: array<f32, 8>;
    var acc_up: array<f32, 8>;
    if (BLOCKS != 0u) {
        for (var k = 0u; k < K; k += 32u) {
            let w = decode_block32((woff + k) >> 5u);
            var u: array<vec4<f32>, 8>;
            if (SWIGLU != 0u) {
                u = decode_block32((uoff + k) >> 5u);
            }
            for (var i = 0u; i < nr; i++) {
                let xo = (r0 + i) * K + k;
                var a = 0.0;
                var b = 0.0;
                for (var j = 0u; j < 8u; j++) {
                    let xv = X4[(xo >> 2u) + j];
                    a += dot(w[j], xv);
                    if (SWIGLU != 0u) {
                        b += dot(u[j], xv);
                    }
                }
                acc[i] += a;
                acc_up[i] += b;
            }
        }
    } else {
        for (var k = 0u; k < K; k += 4u) {
            let w = load_w4(woff + k);
            var u = vec4<f32>(0.0);
            if (SWIGLU != 0u) {
                u = load_w4(uoff + k);
            }
            for (var i = 0u; i < nr; i++) {
                let xv = X4[((r0 + i) * K + k) >> 2u];
                acc[i] += dot(w, xv);
                acc_up[i] += dot(u, xv);
            }
        }
    }
    for (var i = 0u; i < nr; i++) {
        epilogue(r0 + i, n, acc[i], acc_up[i]);
    }
}
