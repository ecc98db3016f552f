// Subgroup shuffles between neighbouring invocations ("lanes"), prepended to
// the matvec and RMSNorm kernels on devices with subgroups (wgpu's SUBGROUP
// feature natively, WebGPU's `subgroups` in browsers, where `enable
// subgroups;` goes first):
//   - lanes_sum: sums over runs of lanes. The kernels' workgroup-memory tree
//     then starts at runs of LANES sums instead of single values, so a run as
//     wide as an output's invocations needs no barrier at all.
//   - lanes_get4: another lane's value, so that lanes which all need the same
//     inputs (the CPU drivers' matvec) load a share each and pass them round.
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

// `v` of subgroup lane `lane` (below the smallest subgroup size).
fn lanes_get4(v: vec4<f32>, lane: u32) -> vec4<f32> {
    return subgroupShuffle(v, lane);
}
