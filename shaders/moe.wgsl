// Sparse mixture-of-experts: routing and the weighted sum of the chosen experts.
//
// route:   router logits [rows, E] -> softmax (f32) -> top-k experts (ties go to
//          the lower index) -> weights renormalized over the k chosen (Mixtral),
//          one invocation per row. In decode the expert FFNs then run through
//          matvec.wgsl's matvec with MOE=1, reading only these experts' weights.
// group:   prefill: the t*k (token, slot) rows sorted by expert (a counting sort
//          in one workgroup) into ORDER, each expert's run cut into tiles of at
//          most GROUP_TILE rows in TILES, for the grouped matmul entries.
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

// TILES[0].x = how many tiles; TILES[1 + j] = (expert, first position in ORDER,
// rows, 0). Each expert's run ends in at most one partial tile, so there are at
// most ceil(t*k / GROUP_TILE) + min(E, t*k) tiles (the host sizes the buffer
// and the matmul grid for that).
override GROUP_TILE: u32 = 32u;
@group(0) @binding(6) var<storage, read_write> ORDER: array<u32>;
@group(0) @binding(7) var<storage, read_write> TILES: array<vec4<u32>>;
var<workgroup> counts: array<atomic<u32>, 128>;
var<workgroup> cursor: array<atomic<u32>, 128>;

@compute @workgroup_size(64)
fn group(@builtin(local_invocation_index) lid: u32) {
    let rows = step.n_tokens * TOPK;
    let per = max(GROUP_TILE, 1u);
    for (var e = lid; e < E; e += 64u) {
        atomicStore(&counts[e], 0u);
    }
    workgroupBarrier();
    for (var r = lid; r < rows; r += 64u) {
        atomicAdd(&counts[min(IDS[r], E - 1u)], 1u);
    }
    workgroupBarrier();
    // Offsets and tiles: E <= 128 steps, cheaper in one invocation than a
    // parallel scan's barriers.
    if (lid == 0u) {
        var at = 0u;
        var tiles = 0u;
        for (var e = 0u; e < E; e++) {
            let c = atomicLoad(&counts[e]);
            atomicStore(&cursor[e], at);
            for (var f = 0u; f < c; f += per) {
                TILES[1u + tiles] = vec4<u32>(e, at + f, min(per, c - f), 0u);
                tiles++;
            }
            at += c;
        }
        TILES[0] = vec4<u32>(tiles, 0u, 0u, 0u);
    }
    workgroupBarrier();
    // Within an expert's run rows land in the atomics' order, which may differ
    // between passes; results do not: a row's sums run over k alike wherever
    // the row sits in its tile.
    for (var r = lid; r < rows; r += 64u) {
        ORDER[atomicAdd(&cursor[min(IDS[r], E - 1u)], 1u)] = r;
    }
}
