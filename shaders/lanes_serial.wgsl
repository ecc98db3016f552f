// lanes.wgsl's sums on devices without subgroups: kernels run with LANES = 1,
// so a run is one invocation and its sum is its own value.
fn lanes_sum(v: f32, width: u32) -> f32 {
    return v;
}

fn lanes_sum2(v: vec2<f32>, width: u32) -> vec2<f32> {
    return v;
}
