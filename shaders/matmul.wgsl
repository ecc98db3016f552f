// Linear layers: Y[r, n] = sum_k X[r, k] * W[n, k]   (W is [out, in], as in HF checkpoints)
//
// Three kernels (and the MoE prefill variants of the last two) share the
// epilogues below:
//   matvec      - decode and MoE decode: a few outputs per workgroup, each reduced over
//                 its invocations by subgroup shuffles and/or in workgroup memory
//                 (one invocation per output on CPU drivers); weights read four,
//                 or a block, at a time.
//   matmul      - prefill on GPUs: 32x32 output tiles staged through workgroup
//                 memory, so each weight is read once per 32 rows.
//   matmul_rows - prefill on CPU drivers (lavapipe, SwiftShader), where barriers
//                 and workgroup memory are costly: each invocation computes one
//                 output for MR rows, decoding each weight once per MR rows.
// Epilogues (pipeline constants): bias, SwiGLU (W holds [gate; up] stacked, the
// output is silu(gate.x) * (up.x)), and ACCUMULATE (Y += result: the residual add).
// Prologue (CPU drivers' matvec): NORM, the RMSNorm before the layer.
// MoE: rows are (token, slot) pairs and each picks its expert's block of W from
// EXPERT_IDS, so a decode step reads only the chosen experts' weights. MoE
// prefill runs `matmul_grouped` / `matmul_rows_grouped` instead: the same tile
// bodies over one expert's rows at a time (moe.wgsl's `group` sorts the rows by
// expert into ORDER and cuts each expert's run into TILES), so an expert's
// weights are read once per tile rather than once per (token, slot) row.
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
// Slabs: a matrix too big for one binding is split by output; this dispatch
// computes outputs SLAB.x .. SLAB.x + N of N_ALL (0: N_ALL = N, unsplit). The
// first output is a uniform, not a constant, so equal slabs share a pipeline.
override N_ALL: u32 = 0u;

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

// 1: X holds the residual stream, not yet normalized, and this matvec applies
// the RMSNorm before it (weights NORM_W, epsilon NORM_EPS): y = W (g * x) / rms(x),
// the sum of squares taken over the same input loads as the dot products.
// Decode on CPU drivers then skips a dispatch per norm, which there costs
// 40-100 us however little it does. Only where an invocation computes whole
// outputs (ROWS == WG): it must see every input of the row.
override NORM: u32 = 0u;
override NORM_EPS: f32 = 1e-5;
// 1 (with NORM): the input is the pass's last row (the final norm before the
// LM head, when only the next token's logits are needed).
override LAST_ROW: u32 = 0u;
// The norm's weights; matvec dispatches without NORM bind a dummy.
@group(0) @binding(9) var<storage, read> NORM_W: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> B: array<f32>;
@group(0) @binding(5) var<storage, read> EXPERT_IDS: array<u32>;
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

fn epilogue(r: u32, n_slab: u32, a: f32, a_up: f32) {
    let n = SLAB.x + n_slab;
    var y = a;
    var up = a_up;
    if (HAS_BIAS != 0u) {
        y += B[n];
        // Stacked gate/up biases: the up half's follow the gate half's.
        if (SWIGLU != 0u) {
            up += B[select(N, N_ALL, N_ALL != 0u) + n];
        }
    }
    if (SWIGLU != 0u) {
        y = silu(y) * up;
    }
    let yi = r * select(N, N_ALL, N_ALL != 0u) + n;
    if (GATE_IN_Y != 0u) {
        y = silu(Y[yi]) * y;
    }
    if (ACCUMULATE != 0u) {
        y += Y[yi];
    }
    Y[yi] = y;
}

