//! The planned weights onto the GPU: allocate every buffer, then stream the
//! tensors one at a time (in file order) from the source into them, so host
//! memory never holds more than one tensor.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::planner::{Dest, FfnIdx, Layout, Piece};
use super::interleave::{unit_elems, units_per_row, Runs, Shape};
use super::repack::{packing, Groups};
use super::types::{Ffn, LayerWeights, Matrix, Slab, VisionLayerWeights, VisionWeights, Weights};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, WeightStore};
use web_time::Instant;
use crate::parse::dequant::dequantize;
use crate::parse::TensorInfo;
use crate::source::ModelSource;

/// Progress of a long operation, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Bytes read and written per step when a tensor is copied as it is.
const UPLOAD_PIECE: u64 = 4 << 20;
/// Submit staged uploads after this many bytes (see `Flusher`).
const FLUSH_EVERY: u64 = 64 << 20;

/// Submits staged uploads every FLUSH_EVERY bytes, so they drain instead of
/// piling up in host memory. Each flush waits for the one before it, not for
/// itself: the driver copies one batch while the host prepares the next
/// (natively, waiting for each batch at once left the host idle for half of
/// a 7B model's upload on lavapipe). In browsers that wait is a yield to the
/// event loop, which a load whose reads never wait (synchronous OPFS reads
/// in a worker) needs too: the self-test beside the upload, an abort and
/// the progress events run there.
#[derive(Default)]
struct Flusher {
    #[cfg(not(target_arch = "wasm32"))]
    last: RefCell<Option<wgpu::SubmissionIndex>>,
    #[cfg(target_arch = "wasm32")]
    last: RefCell<Option<futures_util::future::Shared<futures_util::future::LocalBoxFuture<'static, ()>>>>,
}

impl Flusher {
    /// Submit, and natively wait for the batch before (the assembler's
    /// texture copies, which run without an executor's turn to give).
    fn flush(&self, gpu: &Gpu) {
        let _submitted = gpu.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(before) = self.last.replace(Some(_submitted)) {
            let _ = gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(before), timeout: None });
        }
    }

    /// Submit, and wait for the batch before: in browsers by awaiting it.
    async fn flush_async(&self, gpu: &Gpu) {
        #[cfg(not(target_arch = "wasm32"))]
        self.flush(gpu);
        #[cfg(target_arch = "wasm32")]
        {
            use futures_util::FutureExt;
            gpu.queue.submit([]);
            let this = gpu.submitted_work_done().boxed_local().shared();
            // The first batch is awaited itself, so the first yield comes at
            // 64 MiB (a model under 128 MiB would see none otherwise).
            let before = self.last.replace(Some(this.clone())).unwrap_or(this);
            before.await;
        }
    }
}

