//! Rows interleaved by 8: the layout of weight matrices on lavapipe
//! (weights.wgsl's `W_INTERLEAVE`, `w_unit`).
//!
//! A CPU driver's matvec runs 8 neighbouring rows in the 8 lanes of a SIMD
//! batch; row by row, those lanes read 8 streams at once (32 with four
//! outputs per invocation), more than the CPU's prefetchers follow. So each
//! run of 8 rows is stored column by column: unit c (a block, or a K-quant's
//! super-block) of rows 8q .. 8q+7 side by side, and the lanes read one
//! contiguous run. A run of rows keeps the bytes it had (rows 8q .. 8q+8
//! fill the same byte range either way), so a matrix's last run is padded to
//! 8 rows with zeros and everything else about the buffer stays as it was:
//! the regrouping of repack.rs comes after, over the interleaved blocks.

use std::collections::BTreeMap;

use super::repack::run_at;
use crate::parse::DType;

/// Rows per interleaved run.
pub const RUN: u64 = 8;

/// Weights per unit the kernels interleave `dtype` by: the 32-weight block
/// types by block, q4_K / q5_K / q6_K by super-block. Others keep plain rows.
pub fn unit_elems(dtype: DType) -> Option<u64> {
    match dtype {
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 | DType::IQ4NL => Some(32),
        DType::Q4K | DType::Q5K | DType::Q6K => Some(256),
        _ => None,
    }
}

/// Units per row of `cols` elements of `dtype` (weights.wgsl's `W_UNITS`);
/// 0 for the types that keep plain rows.
pub fn units_per_row(dtype: DType, cols: usize) -> u32 {
    unit_elems(dtype).map_or(0, |u| (cols as u64 / u) as u32)
}

/// One run of rows (`data`: up to 8 whole rows of `row_bytes`, the file's
/// layout) interleaved by units of `unit_bytes`: unit c of row r lands at
/// unit c * 8 + r. Rows missing from a short run are zeros.
pub fn interleave_run(data: &[u8], row_bytes: usize, unit_bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; RUN as usize * row_bytes];
    interleave_into(&mut out, data, row_bytes, unit_bytes);
    out
}

/// [`interleave_run`] into `out` (8 rows' bytes, zeroed).
fn interleave_into(out: &mut [u8], data: &[u8], row_bytes: usize, unit_bytes: usize) {
    let run = RUN as usize;
    let units = row_bytes / unit_bytes.max(1);
    for (r, row) in data.chunks(row_bytes).enumerate().take(run) {
        for (c, unit) in row.chunks_exact(unit_bytes).enumerate().take(units) {
            let at = (c * run + r) * unit_bytes;
            out[at..at + unit_bytes].copy_from_slice(unit);
        }
    }
}

/// Collects a matrix's bytes as they stream in (any order, any byte runs of
/// the plain row-major layout) until a run of 8 rows is whole, then hands it
/// back interleaved. Runs that arrive in parts wait here; `finish` returns the
/// short ones (a matrix's last run), padded.
pub(super) struct Runs<K: Ord + Copy = (usize, usize)> {
    pending: BTreeMap<(K, u64), (Vec<u8>, u64)>,
}

impl<K: Ord + Copy> Default for Runs<K> {
    fn default() -> Self {
        Runs { pending: BTreeMap::new() }
    }
}

/// A matrix's shape as [`Runs`] needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub row_bytes: u64,
    pub unit_bytes: u64,
}

impl<K: Ord + Copy> Runs<K> {
    /// Put `data` at byte `at` of matrix `key` (plain layout); returns the
    /// runs now whole: (byte offset, interleaved bytes), neighbouring runs
    /// in one write (each is 8 rows, a few KB: a write apiece costs more
    /// than the interleaving).
    pub(super) fn put(&mut self, key: K, s: Shape, at: u64, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let run_bytes = RUN * s.row_bytes;
        let mut out = Vec::new();
        let mut off = 0u64;
        while off < data.len() as u64 {
            let pos = at + off;
            let (run, within) = (pos / run_bytes, pos % run_bytes);
            let take = (run_bytes - within).min(data.len() as u64 - off);
            let bytes = &data[off as usize..(off + take) as usize];
            if take == run_bytes && !self.pending.contains_key(&(key, run)) {
                // A whole run in this piece (most of them): straight into
                // the write, one copy.
                interleave_into(run_at(&mut out, pos, run_bytes as usize), bytes, s.row_bytes as usize, s.unit_bytes as usize);
                off += take;
                continue;
            }
            let entry = self.pending.entry((key, run)).or_insert_with(|| (vec![0u8; run_bytes as usize], 0));
            entry.0[within as usize..(within + take) as usize].copy_from_slice(bytes);
            entry.1 += take;
            if entry.1 >= run_bytes {
                if let Some((plain, _)) = self.pending.remove(&(key, run)) {
                    let run = interleave_run(&plain, s.row_bytes as usize, s.unit_bytes as usize);
                    run_at(&mut out, (at + off) - within, run.len()).copy_from_slice(&run);
                }
            }
            off += take;
        }
        out
    }

