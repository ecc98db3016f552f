// Rotary position embedding and the KV-cache store, shared by rope.wgsl and
// matvec.wgsl's `matvec_rope` (which does this work in its epilogue), so the
// two rotate and store alike.
//
// QKV rows are [q heads | k heads | v heads] of HD each. The cache is a ring
// of CAP slots: for sliding-window models CAP is the window plus one prefill
// chunk (Mistral's rolling buffer), otherwise the whole context. cos/sin come
// from a table computed on the host at load (exact, and it carries any RoPE
// scaling), indexed [position][pair].
override HD: u32 = 2u;
override NH: u32 = 1u;
override NKV: u32 = 1u;
override CAP: u32 = 1u;
// 0: rotate-half pairs (i, i + HD/2) as in HF checkpoints (NeoX style);
// 1: adjacent pairs (2i, 2i + 1), the layout llama.cpp's converter produces.
override STYLE: u32 = 0u;

@group(0) @binding(10) var<storage, read> ROPE_TABLE: array<f32>;   // [position][pair] (cos, sin)
@group(0) @binding(11) var<storage, read_write> KC: array<kv_t>;
@group(0) @binding(12) var<storage, read_write> VC: array<kv_t>;

// The elements (within a head) of rotation pair j.
fn rope_pair(j: u32) -> vec2<u32> {
    if (STYLE == 0u) {
        return vec2<u32>(j, j + HD / 2u);
    }
    return vec2<u32>(2u * j, 2u * j + 1u);
}

// Pair j's values v rotated for position `pos`.
fn rotated(v: vec2<f32>, pos: u32, j: u32) -> vec2<f32> {
    let at = (pos * (HD / 2u) + j) * 2u;
    let c = ROPE_TABLE[at];
    let s = ROPE_TABLE[at + 1u];
    return vec2<f32>(v.x * c - v.y * s, v.y * c + v.x * s);
}

// The first element of KV head `kvh` in cache slot `slot` (KC and VC alike).
fn kv_at(slot: u32, kvh: u32) -> u32 {
    return (slot * NKV + kvh) * HD;
}
