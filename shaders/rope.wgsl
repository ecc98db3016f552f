// Rotary position embedding on the fused QKV rows, fused with the KV-cache store.
//
// QKV rows are [q heads | k heads | v heads] of HD each. Each invocation handles
// one rotation pair of q or k, or one element of v; rotated k and v go into the
// cache slot of their position. The cache is a ring of CAP slots: for
// sliding-window models CAP is the window plus one prefill chunk (Mistral's
// rolling buffer), otherwise the whole context.
// cos/sin come from a table computed on the host at load (exact, and it carries
// any RoPE scaling), indexed [position][pair].
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
    } else if (i < n_rot + NKV * HD) {
        let e = i - n_rot;
        VC[slot * NKV * HD + e] = kv_t(QKV[row + (NH + NKV) * HD + e]);
    }
}