const WG: u32 = 64u;
// matvec: ROWS outputs per workgroup, WG / ROWS invocations per output. Fewer,
// fuller workgroups and shorter reductions suit short rows (and CPU drivers).
override ROWS: u32 = 1u;
// CPU drivers (ROWS == WG): outputs per invocation (at most 4), ROWS apart.
// There an input value is loaded once per SIMD batch of invocations, and
// those loads cost as much as the weights' (measured on lavapipe: with the
// input loads taken out, a matvec ran 35-40% faster), so each load feeds NPI
// rows' weights instead of one.
override NPI: u32 = 1u;
// 1: K % 4 == 0, read weights four at a time (one block header per quad).
override QUAD: u32 = 0u;
// 1: K % 32 == 0 and a 32-weight block type: read whole blocks (dot_block32).
override BLOCKS: u32 = 0u;
// Lanes of a subgroup that shuffle (lanes.wgsl), up to the adapter's smallest
// subgroup; 1 without subgroups. GPUs: an output's invocations sum by
// shuffles before the workgroup tree. CPU drivers (8 or more): the lanes
// share a block's input loads.
override LANES: u32 = 1u;
var<workgroup> red: array<f32, WG>;
var<workgroup> red_up: array<f32, WG>;

// The matvec's dots of the 32-weight block at k of each of an invocation's
// NPI outputs (first weights `woff`; up halves `up` further) with inputs xs8.
fn add_block_dots(k: u32, xs8: ptr<function, array<vec4<f32>, 8>>, woff: vec4<u32>, up: u32,
                  acc: ptr<function, vec4<f32>>, acc_up: ptr<function, vec4<f32>>) {
    let sums = x_sums(xs8);
    for (var j = 0u; j < NPI; j++) {
        (*acc)[j] += dot_block32((woff[j] + k) >> 5u, xs8, sums);
        if (SWIGLU != 0u) {
            (*acc_up)[j] += dot_block32((woff[j] + up + k) >> 5u, xs8, sums);
        }
    }
}

// An invocation's dot products for its NPI outputs (first weights at woff;
// up halves `up` further) with the input row at xoff, over its share of K
// (from `sub`, every `tpr`-th step), and the sum of squares of the inputs it
// loaded (NORM).
struct Dots {
    acc: vec4<f32>,
    up: vec4<f32>,
    sq: f32,
}

fn dots(lid: u32, sub: u32, tpr: u32, xoff: u32, woff: vec4<u32>) -> Dots {
    let up = N * K;
    var acc = vec4<f32>(0.0);
    var acc_up = vec4<f32>(0.0);
    var sq = 0.0;
    if (BLOCKS != 0u) {
        // Whole 32-weight blocks (K % 32 == 0, block types), every tpr-th
        // from sub. One loop and one add_block_dots for both ways of loading
        // the inputs: the block decoders are inlined once, and a pipeline's
        // creation time grows with the code inlined (measured on lavapipe).
        //
        // CPU drivers with subgroups of 8 or more (`by_lanes`: then tpr is 1
        // and sub 0): every invocation of the workgroup walks the same
        // blocks, so this loop's control flow is uniform, as shuffles need
        // (its bounds do not depend on sub). They all read the same 32 inputs
        // per block and a load costs one per lane there whatever the address,
        // so lane i loads quad i (mod 8) and the subgroup passes the 8 round
        // (lavapipe: +17% decode).
        let by_lanes = ROWS == WG && LANES >= 8u;
        let lane = lid % 8u;
        for (var k0 = 0u; k0 < K; k0 += tpr * 32u) {
            let k = k0 + sub * 32u;
            var xs8: array<vec4<f32>, 8>;
            if (by_lanes) {
                var mine = X4[((xoff + k0) >> 2u) + lane];
                if (NORM != 0u) {
                    sq += dot(mine, mine);
                    mine *= NORM_W[(k0 >> 2u) + lane];
                }
                xs8 = lanes_all8(mine);
            } else if (k < K) {
                for (var i = 0u; i < 8u; i++) {
                    xs8[i] = X4[((xoff + k) >> 2u) + i];
                    if (NORM != 0u) {
                        sq += dot(xs8[i], xs8[i]);
                        xs8[i] *= NORM_W[(k >> 2u) + i];
                    }
                }
            }
            if (k < K) {
                add_block_dots(k, &xs8, woff, up, &acc, &acc_up);
            }
        }
        if (NORM != 0u && by_lanes) {
            // Each run of 8 lanes loaded the row once between them.
            sq = lanes_sum(sq, 8u);
        }
    } else if (QUAD != 0u) {
        for (var k = sub * 4u; k < K; k += tpr * 4u) {
            var xv = X4[(xoff + k) >> 2u];
            if (NORM != 0u) {
                sq += dot(xv, xv);
                xv *= NORM_W[k >> 2u];
            }
            for (var j = 0u; j < NPI; j++) {
                acc[j] += dot(load_w4(woff[j] + k), xv);
                if (SWIGLU != 0u) {
                    acc_up[j] += dot(load_w4(woff[j] + up + k), xv);
                }
            }
        }
    } else {
        for (var k = sub; k < K; k += tpr) {
            var xv = x_at(xoff + k);
            if (NORM != 0u) {
                sq += xv * xv;
                xv *= NORM_W[k >> 2u][k & 3u];
            }
            for (var j = 0u; j < NPI; j++) {
                acc[j] += load_w(woff[j] + k) * xv;
                if (SWIGLU != 0u) {
                    acc_up[j] += load_w(woff[j] + up + k) * xv;
                }
            }
        }
    }
    return Dots(acc, acc_up, sq);
}

