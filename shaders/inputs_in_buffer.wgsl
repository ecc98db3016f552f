// Where matmul_rows.wgsl reads its input quads: the X binding.
fn x_quad(i: u32) -> vec4<f32> {
    return X4[i];
}
