// matmul_rows: prefill on CPU drivers (after linear.wgsl: shapes, epilogue,
// tile table; inputs_in_*.wgsl: `x_quad`).
//
// matmul_rows (K % 4 == 0 only): MR rows per invocation, a host constant
// (kernels.rs writes linear.rs's MR) so that it sizes the arrays below.

// Outputs n0 and, with NPI = 2, n0 + 64 (NPI is at most 2 here) for rows
// rs[0 .. nr) (nr <= MR), weights from the block at `woff`: each input value
// loaded feeds both outputs' weights. An output past N computes row N - 1's
// dot again and is not written, so that every invocation of a workgroup
// walks the same loops (the lanes' broadcasts need uniform control flow).
// The two outputs are written out by name, not as an array indexed by a loop
// over NPI: with K-quants' longer decoding, that loop stays a loop on
// lavapipe and its arrays go to memory (Qwen2.5 0.5B prefill 2.6x slower).
fn rows_body(lid: u32, n0: u32, nr: u32, rs: array<u32, MR>, woff: u32) {
    let wo0 = woff + min(n0, N - 1u) * K;
    let wo1 = woff + min(n0 + 64u, N - 1u) * K;
    let up = N * K;
    var acc: array<vec2<f32>, MR>;
    var acc_up: array<vec2<f32>, MR>;
    var xr: array<u32, MR>;
    for (var i = 0u; i < nr; i++) {
        xr[i] = x_row(rs[i]) * K;
    }
    if (BLOCKS != 0u) {
        for (var k = 0u; k < K; k += 32u) {
            let w0 = decode_block32((wo0 + k) >> 5u);
            var w1: array<vec4<f32>, 8>;
            var u0: array<vec4<f32>, 8>;
            var u1: array<vec4<f32>, 8>;
            if (NPI > 1u) {
                w1 = decode_block32((wo1 + k) >> 5u);
            }
            if (SWIGLU != 0u) {
                u0 = decode_block32((wo0 + up + k) >> 5u);
                if (NPI > 1u) {
                    u1 = decode_block32((wo1 + up + k) >> 5u);
                }
            }
            for (var i = 0u; i < nr; i++) {
                let xo = xr[i] + k;
                var a = vec2<f32>(0.0);
                var b = vec2<f32>(0.0);
                // With 8 lanes or more (CPU drivers), all invocations read
                // the same 32 inputs of a row: lane l loads quad l (mod 8)
                // and the subgroup passes the 8 round, as in the matvec.
                var xs8: array<vec4<f32>, 8>;
                if (LANES >= 8u) {
                    xs8 = lanes_all8(x_quad((xo >> 2u) + lid % 8u));
                }
                for (var j = 0u; j < 8u; j++) {
                    var xv: vec4<f32>;
                    if (LANES >= 8u) {
                        xv = xs8[j];
                    } else {
                        xv = x_quad((xo >> 2u) + j);
                    }
                    a.x += dot(w0[j], xv);
                    if (NPI > 1u) {
                        a.y += dot(w1[j], xv);
                    }
                    if (SWIGLU != 0u) {
                        b.x += dot(u0[j], xv);
                        if (NPI > 1u) {
                            b.y += dot(u1[j], xv);
                        }
                    }
                }
                acc[i] += a;
                acc_up[i] += b;
            }
        }
    } else {
        for (var k = 0u; k < K; k += 4u) {
            let w0 = load_w4(wo0 + k);
            var w1 = vec4<f32>(0.0);
            var u0 = vec4<f32>(0.0);
            var u1 = vec4<f32>(0.0);
            if (NPI > 1u) {
                w1 = load_w4(wo1 + k);
            }
            if (SWIGLU != 0u) {
                u0 = load_w4(wo0 + up + k);
                if (NPI > 1u) {
                    u1 = load_w4(wo1 + up + k);
                }
            }
            for (var i = 0u; i < nr; i++) {
                let xv = x_quad((xr[i] + k) >> 2u);
                acc[i].x += dot(w0, xv);
                acc_up[i].x += dot(u0, xv);
                if (NPI > 1u) {
                    acc[i].y += dot(w1, xv);
                    acc_up[i].y += dot(u1, xv);
                }
            }
        }
    }
    for (var i = 0u; i < nr; i++) {
        if (n0 < N) {
            epilogue(rs[i], n0, acc[i].x, acc_up[i].x);
        }
        if (NPI > 1u && n0 + 64u < N) {
            epilogue(rs[i], n0 + 64u, acc[i].y, acc_up[i].y);
        }
    }
}

// Grid: x (and z) over groups of 64 * NPI outputs, y over groups of MR rows.
@compute @workgroup_size(64)
fn matmul_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let first = (wg.z * nwg.x + wg.x) * 64u * NPI;
    let r0 = wg.y * MR;
    let rows = step.n_tokens;
    if (first >= N || r0 >= rows) {
        return;
    }
    var rs: array<u32, MR>;
    for (var i = 0u; i < MR; i++) {
        rs[i] = r0 + i;
    }
    rows_body(lid, first + lid, min(MR, rows - r0), rs, 0u);
}

// MoE prefill on CPU drivers: one expert's rows (up to MR, the group tile)
// per invocation. Grid: x (and z) over groups of 64 * NPI outputs, y over the
// worst-case tile count.
@compute @workgroup_size(64)
fn matmul_rows_grouped(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let first = (wg.z * nwg.x + wg.x) * 64u * NPI;
    let tile = group_tile(wg.y);
    let nr = min(tile.z, MR);
    if (first >= N || nr == 0u) {
        return;
    }
    var rs: array<u32, MR>;
    for (var i = 0u; i < nr; i++) {
        rs[i] = ORDER[tile.y + i];
    }
    rows_body(lid, first + lid, nr, rs, tile.x * EXPERT_STRIDE);
}
