// Embedding gather: Y[t, :] = W[IDS[t], :], dequantized to f32.
override H: u32 = 1u;

// Binding 1, the weights: a prelude's (weights.wgsl's `w_quad`).
@group(0) @binding(2) var<storage, read> IDS: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
// A vocabulary split into slabs (see upload/): this dispatch holds rows
// SLAB.x .. SLAB.x + SLAB.y and writes only the tokens that fall there.
@group(0) @binding(4) var<uniform> SLAB: vec4<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let j = gid.x;
    if (t >= step.n_tokens || j >= H) {
        return;
    }
    let id = IDS[t];
    if (id < SLAB.x || id - SLAB.x >= SLAB.y) {
        return;
    }
    Y[t * H + j] = load_w((id - SLAB.x) * H + j);
}
