// The RMSNorm weights of a matvec that normalizes its input first (NORM, see
// matvec.wgsl), four at a time: declared only where a dispatch binds them
// (kernels.rs takes the part above the `absent` line, or the part below).
@group(0) @binding(9) var<storage, read> NORM_W: array<vec4<f32>>;
fn norm_w4(i: u32) -> vec4<f32> {
    return NORM_W[i];
}
// ---- absent ----
fn norm_w4(i: u32) -> vec4<f32> {
    return vec4<f32>(1.0);
}
