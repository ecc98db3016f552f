// Causal attention with GQA, sliding window and a ring KV cache (online softmax).
//
// attend:  one workgroup per (query head, query row, key split). It walks its
//          split's keys in tiles of 64 (one key per invocation for the scores,
//          then each invocation accumulates its own output dimensions), keeping a
//          running max and sum (online softmax), and writes a partial result
//          (acc[HD], max, sum). Splitting the keys (split-K) keeps a single decode
//          query busy on many workgroups when the context is long.
// combine: merges the partials of each (row, head) into the output.
// attend_rows, attend_scored: CPU drivers' prefill and decode (below).
override HD: u32 = 2u;       // head dim, at most 256
override NH: u32 = 1u;       // query heads
override NKV: u32 = 1u;      // KV heads (NH % NKV == 0)
override CAP: u32 = 1u;      // ring slots in the cache
override WINDOW: u32 = 0u;   // sliding window in keys (including the query's own), 0 = none
override SCALE: f32 = 1.0;   // 1 / sqrt(HD)
// 0: every row sees every key of the pass (0 .. n_tokens), as an image
// encoder's patches see one another; 1: causal (keys up to the row's own).
override CAUSAL: u32 = 1u;

@group(0) @binding(1) var<storage, read> QKV: array<f32>;
@group(0) @binding(2) var<storage, read> KC: array<kv_t>;
@group(0) @binding(3) var<storage, read> VC: array<kv_t>;
// The same buffers read as vec4s (CPU drivers' kernels; HD % 4 == 0 keeps
// every head's slice on a vec4 boundary): one load instruction per four values.
@group(0) @binding(1) var<storage, read> QKV4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> KC4: array<vec4<kv_t>>;
@group(0) @binding(3) var<storage, read> VC4: array<vec4<kv_t>>;
@group(0) @binding(4) var<storage, read_write> PART: array<f32>;
@group(0) @binding(5) var<storage, read_write> OUT: array<f32>;

