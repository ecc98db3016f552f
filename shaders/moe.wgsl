// Sparse mixture-of-experts: routing and the weighted sum of the chosen experts.
//
// route:   router logits [rows, E] -> softmax (f32) -> top-k experts (ties go to
//          the lower index) -> weights renormalized over the k chosen (Mixtral),
//          one invocation per row. The expert FFNs then run through matmul.wgsl's
//          matvec with MOE=1, reading only these experts' weights.
// combine: Y[t] += sum_s weight[t, s] * expert_out[t, s]   (the residual add)
override E: u32 = 1u;        // experts, at most 128
override TOPK: u32 = 1u;
override NORM_TOPK: u32 = 1u;
override H: u32 = 1u;

@group(0) @binding(1) var<storage, read> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDS: array<u32>;
@group(0) @binding(3) var<storage, read_write> WTS: array<f32>;

@compute @workgroup_size(64)
fn route(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= step.n_tokens) {
        return;
    }
    var p: array<f32, 128>;
    var mx = -3.0e38;
    for (var e = 0u; e < E; e++) {
        mx = max(mx, LOGITS[t * E + e]);
    }
    var sum = 0.0;
    for (var e = 0u; e < E; e++) {
        p[e] = exp(LOGITS[t * E + e] - mx);
        sum += p[e];
    }
    var picked = 0.0;
    for (var s = 0u; s < TOPK; s++) {
        var best = 0u;
        var bv = -1.0;
        for (var e = 0u; e < E; e++) {
            if (p[e] > bv) {
                bv = p[e];
                best = e;
            }
        }
        let w = bv / sum;
        IDS[t * TOPK + s] = best;
        WTS[t * TOPK + s] = w;
        picked += w;
        p[best] = -2.0;   // below any probability: not picked again
    }
    if (NORM_TOPK != 0u) {
        for (var s = 0u; s < TOPK; s++) {
            WTS[t * TOPK + s] = WTS[t * TOPK + s] / picked;
        }
    }
}

@group(0) @binding(4) var<storage, read> EOUT: array<f32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(64)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let j = gid.x;
    if (t >= step.n_tokens || j >= H) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < TOPK; s++) {
        acc += WTS[t * TOPK + s] * EOUT[(t * TOPK + s) * H + j];
    }
    Y[t * H + j] += acc;
}