/// Natively, a turn for whatever runs beside the upload in the same task
/// (the load's self-test, whose outcome a thread delivers): a native
/// source's reads never wait, so without this the upload would run to its
/// end before a failed self-test could stop it or a settled one start the
/// pass's pipelines. In browsers the upload's reads and flushes await.
async fn between_pieces() {
    #[cfg(not(target_arch = "wasm32"))]
    {
        struct YieldNow(bool);
        impl std::future::Future for YieldNow {
            type Output = ();
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
                if self.0 {
                    return std::task::Poll::Ready(());
                }
                self.0 = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
        YieldNow(false).await
    }
}

/// Allocate, fill and assemble every weight of `layout`, reading up to
/// `parallel` files at a time. Natively, where the weights stay in the
/// buffers they are written to, they are assembled first and given to
/// `bound` before a byte is read: the forward pass is built on them (its
/// pipelines compiled) while they fill. Matrices that go into textures are
/// made from their filled buffers, so those weights are assembled last. Not
/// in browsers: they compile pipelines at the first dispatch anyway, and
/// Chromium's `writeBuffer` into buffers already bound ran 10x slower
/// (SmolLM2's upload 0.16 -> 1.6 s).
pub(super) async fn upload<S: ModelSource>(gpu: &Gpu, src: &S, layout: Layout, parallel: usize,
                                           progress: &mut dyn FnMut(Progress), bound: &mut dyn FnMut(&Weights)) -> Result<Weights> {
    let bufs = allocate(gpu, &layout).await?;
    if !layout.textures && cfg!(not(target_arch = "wasm32")) {
        let t = Instant::now();
        let mut weights = assemble(gpu, &layout, bufs.clone())?;
        let assembling = t.elapsed().as_secs_f64();
        bound(&weights);
        weights.host_seconds = stream(gpu, src, &layout, &bufs, parallel, progress).await? + assembling;
        return Ok(weights);
    }
    let host_seconds = stream(gpu, src, &layout, &bufs, parallel, progress).await?;
    let t = Instant::now();
    let mut weights = assemble(gpu, &layout, bufs)?;
    weights.host_seconds = host_seconds + t.elapsed().as_secs_f64();
    Ok(weights)
}

/// A buffer per slab of each planned weight.
async fn allocate(gpu: &Gpu, layout: &Layout) -> Result<Vec<Vec<wgpu::Buffer>>> {
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let bufs = layout
        .dests
        .iter()
        .map(|d| {
            let many = d.slabs.len() > 1;
            d.slabs
                .iter()
                .enumerate()
                .map(|(si, s)| {
                    let label = if many { format!("{}[{}..{}]", d.label, s.start, s.end) } else { d.label.clone() };
                    gpu.storage(&label, d.slab_bytes(si))
                })
                .collect()
        })
        .collect();
    if let Some(e) = scope.pop().await {
        return Err(Error::OutOfMemory(format!("allocating {} bytes of weights: {e}", layout.bytes)));
    }
    Ok(bufs)
}

/// Every part's bytes into its buffers: files in parallel (each one a
/// sequential stream for a fetch source), tensors in file order within each.
/// Returns the seconds spent on the host placing bytes (repacking,
/// interleaving, writes to the GPU queue): the rest of its time, on one
/// thread, was spent waiting for bytes.
async fn stream<S: ModelSource>(gpu: &Gpu, src: &S, layout: &Layout, bufs: &[Vec<wgpu::Buffer>], parallel: usize,
                                progress: &mut dyn FnMut(Progress)) -> Result<f64> {
    let host = Cell::new(0f64);
    let timed = |t: Instant| host.set(host.get() + t.elapsed().as_secs_f64());
    let mut by_file: BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, p) in layout.parts.iter().enumerate() {
        by_file.entry(p.tensor.file.as_str()).or_default().push(i);
    }
    for parts in by_file.values_mut() {
        parts.sort_by_key(|&i| layout.parts[i].tensor.offset);
    }
    let total: u64 = layout.parts.iter().map(|p| p.tensor.nbytes).sum();
    let done = Cell::new(0u64);
    let since_flush = Cell::new(0u64);
    let flusher = Flusher::default();
    // Groups of regrouped blocks, and runs of interleaved rows, that arrive
    // in parts, by (dest, slab).
    let groups = RefCell::new(Groups::default());
    let runs = RefCell::new(Runs::default());
    let shape = |(d, si): (usize, usize)| {
        let dest = &layout.dests[d];
        let dtype = dest.slab_dtypes.get(si).copied().unwrap_or(crate::parse::DType::F32);
        let bytes = |n: u64| dtype.nbytes(n).unwrap_or(0);
        Shape { row_bytes: bytes(dest.cols as u64), unit_bytes: unit_elems(dtype).map_or(0, bytes) }
    };
    // Bytes of buffer (dest, slab) from `at`, as the file lays them out:
    // regrouped (repack.rs) where the type is, then written.
    let regrouped = |key: (usize, usize), at: u64, data: &[u8]| -> Result<()> {
        let buf = bufs.get(key.0).and_then(|b| b.get(key.1)).ok_or_else(|| Error::Internal("weight buffer missing".into()))?;
        let dtype = layout.dests[key.0].slab_dtypes.get(key.1).copied();
        match dtype.and_then(packing) {
            Some(pk) => {
                for (at, bytes) in groups.borrow_mut().put(key, pk, at / pk.block_bytes(), data) {
                    gpu.queue.write_buffer(buf, at, &bytes);
                }
            }
            None if data.len().is_multiple_of(4) => gpu.queue.write_buffer(buf, at, data),
            None => {
                // A tensor's last piece: whole words for writeBuffer.
                let mut padded = data.to_vec();
                padded.resize(data.len().next_multiple_of(4), 0);
                gpu.queue.write_buffer(buf, at, &padded);
            }
        }
        Ok(())
    };
    // The same, interleaved first (interleave.rs) where the slab is.
    let place = |key: (usize, usize), at: u64, data: &[u8]| -> Result<()> {
        if layout.dests[key.0].interleaved(key.1) {
            for (at, run) in runs.borrow_mut().put(key, shape(key), at, data) {
                regrouped(key, at, &run)?;
            }
            Ok(())
        } else {
            regrouped(key, at, data)
        }
    };
    let progress = RefCell::new(progress);
    (progress.borrow_mut())(Progress { done: 0, total });
    // Count `n` bytes placed; true when a flush is due.
    let advance = |n: u64| {
        done.set(done.get() + n);
        since_flush.set(since_flush.get() + n);
        (progress.borrow_mut())(Progress { done: done.get(), total });
        let due = since_flush.get() > FLUSH_EVERY;
        if due {
            since_flush.set(0);
        }
        due
    };
    let upload_file = |indices: Vec<usize>| {
        let (advance, place, flusher) = (&advance, &place, &flusher);
        async move {
            for i in indices {
                let part = &layout.parts[i];
                let dest = &layout.dests[part.dest];
                let t = &part.tensor;
                let pieces = dest.pieces(part);
                let buf = |p: &Piece| {
                    bufs.get(part.dest).and_then(|b| b.get(p.slab)).ok_or_else(|| Error::Internal("weight buffer missing".into()))
                };
                let as_is = pieces.iter().all(|p| dest.slab_dtypes.get(p.slab) == Some(&t.dtype));
                if as_is {
                    // Same format: copied in pieces, so host (wasm) memory
                    // holds one piece per stream, never a whole tensor.
                    // Regrouped types go by runs of whole groups (so only a
                    // piece's first and last group can arrive in parts).
                    let group = packing(t.dtype).map(|pk| pk.group_bytes());
                    for p in &pieces {
                        let mut off = 0u64;
                        while off < p.len {
                            let n = match group {
                                Some(g) => ((UPLOAD_PIECE / g).max(1) * g - (p.at + off) % g).min(p.len - off),
                                None => UPLOAD_PIECE.min(p.len - off),
                            };
                            let data = read_exact(src, t, p.src + off, n).await?;
                            let t0 = Instant::now();
                            place((part.dest, p.slab), p.at + off, &data)?;
                            off += n;
                            let due = advance(n);
                            timed(t0);
                            if due {
                                let t0 = Instant::now();
                                flusher.flush_async(gpu).await;
                                timed(t0);
                            }
                            between_pieces().await;
                        }
                    }
                } else {
                    // Converted to f32 (norms, biases, and the rare fallback).
                    let raw = read_exact(src, t, 0, t.nbytes).await?;
                    let t0 = Instant::now();
                    let values = dequantize(t.dtype, &raw);
                    for p in &pieces {
                        let v = values.get(p.elems.clone()).ok_or_else(|| Error::Internal("weight piece out of range".into()))?;
                        gpu.queue.write_buffer(buf(p)?, p.at, bytemuck::cast_slice(v));
                    }
                    let due = advance(t.nbytes);
                    timed(t0);
                    if due {
                        let t0 = Instant::now();
                        flusher.flush_async(gpu).await;
                        timed(t0);
                    }
                    between_pieces().await;
                }
            }
            Ok::<(), Error>(())
        }
    };
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(by_file.into_values().map(upload_file))
        .buffer_unordered(parallel.max(1))
        .try_for_each(|_| std::future::ready(Ok(())))
        .await?;
    let t0 = Instant::now();
    let short_runs = runs.borrow_mut().finish(shape);
    for (key, at, run) in short_runs {
        regrouped(key, at, &run)?;
    }
    for ((d, si), at, bytes) in groups.borrow_mut().finish() {
        let buf = bufs.get(d).and_then(|b| b.get(si)).ok_or_else(|| Error::Internal("weight buffer missing".into()))?;
        gpu.queue.write_buffer(buf, at, &bytes);
    }
    gpu.queue.submit([]);
    gpu.check()?;
    timed(t0);
    Ok(host.get())
}