    /// The runs still waiting (short last runs, their missing rows zeros):
    /// (key, byte offset, interleaved bytes).
    pub(super) fn finish(&mut self, shape: impl Fn(K) -> Shape) -> Vec<(K, u64, Vec<u8>)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((k, run), (plain, _))| {
                let s = shape(k);
                (k, run * RUN * s.row_bytes, interleave_run(&plain, s.row_bytes as usize, s.unit_bytes as usize))
            })
            .collect()
    }
}

/// `bytes` (whole rows of `cols` elements of `dtype`, as a file holds them)
/// interleaved, the last run padded: what the kernels read with
/// `W_INTERLEAVE` (before repack.rs's regrouping). Types without units come
/// back as they are.
pub fn interleave(dtype: DType, cols: usize, bytes: &[u8]) -> Vec<u8> {
    let (Some(unit), Some(row_bytes)) = (unit_elems(dtype).and_then(|u| dtype.nbytes(u)), dtype.nbytes(cols as u64)) else {
        return bytes.to_vec();
    };
    if row_bytes == 0 {
        return bytes.to_vec();
    }
    bytes.chunks((RUN * row_bytes) as usize).flat_map(|run| interleave_run(run, row_bytes as usize, unit as usize)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit c of row r lands at c * 8 + r, whatever order and runs the bytes
    /// arrive in; a short last run is padded with zero rows.
    #[test]
    fn runs_of_rows_interleave_by_unit() {
        let (rows, units, ub) = (11u64, 3u64, 2u64);
        let row_bytes = units * ub;
        // Byte value: row * 16 + unit * 4 + byte within the unit.
        let plain: Vec<u8> = (0..rows * row_bytes).map(|i| ((i / row_bytes) * 16 + (i % row_bytes / ub) * 4 + i % ub) as u8).collect();
        let s = Shape { row_bytes, unit_bytes: ub };
        let mut runs = Runs::<u8>::default();
        let mut got = vec![0xAAu8; (16 * row_bytes) as usize];
        // In pieces of 5 bytes, back to front.
        let pieces: Vec<(u64, &[u8])> = plain.chunks(5).enumerate().map(|(i, c)| (i as u64 * 5, c)).collect();
        for (at, c) in pieces.into_iter().rev() {
            for (o, b) in runs.put(0, s, at, c) {
                got[o as usize..o as usize + b.len()].copy_from_slice(&b);
            }
        }
        for (_, o, b) in runs.finish(|_| s) {
            got[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        for run in 0..2u64 {
            for c in 0..units {
                for r in 0..RUN {
                    for i in 0..ub {
                        let at = (run * RUN * row_bytes + (c * RUN + r) * ub + i) as usize;
                        let row = run * RUN + r;
                        let want = if row < rows { (row * 16 + c * 4 + i) as u8 } else { 0 };
                        assert_eq!(got[at], want, "run {run} unit {c} row {r} byte {i}");
                    }
                }
            }
        }
        assert_eq!(interleave_whole(&plain, row_bytes, ub), got);
    }

    fn interleave_whole(plain: &[u8], row_bytes: u64, ub: u64) -> Vec<u8> {
        plain.chunks((RUN * row_bytes) as usize).flat_map(|r| interleave_run(r, row_bytes as usize, ub as usize)).collect()
    }

    #[test]
    fn only_block_types_with_whole_units_interleave() {
        assert_eq!(unit_elems(DType::Q4_1), Some(32));
        assert_eq!(unit_elems(DType::Q6K), Some(256));
        assert_eq!(unit_elems(DType::Q3K), None);
        assert_eq!(unit_elems(DType::F16), None);
        let bytes = vec![1u8, 2, 3, 4];
        assert_eq!(interleave(DType::F32, 1, &bytes), bytes, "plain rows");
    }
}
