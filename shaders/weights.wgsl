// Prelude for kernels that read a weight tensor `W` (declared by the kernel).
//
// Weights are bound as raw u32 words, so one kernel serves every storage type and
// no device needs `shader-f16`: f16 and bf16 values are unpacked from their word
// here. WTYPE is a pipeline-overridable constant, so each specialization compiles
// to a single branch.
override WTYPE: u32 = 0u; // 0 = f32, 1 = f16, 2 = bf16

fn load_w(i: u32) -> f32 {
    if (WTYPE == 0u) {
        return bitcast<f32>(W[i]);
    }
    let word = W[i >> 1u];
    let bits = (word >> ((i & 1u) << 4u)) & 0xffffu;
    if (WTYPE == 1u) {
        return unpack2x16float(bits).x;
    }
    return bitcast<f32>(bits << 16u);
}
