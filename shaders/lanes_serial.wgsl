// lanes.wgsl on devices without subgroups: kernels run with LANES = 1, so a
// run is one invocation, its sum is its own value and the only lane is itself.
fn lanes_sum(v: f32, width: u32) -> f32 {
    return v;
}

fn lanes_sum2(v: vec2<f32>, width: u32) -> vec2<f32> {
    return v;
}

fn lanes_all8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(v, v, v, v, v, v, v, v);
}
