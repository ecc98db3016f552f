// Token selection on the GPU, so a decode step reads back one token id, not the logits.
//
// One workgroup scans the whole vocabulary:
//  1. penalties (repetition: HF semantics over every token in context; frequency
//     and presence: OpenAI semantics over generated tokens), then temperature;
//     greedy = argmax (ties go to the lower id, like torch.argmax).
//  2. top-k and top-p thresholds found exactly by bisection over the order-preserving
//     u32 keys of the logits (32 counting passes each), no sort needed.
//  3. Gumbel-max over the kept tokens: argmax(logit + Gumbel noise) is an exact
//     sample from softmax(logits); the noise is a counter-based hash of
//     (seed, sample_index, token id), so the same seed gives the same text.
//  4. optionally, log-probabilities of the sampled distribution (after
//     penalties and temperature; for greedy decoding, the model's own).
// With `step.masked` (constrained decoding), only tokens whose bit is set in
// MASK may be drawn: the others get the lowest finite logit before anything
// else looks at them, so greedy, truncation, the draw and the log-probabilities
// all see the constrained distribution (bits are computed on the CPU while the
// forward pass runs; src/constrain).
// The host writes STATE once per request (the prompt's tokens); this kernel
// updates it as tokens are generated.
override V: u32 = 1u;

@group(0) @binding(1) var<storage, read_write> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read_write> STATE: array<u32>; // bit 0: in context; >> 1: generated count
@group(0) @binding(3) var<storage, read_write> IDS: array<u32>;   // next forward's input row 0
@group(0) @binding(4) var<storage, read_write> OUT: array<u32>;   // read back by the host
@group(0) @binding(5) var<storage, read> MASK: array<u32>;        // bit i % 32 of word i / 32: token i allowed

const WG: u32 = 256u;
var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> rc: array<u32, WG>;
var<workgroup> rf: array<f32, WG>;

