// Where matmul_rows.wgsl reads its input quads on lavapipe: a copy
// of the X buffer in a 2-D rgba32uint texture, quad i at texel
// (i % TEXTURE_WIDTH, i / TEXTURE_WIDTH), made before the dispatch (Gpu::input_texture). As for
// the weights (weights_in_texture.wgsl), that driver runs a texel fetch as one
// branch-free gather and a storage-buffer load as a branch per SIMD lane and
// component; the lanes' shared input loads are then cheap.
@group(0) @binding(10) var X_TEX: texture_2d<u32>;

fn x_quad(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(X_TEX, vec2<u32>(i % TEXTURE_WIDTH, i / TEXTURE_WIDTH), 0));
}
