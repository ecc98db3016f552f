// Subgroup shuffles between neighbouring invocations ("lanes"), prepended to
// the matvec, RMSNorm and attention kernels on devices with subgroups (wgpu's SUBGROUP
// feature natively, WebGPU's `subgroups` in browsers, where `enable
// subgroups;` goes first):
//   - lanes_sum: sums over runs of lanes. The kernels' workgroup-memory tree
//     then starts at runs of LANES sums instead of single values, so a run as
//     wide as an output's invocations needs no barrier at all.
//   - lanes_all8: the values of lanes 0 .. 8, so that lanes which all need the
//     same inputs (the CPU drivers' matvec and matmul_rows, attend_rows' K and
//     V rows) load a share each and pass them round.
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

// `v` of each of lanes 0 .. 8 (the subgroup holds at least 8): broadcasts from
// constant lanes, which a CPU driver can turn into register moves.
fn lanes_all8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u));
}
