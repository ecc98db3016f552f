// Rotary position embedding on the fused QKV rows, fused with the KV-cache store
// (the rotation, the table and the cache: rotary.wgsl, prepended).
//
// Each invocation handles one rotation pair of q or k, or one element of v;
// rotated k and v go into the cache slot of their position.
//
// `qk_norm` (Qwen3) first normalizes each q and k head (RMSNorm over HD, see
// below), then rotates and stores the same way.
@group(0) @binding(1) var<storage, read_write> QKV: array<f32>;

// Rotate pair `j` (values a, b) of `head`, whose row starts at QKV[base]: q
// heads in place, k heads into their cache slot.
fn rotate_store(head: u32, base: u32, j: u32, a: f32, b: f32, pos: u32, slot: u32) {
    let p = rope_pair(j);
    let r = rotated(vec2<f32>(a, b), pos, j);
    if (head < NH) {
        QKV[base + p.x] = r.x;
        QKV[base + p.y] = r.y;
    } else {
        let kv = kv_at(slot, head - NH);
        KC[kv + p.x] = kv_t(r.x);
        KC[kv + p.y] = kv_t(r.y);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    if (t >= step.n_tokens) {
        return;
    }
    let half = HD / 2u;
    let stride = (NH + 2u * NKV) * HD;
    let pos = step.start_pos + t;
    let slot = pos % CAP;
    let row = t * stride;
    let i = gid.x;
    let n_rot = (NH + NKV) * half;
    if (i < n_rot) {
        let head = i / half;
        let j = i % half;
        let p = rope_pair(j);
        let base = row + head * HD;
        let a = QKV[base + p.x];
        let b = QKV[base + p.y];
        rotate_store(head, base, j, a, b, pos, slot);
    } else if (i < n_rot + NKV * HD) {
        let e = i - n_rot;
        VC[kv_at(slot, 0u) + e] = kv_t(QKV[row + (NH + NKV) * HD + e]);
    }
}

// qk_norm: Qwen3's q_norm / k_norm, an RMSNorm over each q and each k head
// (weights NW = [q_norm | k_norm], HD each, shared by all heads) applied before
// the rotation, as transformers and llama.cpp do. One workgroup per head of a
// row (q heads, k heads, then v heads, which are only stored): a head's sum of
// squares needs all of it, which `main`'s invocation per pair does not see.
override EPS: f32 = 1e-6;

@group(0) @binding(5) var<storage, read> NW: array<f32>;

const WG: u32 = 64u;
var<workgroup> head_x: array<f32, 256>;   // HD <= 256 (checked when the config is read)
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn qk_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.y;
    let head = wg.x;
    if (t >= step.n_tokens || head >= NH + 2u * NKV) {
        return;
    }
    let pos = step.start_pos + t;
    let slot = pos % CAP;
    let base = t * (NH + 2u * NKV) * HD + head * HD;
    if (head >= NH + NKV) {
        let kv = kv_at(slot, head - NH - NKV);
        for (var e = lid; e < HD; e += WG) {
            VC[kv + e] = kv_t(QKV[base + e]);
        }
        return;
    }
    // The head is read once into workgroup memory: its rotated values are
    // written back in place, over elements other invocations still read.
    var acc = 0.0;
    for (var e = lid; e < HD; e += WG) {
        let x = QKV[base + e];
        head_x[e] = x;
        acc += x * x;
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(HD) + EPS);
    let w0 = select(0u, HD, head >= NH);
    for (var j = lid; j < HD / 2u; j += WG) {
        let p = rope_pair(j);
        let a = NW[w0 + p.x] * (head_x[p.x] * inv);
        let b = NW[w0 + p.y] * (head_x[p.y] * inv);
        rotate_store(head, base, j, a, b, pos, slot);
    }
}