/// `n` bytes of tensor `t` from byte `at` of its data; fewer is an error.
async fn read_exact<S: ModelSource>(src: &S, t: &TensorInfo, at: u64, n: u64) -> Result<Vec<u8>> {
    let data = src.read(&t.file, t.offset + at, n).await?;
    if data.len() as u64 != n {
        return Err(Error::tensor(&src.describe(&t.file), &t.name, "short read"));
    }
    Ok(data)
}

/// The allocated buffers as the weights the forward pass binds (matrices
/// moved into textures where the device reads those faster, buffers dropped
/// as their copies run).
fn assemble(gpu: &Gpu, layout: &Layout, bufs: Vec<Vec<wgpu::Buffer>>) -> Result<Weights> {
    let mut a = Assembler { gpu, textures: layout.textures, copied: 0, flusher: Flusher::default(), slots: layout.dests.iter().zip(bufs).map(Some).collect() };
    let mut layers = Vec::with_capacity(layout.layers.len());
    for li in &layout.layers {
        layers.push(LayerWeights {
            attn_norm: a.vector(li.attn_norm)?,
            qkv: a.matrix(li.qkv)?,
            qkv_bias: a.vector_opt(li.qkv_bias)?,
            o: a.matrix(li.o)?,
            o_bias: a.vector_opt(li.o_bias)?,
            qk_norm: a.vector_opt(li.qk_norm)?,
            mlp_bias: match li.mlp_bias {
                Some((gu, d)) => Some((a.vector(gu)?, a.vector(d)?)),
                None => None,
            },
            ffn_norm: a.vector(li.ffn_norm)?,
            ffn: match li.ffn {
                FfnIdx::Dense { gate_up, up, down } => {
                    Ffn::Dense { gate_up: a.matrix(gate_up)?, up: a.matrix_opt(up)?, down: a.matrix(down)? }
                }
                FfnIdx::Moe { router, gate_up, up, down } => Ffn::Moe {
                    router: a.matrix(router)?,
                    gate_up: a.matrix(gate_up)?,
                    up: a.matrix_opt(up)?,
                    down: a.matrix(down)?,
                },
            },
        });
    }
    let vision = match &layout.vision {
        None => None,
        Some(v) => {
            let mut layers = Vec::with_capacity(v.layers.len());
            for l in &v.layers {
                layers.push(VisionLayerWeights {
                    attn_norm: a.vector(l.attn_norm)?,
                    qkv: a.matrix(l.qkv)?,
                    o: a.matrix(l.o)?,
                    ffn_norm: a.vector(l.ffn_norm)?,
                    gate_up: a.matrix(l.gate_up)?,
                    down: a.matrix(l.down)?,
                });
            }
            Some(VisionWeights {
                patch: a.matrix(v.patch)?,
                ln_pre: a.vector(v.ln_pre)?,
                layers,
                proj_norm: a.vector_opt(v.proj_norm)?,
                merger: a.matrix_opt(v.merger)?,
                linear_1: a.matrix(v.linear_1)?,
                linear_1_bias: a.vector_opt(v.linear_1_bias)?,
                linear_2: a.matrix(v.linear_2)?,
                linear_2_bias: a.vector_opt(v.linear_2_bias)?,
            })
        }
    };
    Ok(Weights {
        embed: a.matrix(layout.embed)?,
        layers,
        norm: a.vector(layout.norm)?,
        lm_head: a.matrix_opt(layout.lm_head)?,
        vision,
        bytes: layout.bytes,
        host_seconds: 0.0,
    })
}