// NORM: the dots of a whole input row (CPU drivers) divided by its RMS.
fn normalized(d: Dots) -> Dots {
    if (NORM == 0u) {
        return d;
    }
    let inv = 1.0 / sqrt(d.sq / f32(K) + NORM_EPS);
    return Dots(d.acc * inv, d.up * inv, d.sq);
}

// Grid: x (and z, for many outputs) over groups of ROWS * NPI outputs, y over rows.
@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let tpr = WG / ROWS;
    // This invocation's outputs: n0 + j * ROWS for j < NPI.
    let n0 = (wg.z * nwg.x + wg.x) * ROWS * NPI + lid / tpr;
    let sub = lid % tpr;
    let r = wg.y;
    if (r >= step.n_tokens * SLOTS) {
        return;
    }
    let xoff = select(x_row(r), step.n_tokens - 1u, LAST_ROW != 0u) * K;
    var expert_off = 0u;
    if (MOE != 0u) {
        expert_off = EXPERT_IDS[r] * EXPERT_STRIDE;
    }
    // Each output's first weight (clamped: outputs past N compute row N - 1's
    // dot again and are not written).
    // vec4s rather than arrays: a CPU driver keeps them in registers, where an
    // array indexed in a loop can end up in per-invocation memory.
    var woff: vec4<u32>;
    for (var j = 0u; j < NPI; j++) {
        woff[j] = expert_off + min(n0 + j * ROWS, N - 1u) * K;
    }
    let d = dots(lid, sub, tpr, xoff, woff);
    if (ROWS == WG) {
        // Whole outputs per invocation (CPU drivers): no reduction, no barrier.
        let dn = normalized(d);
        for (var j = 0u; j < NPI; j++) {
            let n = n0 + j * ROWS;
            if (n < N) {
                epilogue(r, n, dn.acc[j], dn.up[j]);
            }
        }
        return;
    }
    // The output's sum over its tpr invocations: runs of `lanes` neighbours
    // by subgroup shuffles (lanes.wgsl; 1 without subgroups), then the runs'
    // sums in workgroup memory.
    let lanes = min(LANES, tpr);
    var sum = lanes_sum2(vec2<f32>(d.acc[0], d.up[0]), lanes);
    if (lanes < tpr) {
        red[lid] = sum.x;
        red_up[lid] = sum.y;
        workgroupBarrier();
        for (var s = tpr / 2u; s >= lanes; s >>= 1u) {
            if (sub < s) {
                red[lid] += red[lid + s];
                red_up[lid] += red_up[lid + s];
            }
            workgroupBarrier();
        }
        sum = vec2<f32>(red[lid], red_up[lid]);
    }
    if (sub == 0u && n0 < N) {
        epilogue(r, n0, sum.x, sum.y);
    }
}

