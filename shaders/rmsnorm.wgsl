// RMSNorm: y = w * (x / sqrt(mean(x^2) + eps)), one workgroup per row, f32 math
// (as transformers computes it).
override H: u32 = 1u;
override EPS: f32 = 1e-5;
// 1: normalize only the last row of the chunk and write it to row 0 (the final
// norm before the LM head, when only the next token's logits are needed).
override LAST_ROW: u32 = 0u;

@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> WN: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
// Invocations summed by subgroup shuffles before the workgroup tree
// (lanes.wgsl): 1 without subgroups, else up to the subgroup size.
override LANES: u32 = 1u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var src = wg.x;
    var dst = wg.x;
    if (LAST_ROW != 0u) {
        src = step.n_tokens - 1u;
        dst = 0u;
    } else if (wg.x >= step.n_tokens) {
        return;
    }
    var acc = 0.0;
    for (var k = lid; k < H; k += WG) {
        let v = X[src * H + k];
        acc += v * v;
    }
    acc = lanes_sum(acc, LANES);
    if (LANES < WG) {
        partial[lid] = acc;
        workgroupBarrier();
        for (var s = WG / 2u; s >= LANES; s >>= 1u) {
            if (lid < s) {
                partial[lid] += partial[lid + s];
            }
            workgroupBarrier();
        }
        acc = partial[0];
    }
    let inv = 1.0 / sqrt(acc / f32(H) + EPS);
    for (var k = lid; k < H; k += WG) {
        Y[dst * H + k] = WN[k] * (X[src * H + k] * inv);
    }
}