/// Each planned weight with its buffers, taken once.
struct Assembler<'g> {
    gpu: &'g Gpu,
    textures: bool,
    /// Bytes copied into textures since the last flush.
    copied: u64,
    flusher: Flusher,
    slots: Vec<Option<(&'g Dest, Vec<wgpu::Buffer>)>>,
}

impl<'g> Assembler<'g> {
    fn take(&mut self, i: usize) -> Result<(&'g Dest, Vec<wgpu::Buffer>)> {
        self.slots.get_mut(i).and_then(Option::take).ok_or_else(|| Error::Internal("weight planned twice".into()))
    }

    fn matrix(&mut self, i: usize) -> Result<Matrix> {
        let (d, bufs) = self.take(i)?;
        if d.vector || bufs.len() != d.slabs.len() {
            return Err(Error::Internal("unallocated weight".into()));
        }
        let slabs = bufs
            .into_iter()
            .zip(d.slabs.iter().cloned())
            .zip(d.slab_dtypes.iter().copied())
            .enumerate()
            .map(|(si, ((buf, s), dtype))| {
                let info = self.gpu.uniform_init("slab", bytemuck::cast_slice(&[s.start as u32, s.len() as u32, 0, 0]));
                let store = if self.textures {
                    let units = if d.interleaved(si) { units_per_row(dtype, d.cols) } else { 0 };
                    let store = self.gpu.weight_texture(&d.label, &buf, units);
                    // The buffer goes once the copy has run: waited for
                    // every FLUSH_EVERY bytes, so that the weights are held
                    // twice only that far.
                    self.copied += buf.size();
                    drop(buf);
                    if self.copied > FLUSH_EVERY {
                        self.flusher.flush(self.gpu);
                        self.copied = 0;
                    }
                    store
                } else {
                    WeightStore::Buffer(buf)
                };
                Slab { store, dtype, rows: s.len(), info }
            })
            .collect();
        Ok(Matrix { slabs, outputs: d.outputs, halves: d.halves, cols: d.cols, experts: d.experts })
    }

    fn vector(&mut self, i: usize) -> Result<wgpu::Buffer> {
        self.take(i)?.1.into_iter().next().ok_or_else(|| Error::Internal("unallocated weight".into()))
    }

    fn matrix_opt(&mut self, i: Option<usize>) -> Result<Option<Matrix>> {
        i.map(|i| self.matrix(i)).transpose()
    }

    fn vector_opt(&mut self, i: Option<usize>) -> Result<Option<wgpu::Buffer>> {
        i.map(|i| self.vector(i)).transpose()
    }
}