// matvec_rope: decode's qkv projection on CPU drivers with rope.wgsl's work
// in its epilogue, a dispatch fewer per layer. Y is the [q heads | k heads |
// v heads] row (HD each; this slab's outputs start at SLAB.x, a whole head).
// An invocation computes NPI / 2 (NPI even) rotation pairs, each two outputs
// of one head (i, i + HD/2, or 2i, 2i + 1 with STYLE 1), so it can rotate
// them itself: q heads go to Y rotated, k heads rotated into their KV-cache
// slot, v heads (their pairs only an output grouping) into theirs; k and v
// are not written to Y. ROWS == WG, K % 4 == 0 or not, as matvec.
override HD: u32 = 2u;
override NH: u32 = 1u;
override NKV: u32 = 1u;
override CAP: u32 = 1u;
override STYLE: u32 = 0u;
@group(0) @binding(10) var<storage, read> ROPE_TABLE: array<f32>;   // [position][pair] (cos, sin)
@group(0) @binding(11) var<storage, read_write> KC: array<kv_t>;
@group(0) @binding(12) var<storage, read_write> VC: array<kv_t>;

// Outputs (within a head) of rotation pair j.
fn rope_pair(j: u32) -> vec2<u32> {
    if (STYLE == 0u) {
        return vec2<u32>(j, j + HD / 2u);
    }
    return vec2<u32>(2u * j, 2u * j + 1u);
}

// Pair `p` of row r (p < N / 2, slab-relative) with values (a, b) before the
// bias: rotate and store as rope.wgsl's `main` does.
fn rope_epilogue(r: u32, p: u32, a: f32, b: f32) {
    let half = HD / 2u;
    let j = p % half;
    let head = (SLAB.x / HD) + p / half;
    let e = rope_pair(j);
    let n = head * HD;
    var v = vec2<f32>(a, b);
    if (HAS_BIAS != 0u) {
        v += vec2<f32>(B[n + e.x], B[n + e.y]);
    }
    let pos = step.start_pos + r;
    let slot = pos % CAP;
    if (head < NH + NKV) {
        let cs = vec2<f32>(ROPE_TABLE[(pos * half + j) * 2u], ROPE_TABLE[(pos * half + j) * 2u + 1u]);
        v = vec2<f32>(v.x * cs.x - v.y * cs.y, v.y * cs.x + v.x * cs.y);
    }
    if (head < NH) {
        let row = r * select(N, N_ALL, N_ALL != 0u) + n;
        Y[row + e.x] = v.x;
        Y[row + e.y] = v.y;
    } else if (head < NH + NKV) {
        let kv = (slot * NKV + head - NH) * HD;
        KC[kv + e.x] = kv_t(v.x);
        KC[kv + e.y] = kv_t(v.y);
    } else {
        let kv = (slot * NKV + head - NH - NKV) * HD;
        VC[kv + e.x] = kv_t(v.x);
        VC[kv + e.y] = kv_t(v.y);
    }
}

