// Where weights.wgsl reads its words: a storage buffer, as vec4s (weight
// buffers are sized in whole 16-byte units). Every device but the native CPU
// drivers (see weights_in_texture.wgsl).
@group(0) @binding(1) var<storage, read> W4: array<vec4<u32>>;

fn w_quad(i: u32) -> vec4<u32> {
    return W4[i];
}
