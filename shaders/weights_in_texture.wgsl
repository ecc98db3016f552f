// Where weights.wgsl reads its words on lavapipe: a 2-D rgba32uint texture,
// quad i at texel (i % TEXTURE_WIDTH, i / TEXTURE_WIDTH) (Gpu::weight_texture lays the buffer
// out so). lavapipe runs a storage-buffer load as a loop over the SIMD lanes
// with a bounds test and a branch per lane and component, but a texel fetch
// as one branch-free gather: measured on a decode-shaped q4 matvec, the same
// kernel ran 1.6x faster reading its weights this way.
@group(0) @binding(1) var W_TEX: texture_2d<u32>;

fn w_quad(i: u32) -> vec4<u32> {
    return textureLoad(W_TEX, vec2<u32>(i % TEXTURE_WIDTH, i / TEXTURE_WIDTH), 0);
}
