// matmul: prefill on GPUs (after linear.wgsl: shapes, epilogue, tile table).
//
// matmul tiles: 32 rows x 32 outputs per workgroup, K in steps of 16; each
// invocation computes a 4x4 block of outputs, so every value staged in
// workgroup memory feeds four multiply-adds and barriers are few.
const TM: u32 = 32u;
const TN: u32 = 32u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 512>;   // [TM][TK]
var<workgroup> ws: array<f32, 512>;   // [TN][TK]
var<workgroup> us: array<f32, 512>;   // [TN][TK], up half for SwiGLU

// Stage 4 weights of output `row` from k, of the block at `woff` (an expert's).
fn stage_w(woff: u32, row: u32, k: u32, at: u32, up: bool) {
    var v = vec4<f32>(0.0);
    if (row < N && k < K) {
        let base = woff + select(0u, N * K, up) + row * K + k;
        if (QUAD != 0u) {
            v = load_w4(base);
        } else {
            for (var c = 0u; c < 4u; c++) {
                if (k + c < K) {
                    v[c] = load_w(base + c);
                }
            }
        }
    }
    if (up) {
        us[at] = v.x; us[at + 1u] = v.y; us[at + 2u] = v.z; us[at + 3u] = v.w;
    } else {
        ws[at] = v.x; ws[at + 1u] = v.y; ws[at + 2u] = v.z; ws[at + 3u] = v.w;
    }
}

// The output row of each of a tile's rows, set by the entry point before
// `tile_body` (consecutive rows for dense layers, one expert's rows for MoE).
var<workgroup> tile_rows: array<u32, 32>;

// One tile: outputs n0 .. n0 + TN of rows tile_rows[0 .. nr), weights from the
// block at `woff`. Called in uniform control flow (it has barriers).
fn tile_body(lid: u32, n0: u32, nr: u32, woff: u32) {
    let tr = (lid >> 3u) * 4u;   // first of this invocation's 4 rows in the tile
    let tc = (lid & 7u) * 4u;    // first of its 4 outputs
    var acc: array<f32, 16>;
    var acc_up: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 += TK) {
        for (var i = 0u; i < 8u; i++) {
            let e = lid + 64u * i;
            let m = e >> 4u;
            let k = k0 + (e & 15u);
            var xv = 0.0;
            if (m < nr && k < K) {
                xv = X[x_row(tile_rows[m]) * K + k];
            }
            xs[e] = xv;
        }
        for (var i = 0u; i < 2u; i++) {
            let q = lid + 64u * i;
            let r = q >> 2u;
            let c = (q & 3u) * 4u;
            stage_w(woff, n0 + r, k0 + c, r * TK + c, false);
            if (SWIGLU != 0u) {
                stage_w(woff, n0 + r, k0 + c, r * TK + c, true);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let xv = vec4<f32>(xs[tr * TK + kk], xs[(tr + 1u) * TK + kk], xs[(tr + 2u) * TK + kk], xs[(tr + 3u) * TK + kk]);
            let wv = vec4<f32>(ws[tc * TK + kk], ws[(tc + 1u) * TK + kk], ws[(tc + 2u) * TK + kk], ws[(tc + 3u) * TK + kk]);
            for (var a = 0u; a < 4u; a++) {
                acc[a * 4u] += xv[a] * wv.x;
                acc[a * 4u + 1u] += xv[a] * wv.y;
                acc[a * 4u + 2u] += xv[a] * wv.z;
                acc[a * 4u + 3u] += xv[a] * wv.w;
            }
            if (SWIGLU != 0u) {
                let uv = vec4<f32>(us[tc * TK + kk], us[(tc + 1u) * TK + kk], us[(tc + 2u) * TK + kk], us[(tc + 3u) * TK + kk]);
                for (var a = 0u; a < 4u; a++) {
                    acc_up[a * 4u] += xv[a] * uv.x;
                    acc_up[a * 4u + 1u] += xv[a] * uv.y;
                    acc_up[a * 4u + 2u] += xv[a] * uv.z;
                    acc_up[a * 4u + 3u] += xv[a] * uv.w;
                }
            }
        }
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            let n = n0 + tc + b;
            if (tr + a < nr && n < N) {
                epilogue(tile_rows[tr + a], n, acc[a * 4u + b], acc_up[a * 4u + b]);
            }
        }
    }
}

// Dense rows (SLOTS = 1). Grid: x (and z) over output tiles, y over row tiles.
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let rows = step.n_tokens;
    let m0 = wg.y * TM;
    let n0 = (wg.z * nwg.x + wg.x) * TN;
    if (m0 >= rows || n0 >= N) {
        return;
    }
    if (lid < TM) {
        tile_rows[lid] = m0 + lid;
    }
    workgroupBarrier();
    tile_body(lid, n0, min(TM, rows - m0), 0u);
}

// MoE prefill on GPUs: one expert's rows (up to 32) per tile. Grid: x (and z)
// over output tiles, y over the worst-case tile count.
@compute @workgroup_size(64)
fn matmul_grouped(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let tile = group_tile(wg.y);
    let n0 = (wg.z * nwg.x + wg.x) * TN;
    if (tile.z == 0u || n0 >= N) {
        return;
    }
    let nr = min(tile.z, TM);
    if (lid < nr) {
        tile_rows[lid] = ORDER[tile.y + lid];
    }
    workgroupBarrier();
    tile_body(lid, n0, nr, tile.x * EXPERT_STRIDE);
}

