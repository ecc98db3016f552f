// matvec: a few outputs per workgroup, each reduced over its invocations by
// subgroup shuffles and/or in workgroup memory (one invocation per output on
// CPU drivers); weights read four, or a block, at a time. After linear.wgsl
// (shapes, epilogue) and, for `matvec_rope`, rotary.wgsl.
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
const WG: u32 = 64u;
// matvec: ROWS outputs per workgroup, WG / ROWS invocations per output. Fewer,
// fuller workgroups and shorter reductions suit short rows (and CPU drivers).
override ROWS: u32 = 1u;
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
                    mine *= norm_w4((k0 >> 2u) + lane);
                }
                xs8 = lanes_all8(mine);
            } else if (k < K) {
                for (var i = 0u; i < 8u; i++) {
                    xs8[i] = X4[((xoff + k) >> 2u) + i];
                    if (NORM != 0u) {
                        sq += dot(xs8[i], xs8[i]);
                        xs8[i] *= norm_w4((k >> 2u) + i);
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
                xv *= norm_w4(k >> 2u);
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
                xv *= norm_w4(k >> 2u)[k & 3u];
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
        expert_off = expert_id(r) * EXPERT_STRIDE;
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
// are not written to Y. ROWS == WG, K % 4 == 0 or not, as matvec. The
// rotation, its table and the cache come from rotary.wgsl, prepended.

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
        v += vec2<f32>(bias(n + e.x), bias(n + e.y));
    }
    let pos = step.start_pos + r;
    let slot = pos % CAP;
    if (head < NH + NKV) {
        v = rotated(v, pos, j);
    }
    if (head < NH) {
        let row = r * select(N, N_ALL, N_ALL != 0u) + n;
        Y[row + e.x] = v.x;
        Y[row + e.y] = v.y;
    } else if (head < NH + NKV) {
        let kv = kv_at(slot, head - NH);
        KC[kv + e.x] = kv_t(v.x);
        KC[kv + e.y] = kv_t(v.y);
    } else {
        let kv = kv_at(slot, head - NH - NKV);
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

