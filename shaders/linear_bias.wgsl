// A linear layer's bias (HAS_BIAS): declared only where a dispatch binds one.
// kernels.rs prepends the part above the `absent` line to the modules of
// dispatches with a bias, the part below it to the others, so those declare
// no B and bind nothing in its place.
@group(0) @binding(4) var<storage, read> B: array<f32>;
fn bias(n: u32) -> f32 {
    return B[n];
}
// ---- absent ----
fn bias(n: u32) -> f32 {
    return 0.0;
}