fn key(f: f32) -> u32 {
    let b = bitcast<u32>(f);
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn penalized(i: u32) -> f32 {
    var l = LOGITS[i];
    let st = STATE[i];
    if ((st & 1u) != 0u && step.repetition_penalty != 1.0) {
        if (l > 0.0) {
            l = l / step.repetition_penalty;
        } else {
            l = l * step.repetition_penalty;
        }
    }
    let count = st >> 1u;
    if (count > 0u) {
        l -= f32(count) * step.frequency_penalty + step.presence_penalty;
    }
    return l;
}

// The lowest finite f32 (its decimal rounds to it; Tint refuses one that
// rounds past it): masked tokens' logit (no infinities: WGSL
// implementations may assume there are none).
const MASKED: f32 = -3.40282346e38;

fn allowed(i: u32) -> bool {
    return step.masked == 0u || ((MASK[i >> 5u] >> (i & 31u)) & 1u) != 0u;
}

// Workgroup argmax of (value, index); ties to the lower index.
fn reduce_argmax(lid: u32, v: f32, i: u32) -> u32 {
    rv[lid] = v;
    ri[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = rv[lid + s];
            let oi = ri[lid + s];
            if (ov > rv[lid] || (ov == rv[lid] && oi < ri[lid])) {
                rv[lid] = ov;
                ri[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = ri[0];
    workgroupBarrier();
    return r;
}

fn reduce_count(lid: u32, c: u32) -> u32 {
    rc[lid] = c;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            rc[lid] += rc[lid + s];
        }
        workgroupBarrier();
    }
    let r = rc[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            rf[lid] += rf[lid + s];
        }
        workgroupBarrier();
    }
    let r = rf[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) lid: u32) {
    let greedy = step.greedy != 0u;
    // 1. penalties and temperature, written back in place; argmax.
    var bv = -3.4e38;
    var bi = 0u;
    for (var i = lid; i < V; i += WG) {
        var l = penalized(i);
        if (!greedy) {
            l = l / step.temperature;
        }
        if (!allowed(i)) {
            l = MASKED;
        }
        LOGITS[i] = l;
        if (l > bv) {
            bv = l;
            bi = i;
        }
    }
    let best = reduce_argmax(lid, bv, bi);
    var token = best;
    if (!greedy) {
        let mx = LOGITS[best];
        // 2a. top-k: the largest key x with count(key >= x) >= k.
        var thr = 0u;
        if (step.top_k > 0u && step.top_k < V) {
            var lo = 0u;
            var hi = 0xffffffffu;
            for (var it = 0u; it < 32u; it++) {
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                var c = 0u;
                for (var i = lid; i < V; i += WG) {
                    c += select(0u, 1u, key(LOGITS[i]) >= mid);
                }
                if (reduce_count(lid, c) >= step.top_k) {
                    lo = mid;
                } else {
                    hi = mid - 1u;
                }
            }
            thr = lo;
        }
        // 2b. top-p over the top-k survivors: the largest key x whose tokens
        //     (key >= x) hold at least top_p of the survivors' probability mass.
        if (step.top_p < 1.0) {
            var z = 0.0;
            for (var i = lid; i < V; i += WG) {
                let l = LOGITS[i];
                if (key(l) >= thr) {
                    z += exp(l - mx);
                }
            }
            let goal = reduce_sum(lid, z) * step.top_p;
            var lo = thr;
            var hi = key(mx);
            for (var it = 0u; it < 32u; it++) {
                let mid = lo + (hi - lo) / 2u + ((hi - lo) & 1u);
                var mass = 0.0;
                for (var i = lid; i < V; i += WG) {
                    let l = LOGITS[i];
                    if (key(l) >= mid) {
                        mass += exp(l - mx);
                    }
                }
                if (reduce_sum(lid, mass) >= goal) {
                    lo = mid;
                } else {
                    hi = mid - 1u;
                }
            }
            thr = lo;
        }
        // 3. Gumbel-max among the survivors.
        let stream = pcg(pcg(step.seed) ^ step.sample_index);
        var gv = -3.4e38;
        var gi = best;
        for (var i = lid; i < V; i += WG) {
            let l = LOGITS[i];
            if (key(l) >= thr && allowed(i)) {
                let u = (f32(pcg(stream ^ pcg(i)) >> 8u) + 0.5) * (1.0 / 16777216.0);
                let g = l - log(-log(u));
                if (g > gv) {
                    gv = g;
                    gi = i;
                }
            }
        }
        token = reduce_argmax(lid, gv, gi);
    }
    if (lid == 0u) {
        STATE[token] = (((STATE[token] >> 1u) + 1u) << 1u) | 1u;
        IDS[0] = token;
        OUT[0] = token;
    }
    // 4. Log-probabilities (only when asked): of the token, and the TOP most
    //    likely tokens, by repeated argmax below the previous pick.
    if (step.logprobs > 0u) {
        let mx = LOGITS[best];
        var z = 0.0;
        for (var i = lid; i < V; i += WG) {
            z += exp(LOGITS[i] - mx);
        }
        let lse = mx + log(reduce_sum(lid, z));
        if (lid == 0u) {
            OUT[1] = bitcast<u32>(LOGITS[token] - lse);
        }
        var pv = 3.4e38;
        var pi = 0u;
        for (var n = 0u; n + 1u < step.logprobs; n++) {
            var cv = -3.4e38;
            var ci = 0xffffffffu;
            for (var i = lid; i < V; i += WG) {
                let l = LOGITS[i];
                if (allowed(i) && (l < pv || (l == pv && i > pi)) && (l > cv || ci == 0xffffffffu)) {
                    cv = l;
                    ci = i;
                }
            }
            if (ci == 0xffffffffu) {
                cv = -3.4e38;
                ci = V;
            }
            let pick = reduce_argmax(lid, cv, ci);
            pv = LOGITS[min(pick, V - 1u)];
            pi = pick;
            if (lid == 0u) {
                OUT[2u + 2u * n] = pick;
                OUT[3u + 2u * n] = bitcast<u32>(pv - lse);
            }
        }
    }
}
