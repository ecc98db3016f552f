// Sums over runs of neighbouring invocations ("lanes") by subgroup shuffles,
// prepended to the kernels that reduce (matvec, RMSNorm) on devices with
// subgroups (wgpu's SUBGROUP feature natively, WebGPU's `subgroups` in
// browsers, where `enable subgroups;` goes first). Those kernels' workgroup
// memory tree then starts at runs of LANES sums instead of single values, so
// a run as wide as an output's invocations needs no barrier at all.
// Devices without subgroups get lanes_serial.wgsl and LANES = 1.
//
// A run is `width` invocations (a power of two, at most the adapter's
// smallest subgroup size) whose local_invocation_index differ only in their
// low bits; every lane of a run gets the run's sum. This relies on subgroup
// lanes following local_invocation_index (lane = index mod subgroup size) in
// a one-dimensional workgroup: WebGPU does not promise it, every driver we
// know does so, and the kernel tests (native) and the browser's subgroup test
// check it wherever they run.
fn lanes_sum(v: f32, width: u32) -> f32 {
    var s = v;
    for (var o = width >> 1u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}

fn lanes_sum2(v: vec2<f32>, width: u32) -> vec2<f32> {
    var s = v;
    for (var o = width >> 1u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}