// Grid: as matvec's (x and z over groups of 64 * NPI outputs, y over rows).
@compute @workgroup_size(64)
fn matvec_rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let r = wg.y;
    if (r >= step.n_tokens) {
        return;
    }
    let half = HD / 2u;
    let pairs = NPI / 2u;
    // This invocation's pairs: p0 + i * WG for i < pairs; outputs 2i and
    // 2i + 1 of the NPI are pair i's.
    let p0 = (wg.z * nwg.x + wg.x) * WG * pairs + lid;
    var woff: vec4<u32>;
    for (var j = 0u; j < NPI; j++) {
        let p = p0 + (j / 2u) * WG;
        let e = rope_pair(p % half);
        let n = (p / half) * HD + select(e.x, e.y, (j & 1u) == 1u);
        woff[j] = min(n, N - 1u) * K;
    }
    let d = normalized(dots(lid, 0u, 1u, r * K, woff));
    for (var i = 0u; i < pairs; i++) {
        let p = p0 + i * WG;
        if (p < N / 2u) {
            rope_epilogue(r, p, d.acc[2u * i], d.acc[2u * i + 1u]);
        }
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

// Stage 4 weights of output `row` from k, of the block at `woff` (an expert's).
fn stage_w(woff: u32, row: u32, k: u32, at: u32, up: bool) {
    var v = vec4<f32>(0.0);
    if (row < N && k < K) {
        let base = woff + select(0u, N * K, up) + row * K + k;
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

// The output row of each of a tile's rows, set by the entry point before
// `tile_body` (consecutive rows for dense layers, one expert's rows for MoE).
var<workgroup> tile_rows: array<u32, 32>;

// One tile: outputs n0 .. n0 + TN of rows tile_rows[0 .. nr), weights from the
// block at `woff`. Called in uniform control flow (it has barriers).
fn tile_body(lid: u32, n0: u32, nr: u32, woff: u32) {
    let tr = (lid >> 3u) * 4u;   // first of this invocation's 4 rows in the tile
    let tc = (lid & 7u) * 4u;    // first of its 4 outputs
    var acc: array<f32, 16>;
    var acc_up: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 += TK) {
        for (var i = 0u; i < 8u; i++) {
            let e = lid + 64u * i;
            let m = e >> 4u;
            let k = k0 + (e & 15u);
            var xv = 0.0;
            if (m < nr && k < K) {
                xv = X[x_row(tile_rows[m]) * K + k];
            }
            xs[e] = xv;
        }
        for (var i = 0u; i < 2u; i++) {
            let q = lid + 64u * i;
            let r = q >> 2u;
            let c = (q & 3u) * 4u;
            stage_w(woff, n0 + r, k0 + c, r * TK + c, false);
            if (SWIGLU != 0u) {
                stage_w(woff, n0 + r, k0 + c, r * TK + c, true);
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
            let n = n0 + tc + b;
            if (tr + a < nr && n < N) {
                epilogue(tile_rows[tr + a], n, acc[a * 4u + b], acc_up[a * 4u + b]);
            }
        }
    }
}

// Dense rows (SLOTS = 1). Grid: x (and z) over output tiles, y over row tiles.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let rows = step.n_tokens;
    let m0 = wg.y * TM;
    let n0 = (wg.z * nwg.x + wg.x) * TN;
    if (m0 >= rows || n0 >= N) {
        return;
    }
    if (lid < TM) {
        tile_rows[lid] = m0 + lid;
    }
    workgroupBarrier();
    tile_body(lid, n0, min(TM, rows - m0), 0u);
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
    return vec3<u32>(min(t.x, EXPERTS - 1u), first, min(min(t.z, rows - first), min(GROUP_TILE, TM)));
}

// MoE prefill on GPUs: one expert's rows (up to 32) per tile. Grid: x (and z)
// over output tiles, y over the worst-case tile count.
@compute @workgroup_size(64)
fn matmul_grouped(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let tile = group_tile(wg.y);
    let n0 = (wg.z * nwg.x + wg.x) * TN;
    if (tile.z == 0u || n0 >= N) {
        return;
    }
    if (lid < tile.z) {
        tile_rows[lid] = ORDER[tile.y + lid];
    }
    workgroupBarrier();
    tile_body(lid, n0, tile.z, tile.x * EXPERT_STRIDE);
}

// matmul_rows (K % 4 == 0 only): MR rows per invocation, a host constant
// (kernels.rs writes linear.rs's MR) so that it sizes the arrays below.

// Outputs n0 and, with NPI = 2, n0 + 64 (NPI is at most 2 here) for rows
// rs[0 .. nr) (nr <= MR), weights from the block at `woff`: each input value
// loaded feeds both outputs' weights. An output past N computes row N - 1's
// dot again and is not written, so that every invocation of a workgroup
// walks the same loops (the lanes' broadcasts need uniform control flow).
// The two outputs are written out by name, not as an array indexed by a loop
// over NPI: with K-quants' longer decoding, that loop stays a loop on
// lavapipe and its arrays go to memory (Qwen2.5 0.5B prefill 2.6x slower).
fn rows_body(lid: u32, n0: u32, nr: u32, rs: array<u32, MR>, woff: u32) {
    let wo0 = woff + min(n0, N - 1u) * K;
    let wo1 = woff + min(n0 + 64u, N - 1u) * K;
    let up = N * K;
    var acc: array<vec2<f32>, MR>;
    var acc_up: array<vec2<f32>, MR>;
    var xr: array<u32, MR>;
    for (var i = 0u; i < nr; i++) {
        xr[i] = x_row(rs[i]) * K;
    }
    if (BLOCKS != 0u) {
        for (var k = 0u; k < K; k += 32u) {
            let w0 = decode_block32((wo0 + k) >> 5u);
            var w1: array<vec4<f32>, 8>;
            var u0: array<vec4<f32>, 8>;
            var u1: array<vec4<f32>, 8>;
            if (NPI > 1u) {
                w1 = decode_block32((wo1 + k) >> 5u);
            }
            if (SWIGLU != 0u) {
                u0 = decode_block32((wo0 + up + k) >> 5u);
                if (NPI > 1u) {
                    u1 = decode_block32((wo1 + up + k) >> 5u);
                }
            }
            for (var i = 0u; i < nr; i++) {
                let xo = xr[i] + k;
                var a = vec2<f32>(0.0);
                var b = vec2<f32>(0.0);
                // With 8 lanes or more (CPU drivers), all invocations read
                // the same 32 inputs of a row: lane l loads quad l (mod 8)
                // and the subgroup passes the 8 round, as in the matvec.
                var xs8: array<vec4<f32>, 8>;
                if (LANES >= 8u) {
                    xs8 = lanes_all8(x_quad((xo >> 2u) + lid % 8u));
                }
                for (var j = 0u; j < 8u; j++) {
                    var xv: vec4<f32>;
                    if (LANES >= 8u) {
                        xv = xs8[j];
                    } else {
                        xv = x_quad((xo >> 2u) + j);
                    }
                    a.x += dot(w0[j], xv);
                    if (NPI > 1u) {
                        a.y += dot(w1[j], xv);
                    }
                    if (SWIGLU != 0u) {
                        b.x += dot(u0[j], xv);
                        if (NPI > 1u) {
                            b.y += dot(u1[j], xv);
                        }
                    }
                }
                acc[i] += a;
                acc_up[i] += b;
            }
        }
    } else {
        for (var k = 0u; k < K; k += 4u) {
            let w0 = load_w4(wo0 + k);
            var w1 = vec4<f32>(0.0);
            var u0 = vec4<f32>(0.0);
            var u1 = vec4<f32>(0.0);
            if (NPI > 1u) {
                w1 = load_w4(wo1 + k);
            }
            if (SWIGLU != 0u) {
                u0 = load_w4(wo0 + up + k);
                if (NPI > 1u) {
                    u1 = load_w4(wo1 + up + k);
                }
            }
            for (var i = 0u; i < nr; i++) {
                let xv = x_quad((xr[i] + k) >> 2u);
                acc[i].x += dot(w0, xv);
                acc_up[i].x += dot(u0, xv);
                if (NPI > 1u) {
                    acc[i].y += dot(w1, xv);
                    acc_up[i].y += dot(u1, xv);
                }
            }
        }
    }
    for (var i = 0u; i < nr; i++) {
        if (n0 < N) {
            epilogue(rs[i], n0, acc[i].x, acc_up[i].x);
        }
        if (NPI > 1u && n0 + 64u < N) {
            epilogue(rs[i], n0 + 64u, acc[i].y, acc_up[i].y);
        }
    }
}

// Grid: x (and z) over groups of 64 * NPI outputs, y over groups of MR rows.
@compute @workgroup_size(64)
fn matmul_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let first = (wg.z * nwg.x + wg.x) * 64u * NPI;
    let r0 = wg.y * MR;
    let rows = step.n_tokens;
    if (first >= N || r0 >= rows) {
        return;
    }
    var rs: array<u32, MR>;
    for (var i = 0u; i < 16u; i++) {
        rs[i] = r0 + i;
    }
    rows_body(lid, first + lid, min(MR, rows - r0), rs, 0u);
}

// MoE prefill on CPU drivers: one expert's rows (up to MR, the group tile)
// per invocation. Grid: x (and z) over groups of 64 * NPI outputs, y over the
// worst-case tile count.
@compute @workgroup_size(64)
fn matmul_rows_grouped(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let first = (wg.z * nwg.x + wg.x) * 64u * NPI;
    let tile = group_tile(wg.y);
    let nr = min(tile.z, MR);
    if (first >= N || nr == 0u) {
        return;
    }
    var rs: array<u32, MR>;
    for (var i = 0u; i < nr; i++) {
        rs[i] = ORDER[tile.y + i];
    }
    rows_body(lid, first + lid, nr, rs, tile.x * EXPERT_STRIDE);
}