const WG: u32 = 64u;
const NEG: f32 = -3.0e38;
var<workgroup> qs: array<f32, 256>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn part_base(t: u32, h: u32, s: u32) -> u32 {
    return ((t * NH + h) * step.n_splits + s) * (HD + 2u);
}

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    let split = wg.z;
    if (t >= step.n_tokens || split >= step.n_splits) {
        return;
    }
    let keys = key_range(t, split);
    let k_begin = keys.x;
    let k_end = keys.y;
    let kvh = h / (NH / NKV);
    let stride = (NH + 2u * NKV) * HD;
    for (var d = lid; d < HD; d += WG) {
        qs[d] = QKV[t * stride + h * HD + d];
    }
    workgroupBarrier();

    var m = NEG;
    var l = 0.0;
    var acc: array<f32, 4>;   // this invocation's output dims: lid, lid + 64, ...
    for (var tile = k_begin; tile < k_end; tile += WG) {
        let j = tile + lid;
        var score = NEG;
        if (j < k_end) {
            let kb = ((j % CAP) * NKV + kvh) * HD;
            var dot = 0.0;
            for (var d = 0u; d < HD; d++) {
                dot += qs[d] * f32(KC[kb + d]);
            }
            score = dot * SCALE;
        }
        let m_new = max(m, reduce_max(lid, score));
        var p = 0.0;
        if (j < k_end) {
            p = exp(score - m_new);
        }
        probs[lid] = p;
        let psum = reduce_sum(lid, p);   // its barriers also publish probs[]
        let corr = exp(m - m_new);
        l = l * corr + psum;
        let count = min(WG, k_end - tile);
        for (var i = 0u; i < 4u; i++) {
            let d = lid + i * WG;
            if (d < HD) {
                var a = acc[i] * corr;
                for (var jj = 0u; jj < count; jj++) {
                    let vb = (((tile + jj) % CAP) * NKV + kvh) * HD;
                    a += probs[jj] * f32(VC[vb + d]);
                }
                acc[i] = a;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let base = part_base(t, h, split);
    for (var i = 0u; i < 4u; i++) {
        let d = lid + i * WG;
        if (d < HD) {
            PART[base + d] = acc[i];
        }
    }
    if (lid == 0u) {
        PART[base + HD] = m;
        PART[base + HD + 1u] = l;
    }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    if (t >= step.n_tokens) {
        return;
    }
    var mx = NEG;
    for (var s = 0u; s < step.n_splits; s++) {
        mx = max(mx, PART[part_base(t, h, s) + HD]);
    }
    var den = 0.0;
    for (var s = 0u; s < step.n_splits; s++) {
        let b = part_base(t, h, s);
        den += PART[b + HD + 1u] * exp(PART[b + HD] - mx);
    }
    for (var d = lid; d < HD; d += WG) {
        var num = 0.0;
        for (var s = 0u; s < step.n_splits; s++) {
            let b = part_base(t, h, s);
            num += PART[b + d] * exp(PART[b + HD] - mx);
        }
        OUT[(t * NH + h) * HD + d] = num / den;
    }
}

// attend_rows: `attend` for CPU drivers (lavapipe, SwiftShader), where
// workgroup barriers are costly and a load whose address differs between
// invocations costs one load per SIMD lane. No workgroup memory, no barriers:
// one invocation per (query head, query row, key split), ROWS_PER_GROUP
// consecutive rows of one head per workgroup. A workgroup's rows walk the same
// keys in the same order (the union of their ranges), so every K and V load
// has one address for the whole workgroup; each row masks the keys outside its
// own range. Needs HD % 4 == 0 (HD <= 256). Grid: x heads, y groups of rows,
// z key splits. Writes the same partials as `attend`, for `combine`, or with
// one split the output itself (no `combine`).
const ROWS_PER_GROUP: u32 = 8u;
// Subgroup lanes attend_rows' loads are shared over (lanes.wgsl); 1: none.
override LANES: u32 = 1u;

// Keys [begin, end) of row t in split `split` (as `attend` walks them).
fn key_range(t: u32, split: u32) -> vec2<u32> {
    let pos = step.start_pos + t;
    var lo = 0u;
    if (WINDOW > 0u && pos + 1u > WINDOW) {
        lo = pos + 1u - WINDOW;
    }
    let last = select(step.start_pos + step.n_tokens, pos + 1u, CAUSAL != 0u);
    let begin = lo + split * step.split_len;
    return vec2<u32>(begin, min(begin + step.split_len, last));
}

@compute @workgroup_size(8)
fn attend_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t0 = wg.y * ROWS_PER_GROUP;
    let split = wg.z;
    if (t0 >= step.n_tokens || split >= step.n_splits) {
        return;
    }
    let t_last = min(t0 + ROWS_PER_GROUP, step.n_tokens) - 1u;
    // Rows past the last one repeat it (and are not written), so that every
    // invocation runs the same loop.
    let live = t0 + lid <= t_last;
    let t = min(t0 + lid, t_last);
    let mine = key_range(t, split);
    // Both ends of a row's range grow with the row: the group's walk is from
    // its first row's begin to its last row's end.
    let walk = vec2<u32>(key_range(t0, split).x, key_range(t_last, split).y);
    let kvh = h / (NH / NKV);
    let qb = t * (NH + 2u * NKV) * HD + h * HD;
    var q: array<vec4<f32>, 64>;
    for (var d4 = 0u; d4 < HD / 4u; d4++) {
        q[d4] = QKV4[(qb >> 2u) + d4];
    }
    var m = NEG;
    var l = 0.0;
    var acc: array<vec4<f32>, 64>;
    // With subgroups of 8 lanes or more (the workgroup is one subgroup) and
    // HD % 32 == 0, the lanes share each K and V row's loads: lane l loads
    // quad l of every 8 and the subgroup passes them round (lanes.wgsl), a
    // load per lane where a CPU driver pays for each load on every lane.
    let by_lanes = LANES >= 8u && HD % 32u == 0u;
    let lane = lid % 8u;
    for (var j = walk.x; j < walk.y; j++) {
        let kb = ((j % CAP) * NKV + kvh) * HD;
        var s = 0.0;
        if (by_lanes) {
            for (var g = 0u; g < HD / 32u; g++) {
                let ks = lanes_all8(vec4<f32>(KC4[(kb >> 2u) + 8u * g + lane]));
                for (var i = 0u; i < 8u; i++) {
                    s += dot(q[8u * g + i], ks[i]);
                }
            }
        } else {
            for (var d4 = 0u; d4 < HD / 4u; d4++) {
                s += dot(q[d4], vec4<f32>(KC4[(kb >> 2u) + d4]));
            }
        }
        s *= SCALE;
        // Online softmax, with the keys outside this row's range weighing 0.
        let seen = j >= mine.x && j < mine.y;
        let m_new = select(m, max(m, s), seen);
        let corr = exp(m - m_new);
        let p = select(0.0, exp(s - m_new), seen);
        l = l * corr + p;
        if (by_lanes) {
            for (var g = 0u; g < HD / 32u; g++) {
                let vs = lanes_all8(vec4<f32>(VC4[(kb >> 2u) + 8u * g + lane]));
                for (var i = 0u; i < 8u; i++) {
                    acc[8u * g + i] = acc[8u * g + i] * corr + p * vs[i];
                }
            }
        } else {
            for (var d4 = 0u; d4 < HD / 4u; d4++) {
                acc[d4] = acc[d4] * corr + p * vec4<f32>(VC4[(kb >> 2u) + d4]);
            }
        }
        m = m_new;
    }
    if (!live) {
        return;
    }
    // One split (prefill): the output itself, and no `combine` dispatch.
    if (step.n_splits == 1u) {
        for (var d4 = 0u; d4 < HD / 4u; d4++) {
            for (var c = 0u; c < 4u; c++) {
                OUT[(t * NH + h) * HD + 4u * d4 + c] = acc[d4][c] / l;
            }
        }
        return;
    }
    let base = part_base(t, h, split);
    for (var d4 = 0u; d4 < HD / 4u; d4++) {
        for (var c = 0u; c < 4u; c++) {
            PART[base + 4u * d4 + c] = acc[d4][c];
        }
    }
    PART[base + HD] = m;
    PART[base + HD + 1u] = l;
}

// Decode on CPU drivers (attend_scored): one workgroup of 64 invocations per
// (query head, key split), one barrier and no workgroup memory (a CPU driver
// runs each load once per SIMD lane, so the work is split by which loads each
// invocation needs):
// 1. every invocation scores keys lid, lid + 64, ... of the split: q . k,
//    scaled, into PART after the decode partials (score_at);
// 2. the first DIM_LANES invocations each own output dims 4 lid,
//    4 (lid + DIM_LANES), ... (HD <= 256, HD % 4 == 0): online softmax over
//    the split's scores, one score and one V vec4 load per key. Writes the
//    same partials as `attend`, for `combine`, or with one split the output
//    itself (no `combine`).
// One dispatch rather than one per phase: on lavapipe a dispatch costs
// 40-100 us however small, a barrier a few. PART holds the scores after the
// largest decode partials: NH * MAX_SPLITS * (HD + 2) words
// (forward/sizes.rs sizes it).
override MAX_SPLITS: u32 = 16u;
const DIM_LANES: u32 = 16u;

fn score_at(h: u32, j: u32) -> u32 {
    return NH * MAX_SPLITS * (HD + 2u) + h * CAP + j % CAP;
}

// Phase 1: the scores of keys lid, lid + 64, ... of `keys`.
fn score_keys(h: u32, keys: vec2<u32>, lid: u32) {
    let qb = (h * HD) >> 2u;
    let kvh = h / (NH / NKV);
    for (var j = keys.x + lid; j < keys.y; j += 64u) {
        let kb = (((j % CAP) * NKV + kvh) * HD) >> 2u;
        var s = 0.0;
        for (var d4 = 0u; d4 < HD / 4u; d4++) {
            s += dot(QKV4[qb + d4], vec4<f32>(KC4[kb + d4]));
        }
        PART[score_at(h, j)] = s * SCALE;
    }
}

// This invocation's vec4 of output dims i (clamped to the last one: lanes
// past HD read it again and are not written).
fn v_quad(kb: u32, lid: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(VC4[(kb >> 2u) + min(lid + i * DIM_LANES, HD / 4u - 1u)]);
}

// Grid: x heads, y 1, z key splits.
@compute @workgroup_size(64)
fn attend_scored(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let split = wg.z;
    if (step.n_tokens != 1u || split >= step.n_splits) {
        return;
    }
    let keys = key_range(0u, split);
    score_keys(h, keys, lid);
    storageBarrier();
    if (lid >= DIM_LANES) {
        return;
    }
    let kvh = h / (NH / NKV);
    var m = NEG;
    var l = 0.0;
    // Four named accumulators rather than an array indexed in the loop (which
    // a CPU driver keeps in memory); the ones past HD / (4 DIM_LANES) compile
    // away.
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = keys.x; j < keys.y; j++) {
        let kb = ((j % CAP) * NKV + kvh) * HD;
        let s = PART[score_at(h, j)];
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * corr + p;
        a0 = a0 * corr + p * v_quad(kb, lid, 0u);
        if (HD > 4u * DIM_LANES) {
            a1 = a1 * corr + p * v_quad(kb, lid, 1u);
        }
        if (HD > 8u * DIM_LANES) {
            a2 = a2 * corr + p * v_quad(kb, lid, 2u);
        }
        if (HD > 12u * DIM_LANES) {
            a3 = a3 * corr + p * v_quad(kb, lid, 3u);
        }
        m = m_new;
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    // One split (fewer than 256 keys): the output itself, and no `combine`
    // dispatch (on lavapipe a dispatch costs 40-100 us however small).
    let whole = step.n_splits == 1u;
    let base = part_base(0u, h, split);
    for (var i = 0u; i < 4u; i++) {
        let d4 = lid + i * DIM_LANES;
        if (d4 < HD / 4u) {
            for (var c = 0u; c < 4u; c++) {
                if (whole) {
                    OUT[h * HD + 4u * d4 + c] = acc[i][c] / l;
                } else {
                    PART[base + 4u * d4 + c] = acc[i][c];
                }
            }
        }
    }
    if (lid == 0u && !whole) {
        PART[base + HD] = m;
        PART[base + HD + 1u] = l;
    }
}
