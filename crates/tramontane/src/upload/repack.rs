//! Block types as the GPU holds them.
//!
//! GGML stores each block whole: for the 32-weight types a header (the f16
//! scale d, and q4_1 / q5_1 the offset m), q5's 32 high bits, then the
//! quants; 18, 22 or 34 bytes for some types (q6_K: 210), so a block's 16
//! bytes of quants sit anywhere within a word and a kernel needs five word
//! loads for them. On CPU drivers every load instruction costs a loop over
//! the lanes, so at upload the blocks are regrouped: G blocks at a time (G = 8
//! for 2-byte headers and q6_K, 4 for 4-byte headers), field by field: the G
//! headers (16 bytes), q5's G high-bit words, then each block's quants (q6_K:
//! ql, qh, scales, d). Every field lands on a 16-byte boundary, one
//! `vec4<u32>` load each (shaders/weights.wgsl, `b32_*`, `q6k_*`). A group
//! takes the bytes its G blocks take in the file, so group g starts where
//! block g * G did; a buffer's last group is padded to a whole one with zeros.

use std::collections::BTreeMap;

use crate::parse::DType;

/// How a 32-weight block type is regrouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Bytes of each field of a block, in the file's order.
    fields: &'static [u64],
    /// Blocks per group: enough that each field's region is whole 16 bytes.
    blocks: u64,
}

/// The regrouping of `dtype`, if the kernels read it regrouped.
pub fn packing(dtype: DType) -> Option<Packing> {
    let (fields, blocks): (&'static [u64], u64) = match dtype {
        DType::Q4_0 | DType::IQ4NL => (&[2, 16], 8),
        DType::Q4_1 => (&[4, 16], 4),
        DType::Q5_0 => (&[2, 4, 16], 8),
        DType::Q5_1 => (&[4, 4, 16], 4),
        DType::Q8_0 => (&[2, 32], 8),
        // ql, qh, scales, d: 210 bytes a super-block.
        DType::Q6K => (&[128, 64, 16, 2], 8),
        _ => return None,
    };
    Some(Packing { fields, blocks })
}

impl Packing {
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn block_bytes(&self) -> u64 {
        self.fields.iter().sum()
    }

    pub fn group_bytes(&self) -> u64 {
        self.blocks() * self.block_bytes()
    }

    /// Copy `block` (one block in the file's layout) into `group` (the
    /// regrouped bytes of its group) as block `slot` of it.
    fn place(&self, group: &mut [u8], slot: u64, block: &[u8]) {
        let (mut region, mut from) = (0usize, 0usize);
        for &f in self.fields {
            let (f, at) = (f as usize, region + slot as usize * f as usize);
            group[at..at + f].copy_from_slice(&block[from..from + f]);
            region += self.blocks() as usize * f;
            from += f;
        }
    }
}

/// GPU bytes of `numel` elements of `dtype`: the file's bytes, and for a
/// regrouped type rounded up to whole groups.
pub fn gpu_nbytes(dtype: DType, numel: u64) -> Option<u64> {
    let file = dtype.nbytes(numel)?;
    match packing(dtype) {
        Some(p) => file.div_ceil(p.group_bytes()).checked_mul(p.group_bytes()),
        None => Some(file),
    }
}

