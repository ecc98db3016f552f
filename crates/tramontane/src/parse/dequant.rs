//! CPU dequantization of GGML block formats: the reference the GPU kernels are
//! tested against, and the path for the few tensors kept in f32 on the GPU
//! (norms, biases). Layouts follow ggml's `dequantize_row_*`.

use half::{bf16, f16};

use super::DType;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (
            ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4)) as f32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32,
        )
    }
}

/// ggml's `kvalues_iq4nl`: the 16 levels an IQ4_NL / IQ4_XS nibble indexes.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Scale `k` (0..16) of a q3_K super-block, 6 bits minus 32: low 4 bits from
/// `sc[k % 8]` (low nibble for k < 8, high after), high 2 bits from byte
/// `8 + k % 4` (bits 2 (k / 4) ..).
fn scale_q3k(k: usize, sc: &[u8]) -> f32 {
    let lo = (sc[k % 8] >> (4 * (k / 8))) & 0xf;
    let hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    (lo | (hi << 4)) as i32 as f32 - 32.0
}

/// Dequantize `bytes` (a whole number of blocks of `dtype`) to f32.
pub fn dequantize(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let (be, bb) = dtype.block();
    let (be, bb) = (be as usize, bb as usize);
    let blocks = bytes.len() / bb;
    let mut out = Vec::with_capacity(blocks * be);
    match dtype {
        DType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        DType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        DType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => {}
    }
    if !dtype.is_quantized() {
        return out;
    }
    for b in bytes.chunks_exact(bb) {
        match dtype {
            DType::Q4_0 | DType::Q4_1 => {
                let d = f16_at(b, 0);
                let (m, qs) = if dtype == DType::Q4_1 { (f16_at(b, 2), &b[4..20]) } else { (0.0, &b[2..18]) };
                let off = if dtype == DType::Q4_1 { 0.0 } else { -8.0 };
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    blk[j] = ((qs[j] & 0xf) as f32 + off) * d + m;
                    blk[j + 16] = ((qs[j] >> 4) as f32 + off) * d + m;
                }
                out.extend(blk);
            }
            DType::Q5_0 | DType::Q5_1 => {
                let q51 = dtype == DType::Q5_1;
                let d = f16_at(b, 0);
                let m = if q51 { f16_at(b, 2) } else { 0.0 };
                let hb = if q51 { 4 } else { 2 };
                let qh = u32::from_le_bytes([b[hb], b[hb + 1], b[hb + 2], b[hb + 3]]);
                let qs = &b[hb + 4..hb + 20];
                let off = if q51 { 0.0 } else { -16.0 };
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    let lo = (qs[j] & 0xf) as u32 | (((qh >> j) & 1) << 4);
                    let hi = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
                    blk[j] = (lo as f32 + off) * d + m;
                    blk[j + 16] = (hi as f32 + off) * d + m;
                }
                out.extend(blk);
            }
            DType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            DType::Q4K | DType::Q5K => {
                let d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                let scales = &b[4..16];
                let five = dtype == DType::Q5K;
                let (qh, qs) = if five { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                for c in 0..4 {
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
                    for l in 0..32 {
                        let h = if five { ((qh[l] >> (2 * c)) & 1) as u32 * 16 } else { 0 };
                        out.push(d1 * ((qs[c * 32 + l] & 0xf) as u32 + h) as f32 - m1);
                    }
                    for l in 0..32 {
                        let h = if five { ((qh[l] >> (2 * c + 1)) & 1) as u32 * 16 } else { 0 };
                        out.push(d2 * ((qs[c * 32 + l] >> 4) as u32 + h) as f32 - m2);
                    }
                }
            }
            DType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                for n in 0..2 {
                    let mut blk = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let (a, c, h) = (ql[n * 64 + l], ql[n * 64 + l + 32], qh[n * 32 + l]);
                        let s = |k: usize| sc[n * 8 + is + k] as i8 as f32;
                        blk[l] = d * s(0) * (((a & 0xf) | ((h & 3) << 4)) as i32 - 32) as f32;
                        blk[l + 32] = d * s(2) * (((c & 0xf) | (((h >> 2) & 3) << 4)) as i32 - 32) as f32;
                        blk[l + 64] = d * s(4) * (((a >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32) as f32;
                        blk[l + 96] = d * s(6) * (((c >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32) as f32;
                    }
                    out.extend(blk);
                }
            }
            DType::Q2K => {
                // scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin.
                // Each 128-weight half reads its 32 bytes four times, two bits
                // further each time; 16 weights per scale.
                let (sc, qs) = (&b[0..16], &b[16..80]);
                let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
                for n in 0..2 {
                    for shift in 0..4 {
                        for half in 0..2 {
                            let s = sc[n * 8 + shift * 2 + half];
                            let (dl, ml) = (d * (s & 0xf) as f32, dmin * (s >> 4) as f32);
                            for l in 0..16 {
                                let q = (qs[n * 32 + half * 16 + l] >> (2 * shift)) & 3;
                                out.push(dl * q as f32 - ml);
                            }
                        }
                    }
                }
            }
            DType::Q3K => {
                // hmask[32], qs[64], scales[12], d: 2 low bits as in q2_K, the
                // third from hmask (bit 4n + shift; a clear bit subtracts 4).
                let (hm, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
                let d = f16_at(b, 108);
                for n in 0..2 {
                    for shift in 0..4 {
                        for half in 0..2 {
                            let dl = d * scale_q3k(n * 8 + shift * 2 + half, sc);
                            for l in half * 16..half * 16 + 16 {
                                let lo = ((qs[n * 32 + l] >> (2 * shift)) & 3) as i32;
                                let h = if hm[l] & (1 << (4 * n + shift)) != 0 { 0 } else { 4 };
                                out.push(dl * (lo - h) as f32);
                            }
                        }
                    }
                }
            }
            DType::IQ4NL => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                let mut blk = [0f32; 32];
                for j in 0..16 {
                    blk[j] = d * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                    blk[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
                out.extend(blk);
            }
            DType::IQ4XS => {
                // d, scales_h (u16), scales_l[4], qs[128]: eight IQ4_NL-like
                // 32-weight sub-blocks with 6-bit scales (minus 32).
                let d = f16_at(b, 0);
                let sh = u16::from_le_bytes([b[2], b[3]]) as u32;
                let (sl, qs) = (&b[4..8], &b[8..136]);
                for ib in 0..8 {
                    let ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xf) as u32 | (((sh >> (2 * ib)) & 3) << 4);
                    let dl = d * (ls as i32 - 32) as f32;
                    let q = &qs[ib * 16..ib * 16 + 16];
                    let mut blk = [0f32; 32];
                    for j in 0..16 {
                        blk[j] = dl * KVALUES_IQ4NL[(q[j] & 0xf) as usize] as f32;
                        blk[j + 16] = dl * KVALUES_IQ4NL[(q[j] >> 4) as usize] as f32;
                    }
                    out.extend(blk);
                }
            }
            DType::F32 | DType::F16 | DType::BF16 => {}
        }
    }
    out
}
