// Rotary position embedding on the fused QKV rows, fused with the KV-cache store.
//
// QKV rows are [q heads | k heads | v heads] of HD each. Each invocation handles
// one rotation pair of q or k, or one element of v; rotated k and v go into the
// cache slot of their position. The cache is a ring of CAP slots: for
// sliding-window models CAP is the window plus one prefill chunk (Mistral's
// rolling buffer), otherwise the whole context.
// cos/sin come from a table computed on the host at load (exact, and it carries
// any RoPE scaling), indexed [position][pair].
//
// `qk_norm` (Qwen3) first normalizes each q and k head (RMSNorm over HD, see
// below), then rotates and stores the same way.
override HD: u32 = 2u;
override NH: u32 = 1u;
override NKV: u32 = 1u;
override CAP: u32 = 1u;
// 0: rotate-half pairs (i, i + HD/2) as in HF checkpoints (NeoX style);
// 1: adjacent pairs (2i, 2i + 1), the layout llama.cpp's converter produces.
override STYLE: u32 = 0u;

@group(0) @binding(1) var<storage, read_write> QKV: array<f32>;
@group(0) @binding(2) var<storage, read> TABLE: array<f32>;
@group(0) @binding(3) var<storage, read_write> KC: array<kv_t>;
@group(0) @binding(4) var<storage, read_write> VC: array<kv_t>;

fn pair(j: u32) -> vec2<u32> {
    if (STYLE == 0u) {
        return vec2<u32>(j, j + HD / 2u);
    }
    return vec2<u32>(2u * j, 2u * j + 1u);
}

// Rotate pair `j` (values a, b) of `head`, whose row starts at QKV[base]: q
// heads in place, k heads into their cache slot.
fn rotate_store(head: u32, base: u32, j: u32, a: f32, b: f32, pos: u32, slot: u32) {
    let half = HD / 2u;
    let p = pair(j);
    let c = TABLE[(pos * half + j) * 2u];
    let s = TABLE[(pos * half + j) * 2u + 1u];
    let ra = a * c - b * s;
    let rb = b * c + a * s;
    if (head < NH) {
        QKV[base + p.x] = ra;
        QKV[base + p.y] = rb;
    } else {
        let kv = (slot * NKV + (head - NH)) * HD;
        KC[kv + p.x] = kv_t(ra);
        KC[kv + p.y] = kv_t(rb);
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
        let p = pair(j);
        let base = row + head * HD;
        let a = QKV[base + p.x];
        let b = QKV[base + p.y];
        rotate_store(head, base, j, a, b, pos, slot);
    } else if (i < n_rot + NKV * HD) {
        let e = i - n_rot;
        VC[slot * NKV * HD + e] = kv_t(QKV[row + (NH + NKV) * HD + e]);
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
        let kv = (slot * NKV + (head - NH - NKV)) * HD;
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
        let p = pair(j);
        let a = NW[w0 + p.x] * (head_x[p.x] * inv);
        let b = NW[w0 + p.y] * (head_x[p.y] * inv);
        rotate_store(head, base, j, a, b, pos, slot);
    }
}