/// `bytes` (whole blocks of `dtype` as a file holds them) as a weight buffer
/// holds them on the GPU. The kernel tests build their buffers with it.
pub fn to_gpu(dtype: DType, bytes: &[u8]) -> Vec<u8> {
    let Some(p) = packing(dtype) else { return bytes.to_vec() };
    let mut groups = Groups::default();
    let mut out = vec![0u8; (bytes.len() as u64).div_ceil(p.group_bytes()) as usize * p.group_bytes() as usize];
    for (at, data) in groups.put(0, p, 0, bytes).into_iter().chain(groups.finish().into_iter().map(|(_, at, d)| (at, d))) {
        out[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    out
}

/// Regroups blocks as they stream in, in any order and any run of whole
/// blocks: a group whose blocks all arrive in one run is written at once; a
/// group that arrives in parts (a q / k / v boundary, a shard boundary) waits
/// here, zero-filled, until its last block arrives or `finish`.
#[derive(Default)]
pub(super) struct Groups<K: Ord + Copy = (usize, usize)> {
    pending: BTreeMap<(K, u64), (Vec<u8>, u64)>,
}

impl<K: Ord + Copy> Groups<K> {
    /// Place `data` (whole blocks in the file's layout) as blocks `first ..`
    /// of buffer `key`; returns the writes ready to go: (byte offset, bytes),
    /// neighbouring groups in one write (a write per group would be a
    /// `writeBuffer` call per 80-272 bytes in a browser).
    pub(super) fn put(&mut self, key: K, p: Packing, first: u64, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let (g, bb, gb) = (p.blocks(), p.block_bytes() as usize, p.group_bytes() as usize);
        let n = (data.len() / bb) as u64;
        let mut out = Vec::new();
        let mut b = 0u64;
        while b < n {
            let (group, slot) = ((first + b) / g, (first + b) % g);
            let take = (g - slot).min(n - b);
            let blocks = &data[b as usize * bb..(b + take) as usize * bb];
            if take == g {
                let bytes = run_at(&mut out, group * gb as u64, gb);
                for (s, block) in blocks.chunks_exact(bb).enumerate() {
                    p.place(bytes, s as u64, block);
                }
            } else {
                let entry = self.pending.entry((key, group)).or_insert_with(|| (vec![0u8; gb], 0));
                for (s, block) in blocks.chunks_exact(bb).enumerate() {
                    p.place(&mut entry.0, slot + s as u64, block);
                }
                entry.1 += take;
                if entry.1 >= g {
                    if let Some((bytes, _)) = self.pending.remove(&(key, group)) {
                        run_at(&mut out, group * gb as u64, gb).copy_from_slice(&bytes);
                    }
                }
            }
            b += take;
        }
        out
    }

    /// The groups still waiting (a buffer's short last group): (key, byte
    /// offset, bytes).
    pub(super) fn finish(&mut self) -> Vec<(K, u64, Vec<u8>)> {
        std::mem::take(&mut self.pending).into_iter().map(|((k, g), (bytes, _))| (k, g * bytes.len() as u64, bytes)).collect()
    }
}

/// `len` zeroed bytes to fill at byte `at`: the end of the last write when
/// it ends there, else a new write.
/// Room for `len` bytes at `at` in `out`: the end of its last write when
/// that ends at `at`, else a new write.
pub(super) fn run_at(out: &mut Vec<(u64, Vec<u8>)>, at: u64, len: usize) -> &mut [u8] {
    if !matches!(out.last(), Some((a, bytes)) if a + bytes.len() as u64 == at) {
        out.push((at, Vec::new()));
    }
    match out.last_mut() {
        Some((_, bytes)) => {
            let start = bytes.len();
            bytes.resize(start + len, 0);
            &mut bytes[start..]
        }
        None => &mut [],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks whose every byte says where it came from.
    fn blocks(p: Packing, n: usize, salt: u8) -> Vec<u8> {
        (0..n * p.block_bytes() as usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
    }

    /// Field `f` of block `b` as the shader finds it in `gpu`.
    fn field(p: Packing, gpu: &[u8], b: u64, f: usize) -> &[u8] {
        let (g, gb) = (p.blocks(), p.group_bytes());
        let region: u64 = p.fields[..f].iter().map(|x| x * g).sum();
        let at = (b / g * gb + region + (b % g) * p.fields[f]) as usize;
        &gpu[at..at + p.fields[f] as usize]
    }

    #[test]
    fn every_field_lands_on_16_bytes_and_every_byte_is_kept() {
        for dtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::IQ4NL, DType::Q6K] {
            let p = packing(dtype).expect("regrouped");
            assert_eq!(p.group_bytes() % 16, 0, "{dtype:?}");
            assert_eq!(p.block_bytes(), dtype.block().1);
            for n in [1usize, 7, 8, 9, 21] {
                let file = blocks(p, n, 3);
                let gpu = to_gpu(dtype, &file);
                assert_eq!(gpu.len() as u64, gpu_nbytes(dtype, dtype.block().0 * n as u64).expect("blocks"));
                for b in 0..n as u64 {
                    let mut from = (b * p.block_bytes()) as usize;
                    for (f, &len) in p.fields.iter().enumerate() {
                        let region: u64 = p.fields[..f].iter().map(|x| x * p.blocks()).sum();
                        assert_eq!(region % 16, 0, "{dtype:?} field {f} off 16 bytes");
                        assert_eq!(field(p, &gpu, b, f), &file[from..from + len as usize], "{dtype:?} block {b} field {f}");
                        from += len as usize;
                    }
                }
                // The padding of the last group is zero.
                let used = n as u64 % p.blocks();
                if used != 0 {
                    let last = (n as u64 / p.blocks()) * p.blocks();
                    for b in n as u64..last + p.blocks() {
                        assert!((0..p.fields.len()).all(|f| field(p, &gpu, b, f).iter().all(|&x| x == 0)));
                    }
                }
            }
        }
        assert!(packing(DType::Q4K).is_none() && packing(DType::F16).is_none());
        assert_eq!(gpu_nbytes(DType::Q4K, 512), DType::Q4K.nbytes(512));
    }

    #[test]
    fn blocks_arriving_in_pieces_in_any_order_give_the_whole_packing() {
        // Two buffers filled from runs that start and end mid-group, in a
        // scrambled order, as q / k / v rows and shard boundaries deliver them.
        for dtype in [DType::Q4_0, DType::Q5_1, DType::Q8_0, DType::Q6K] {
            let p = packing(dtype).expect("regrouped");
            let bb = p.block_bytes() as usize;
            let sizes = [37usize, 16];
            let files: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(k, &n)| blocks(p, n, k as u8 * 101)).collect();
            let runs: [(usize, usize, usize); 7] = [(0, 30, 37), (1, 3, 16), (0, 0, 5), (0, 13, 30), (1, 0, 3), (0, 5, 13), (1, 16, 16)];
            let mut groups = Groups::<usize>::default();
            let mut gpu: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0xAA; gpu_nbytes(dtype, dtype.block().0 * n as u64).expect("n") as usize]).collect();
            let mut written = vec![vec![0usize; 0]; 2];
            for (k, a, z) in runs {
                for (at, data) in groups.put(k, p, a as u64, &files[k][a * bb..z * bb]) {
                    gpu[k][at as usize..at as usize + data.len()].copy_from_slice(&data);
                    written[k].extend((0..data.len()).step_by(p.group_bytes() as usize).map(|o| at as usize + o));
                }
            }
            for (k, at, data) in groups.finish() {
                gpu[k][at as usize..at as usize + data.len()].copy_from_slice(&data);
                written[k].push(at as usize);
            }
            for k in 0..2 {
                assert_eq!(gpu[k], to_gpu(dtype, &files[k]), "{dtype:?} buffer {k}");
                // Each group written exactly once.
                written[k].sort();
                let groups_in = (sizes[k] as u64).div_ceil(p.blocks()) as usize;
                assert_eq!(written[k], (0..groups_in).map(|g| g * p.group_bytes() as usize).collect::<Vec<_>>());
            }
        }
    }
}
