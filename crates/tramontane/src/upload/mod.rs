//! Weights onto the GPU: decide each GPU tensor's layout, check every source
//! tensor's presence and shape before allocating anything, then stream tensors
//! one at a time (in file order) from the source into their buffers, so host
//! memory never holds more than one tensor.
//!
//! Layout decisions (see ARCHITECTURE.md): q/k/v are stacked into one matrix
//! (one matmul), gate/up are stacked (SwiGLU epilogue), experts of a layer share
//! one buffer (the MoE matvec indexes it by expert id). Matrices keep their file
//! dtype; vectors (norms, biases) are converted to f32.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::parse::dequant::dequantize;
use crate::parse::{DType, ModelConfig, TensorInfo, TensorTable};
use crate::source::ModelSource;

/// A weight matrix on the GPU, `[experts][rows][cols]`.
pub struct Matrix {
    pub buf: wgpu::Buffer,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub experts: usize,
    /// Elements from one expert's block to the next.
    pub expert_stride: usize,
}

pub enum Ffn {
    Dense { gate_up: Matrix, down: Matrix },
    Moe { router: Matrix, gate_up: Matrix, down: Matrix },
}

pub struct LayerWeights {
    pub attn_norm: wgpu::Buffer,
    pub qkv: Matrix,
    pub qkv_bias: Option<wgpu::Buffer>,
    pub o: Matrix,
    pub ffn_norm: wgpu::Buffer,
    pub ffn: Ffn,
}

pub struct Weights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: wgpu::Buffer,
    /// `None` when the LM head is tied to the embeddings.
    pub lm_head: Option<Matrix>,
    /// Bytes of weights on the GPU.
    pub bytes: u64,
}

impl Weights {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Progress of a long operation, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Source tensor names for each logical weight (HF naming; GGUF maps its own).
pub trait Naming {
    fn embed(&self) -> String;
    fn lm_head(&self) -> String;
    fn norm(&self) -> String;
    fn layer(&self, l: usize, what: LayerTensor) -> String;
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String;
    /// All experts of a layer in one `[experts][rows][cols]` tensor, if the
    /// format stores them that way.
    fn experts_fused(&self, _l: usize, _what: ExpertTensor) -> Option<String> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
    Router,
}

#[derive(Debug, Clone, Copy)]
pub enum ExpertTensor {
    Gate,
    Up,
    Down,
}

pub struct HfNaming;

impl Naming for HfNaming {
    fn embed(&self) -> String {
        "model.embed_tokens.weight".into()
    }
    fn lm_head(&self) -> String {
        "lm_head.weight".into()
    }
    fn norm(&self) -> String {
        "model.norm.weight".into()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        let p = format!("model.layers.{l}");
        match what {
            LayerTensor::AttnNorm => format!("{p}.input_layernorm.weight"),
            LayerTensor::Q => format!("{p}.self_attn.q_proj.weight"),
            LayerTensor::K => format!("{p}.self_attn.k_proj.weight"),
            LayerTensor::V => format!("{p}.self_attn.v_proj.weight"),
            LayerTensor::QBias => format!("{p}.self_attn.q_proj.bias"),
            LayerTensor::KBias => format!("{p}.self_attn.k_proj.bias"),
            LayerTensor::VBias => format!("{p}.self_attn.v_proj.bias"),
            LayerTensor::O => format!("{p}.self_attn.o_proj.weight"),
            LayerTensor::FfnNorm => format!("{p}.post_attention_layernorm.weight"),
            LayerTensor::Gate => format!("{p}.mlp.gate_proj.weight"),
            LayerTensor::Up => format!("{p}.mlp.up_proj.weight"),
            LayerTensor::Down => format!("{p}.mlp.down_proj.weight"),
            LayerTensor::Router => format!("{p}.block_sparse_moe.gate.weight"),
        }
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        let w = match what {
            ExpertTensor::Gate => "w1",
            ExpertTensor::Up => "w3",
            ExpertTensor::Down => "w2",
        };
        format!("model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight")
    }
}

/// GGUF tensor names (llama.cpp's converter).
pub struct GgufNaming;

impl Naming for GgufNaming {
    fn embed(&self) -> String {
        "token_embd.weight".into()
    }
    fn lm_head(&self) -> String {
        "output.weight".into()
    }
    fn norm(&self) -> String {
        "output_norm.weight".into()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        let n = match what {
            LayerTensor::AttnNorm => "attn_norm.weight",
            LayerTensor::Q => "attn_q.weight",
            LayerTensor::K => "attn_k.weight",
            LayerTensor::V => "attn_v.weight",
            LayerTensor::QBias => "attn_q.bias",
            LayerTensor::KBias => "attn_k.bias",
            LayerTensor::VBias => "attn_v.bias",
            LayerTensor::O => "attn_output.weight",
            LayerTensor::FfnNorm => "ffn_norm.weight",
            LayerTensor::Gate => "ffn_gate.weight",
            LayerTensor::Up => "ffn_up.weight",
            LayerTensor::Down => "ffn_down.weight",
            LayerTensor::Router => "ffn_gate_inp.weight",
        };
        format!("blk.{l}.{n}")
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        let w = match what {
            ExpertTensor::Gate => "ffn_gate",
            ExpertTensor::Up => "ffn_up",
            ExpertTensor::Down => "ffn_down",
        };
        format!("blk.{l}.{w}.{e}.weight")
    }
    fn experts_fused(&self, l: usize, what: ExpertTensor) -> Option<String> {
        let w = match what {
            ExpertTensor::Gate => "ffn_gate_exps",
            ExpertTensor::Up => "ffn_up_exps",
            ExpertTensor::Down => "ffn_down_exps",
        };
        Some(format!("blk.{l}.{w}.weight"))
    }
}

/// One source tensor's place in a destination buffer.
struct Part {
    tensor: TensorInfo,
    dest: usize,
    /// Element offset in the destination.
    offset: u64,
}

/// A GPU buffer to create: its shape and the parts that fill it.
struct Dest {
    label: String,
    rows: usize,
    cols: usize,
    experts: usize,
    expert_stride: usize,
    vector: bool,
    dtype: DType,
    buf: Option<wgpu::Buffer>,
}

struct Plan<'a> {
    table: &'a TensorTable,
    dests: Vec<Dest>,
    parts: Vec<Part>,
}

impl<'a> Plan<'a> {
    fn find(&self, name: &str, shape: &[usize]) -> Result<TensorInfo> {
        let t = self.table.get(name).ok_or_else(|| {
            Error::tensor(
                self.table.files.first().map(|f| f.0.as_str()).unwrap_or("model"),
                name,
                "missing from the model's weights",
            )
        })?;
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if t.shape != want {
            return Err(Error::tensor(
                &t.file,
                name,
                format!("shape {:?} disagrees with the model configuration, which implies {:?}", t.shape, want),
            ));
        }
        Ok(t.clone())
    }

    /// The per-expert slice `e` of a `[experts][rows][cols]` tensor.
    fn expert_slice(&self, name: &str, experts: usize, rows: usize, cols: usize, e: usize) -> Result<TensorInfo> {
        let t = self.find(name, &[experts, rows, cols])?;
        let per = t.nbytes / experts as u64;
        Ok(TensorInfo {
            name: format!("{name}[{e}]"),
            shape: vec![rows as u64, cols as u64],
            offset: t.offset + per * e as u64,
            nbytes: per,
            ..t
        })
    }

    /// A matrix `[experts][rows][cols]` filled from `parts`: (expert, first row, tensor).
    fn matrix(&mut self, label: String, rows: usize, cols: usize, experts: usize,
              found: Vec<(usize, usize, TensorInfo)>) -> Result<usize> {
        let stride = rows * cols;
        let first = found.first().map(|f| f.2.dtype).unwrap_or(DType::F32);
        let same = found.iter().all(|f| f.2.dtype == first);
        // Parts are written in place only at 4-byte boundaries (and whole words).
        let aligned = |d: DType| {
            found.iter().all(|(e, r, t)| {
                d.nbytes((e * stride + r * cols) as u64).is_some_and(|b| b % 4 == 0)
                    && d.nbytes(t.numel()).is_some_and(|b| b % 4 == 0)
            })
        };
        // Mixed types, or parts off word boundaries, fall back to f32 (dequantized
        // on the host): correct, but larger. Real checkpoints rarely need it.
        let dtype = if same && aligned(first) { first } else { DType::F32 };
        let dest = self.dests.len();
        self.dests.push(Dest { label, rows, cols, experts, expert_stride: stride, vector: false, dtype, buf: None });
        for (e, r, t) in found {
            self.parts.push(Part { tensor: t, dest, offset: (e * stride + r * cols) as u64 });
        }
        Ok(dest)
    }

    /// A dense matrix from named parts: (first row, name, rows).
    fn dense(&mut self, label: String, rows: usize, cols: usize, parts: &[(usize, String, usize)]) -> Result<usize> {
        let found = parts
            .iter()
            .map(|(r, name, n)| Ok((0, *r, self.find(name, &[*n, cols])?)))
            .collect::<Result<Vec<_>>>()?;
        self.matrix(label, rows, cols, 1, found)
    }

    /// All experts of one layer, each expert's block stacking `parts` (what, first row, rows).
    #[allow(clippy::too_many_arguments)]
    fn experts(&mut self, label: String, naming: &dyn Naming, l: usize, n_experts: usize, rows: usize, cols: usize,
               parts: &[(ExpertTensor, usize, usize)]) -> Result<usize> {
        let mut found = Vec::new();
        for &(what, r, n) in parts {
            let fused = naming.experts_fused(l, what).filter(|f| self.table.get(f).is_some());
            for e in 0..n_experts {
                let t = match &fused {
                    Some(f) => self.expert_slice(f, n_experts, n, cols, e)?,
                    None => self.find(&naming.expert(l, e, what), &[n, cols])?,
                };
                found.push((e, r, t));
            }
        }
        self.matrix(label, rows, cols, n_experts, found)
    }

    /// An f32 vector filled from `parts`: (first element, name, len).
    fn vector(&mut self, label: String, len: usize, parts: &[(usize, String, usize)]) -> Result<usize> {
        let found: Vec<(usize, TensorInfo)> = parts
            .iter()
            .map(|(o, name, n)| Ok((*o, self.find(name, &[*n])?)))
            .collect::<Result<_>>()?;
        let dest = self.dests.len();
        self.dests.push(Dest {
            label, rows: 1, cols: len, experts: 1, expert_stride: len, vector: true, dtype: DType::F32, buf: None,
        });
        for (o, t) in found {
            self.parts.push(Part { tensor: t, dest, offset: o as u64 });
        }
        Ok(dest)
    }
}

enum FfnIdx {
    Dense(usize, usize),
    Moe(usize, usize, usize),
}

struct LayerIdx {
    attn_norm: usize,
    qkv: usize,
    qkv_bias: Option<usize>,
    o: usize,
    ffn_norm: usize,
    ffn: FfnIdx,
}

/// Bytes read and written per step when a tensor is copied as it is.
const UPLOAD_PIECE: u64 = 4 << 20;
/// Submit staged uploads after this many bytes, so they drain instead of piling
/// up in host memory.
const FLUSH_EVERY: u64 = 64 << 20;

fn flush(gpu: &Gpu) {
    gpu.queue.submit([]);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
}

/// Check, allocate and upload every weight of `cfg` from `src`.
pub async fn load_weights<S: ModelSource>(
    gpu: &Gpu,
    src: &S,
    cfg: &ModelConfig,
    table: &TensorTable,
    naming: &dyn Naming,
    parallel: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Weights> {
    let (h, v, hd) = (cfg.hidden, cfg.vocab, cfg.head_dim);
    let (qd, kvd, inter) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    let qkv_rows = qd + 2 * kvd;
    let mut plan = Plan { table, dests: Vec::new(), parts: Vec::new() };
    let _ = hd;

    let embed = plan.dense("embed".into(), v, h, &[(0, naming.embed(), v)])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |w| naming.layer(l, w);
        let attn_norm = plan.vector(format!("l{l}.attn_norm"), h, &[(0, n(LayerTensor::AttnNorm), h)])?;
        let qkv = plan.dense(format!("l{l}.qkv"), qkv_rows, h, &[
            (0, n(LayerTensor::Q), qd),
            (qd, n(LayerTensor::K), kvd),
            (qd + kvd, n(LayerTensor::V), kvd),
        ])?;
        let qkv_bias = if cfg.attn_bias {
            Some(plan.vector(format!("l{l}.qkv_bias"), qkv_rows, &[
                (0, n(LayerTensor::QBias), qd),
                (qd, n(LayerTensor::KBias), kvd),
                (qd + kvd, n(LayerTensor::VBias), kvd),
            ])?)
        } else {
            None
        };
        let o = plan.dense(format!("l{l}.o"), h, qd, &[(0, n(LayerTensor::O), h)])?;
        let ffn_norm = plan.vector(format!("l{l}.ffn_norm"), h, &[(0, n(LayerTensor::FfnNorm), h)])?;
        let ffn = match &cfg.moe {
            None => FfnIdx::Dense(
                plan.dense(format!("l{l}.gate_up"), 2 * inter, h, &[
                    (0, n(LayerTensor::Gate), inter),
                    (inter, n(LayerTensor::Up), inter),
                ])?,
                plan.dense(format!("l{l}.down"), h, inter, &[(0, n(LayerTensor::Down), h)])?,
            ),
            Some(moe) => {
                let ne = moe.n_experts;
                let router = plan.dense(format!("l{l}.router"), ne, h, &[(0, n(LayerTensor::Router), ne)])?;
                let gate_up = plan.experts(format!("l{l}.experts.gate_up"), naming, l, ne, 2 * inter, h, &[
                    (ExpertTensor::Gate, 0, inter),
                    (ExpertTensor::Up, inter, inter),
                ])?;
                let down = plan.experts(format!("l{l}.experts.down"), naming, l, ne, h, inter, &[(ExpertTensor::Down, 0, h)])?;
                FfnIdx::Moe(router, gate_up, down)
            }
        };
        layers.push(LayerIdx { attn_norm, qkv, qkv_bias, o, ffn_norm, ffn });
    }
    let norm = plan.vector("norm".into(), h, &[(0, naming.norm(), h)])?;
    let lm_head = if cfg.tie_embeddings && table.get(&naming.lm_head()).is_none() {
        None
    } else {
        Some(plan.dense("lm_head".into(), v, h, &[(0, naming.lm_head(), v)])?)
    };

    // Allocate. Sizes are checked against the device's binding limit first, so a
    // model that cannot fit fails before any upload.
    let mut bytes = 0u64;
    for d in &plan.dests {
        let size = d.dtype.nbytes((d.experts * d.expert_stride) as u64).unwrap_or(u64::MAX);
        if size > gpu.max_binding() {
            return Err(Error::Unsupported(format!(
                "weight `{}` needs a {size}-byte buffer; this device binds at most {} bytes",
                d.label,
                gpu.max_binding()
            )));
        }
        bytes += size;
    }
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    for d in plan.dests.iter_mut() {
        let size = d.dtype.nbytes((d.experts * d.expert_stride) as u64).unwrap_or(0);
        d.buf = Some(gpu.storage(&d.label, size));
    }
    if let Some(e) = scope.pop().await {
        return Err(Error::OutOfMemory(format!("allocating {bytes} bytes of weights: {e}")));
    }

    // Stream tensors in file order, up to `parallel` files at a time (each file
    // is one sequential stream for a fetch source).
    let mut by_file: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, p) in plan.parts.iter().enumerate() {
        by_file.entry(p.tensor.file.as_str()).or_default().push(i);
    }
    for parts in by_file.values_mut() {
        parts.sort_by_key(|&i| plan.parts[i].tensor.offset);
    }
    let total: u64 = plan.parts.iter().map(|p| p.tensor.nbytes).sum();
    let done = std::cell::Cell::new(0u64);
    let since_flush = std::cell::Cell::new(0u64);
    let progress = std::cell::RefCell::new(progress);
    (progress.borrow_mut())(Progress { done: 0, total });
    let advance = |n: u64| {
        done.set(done.get() + n);
        since_flush.set(since_flush.get() + n);
        if since_flush.get() > FLUSH_EVERY {
            flush(gpu);
            since_flush.set(0);
        }
        (progress.borrow_mut())(Progress { done: done.get(), total });
    };
    let plan_ref = &plan;
    let upload_file = |indices: Vec<usize>| {
        let advance = &advance;
        async move {
            for i in indices {
                let part = &plan_ref.parts[i];
                let dest = &plan_ref.dests[part.dest];
                let t = &part.tensor;
                let buf = dest.buf.as_ref().ok_or_else(|| Error::Gpu("weight buffer missing".into()))?;
                let at = dest.dtype.nbytes(part.offset).ok_or_else(|| Error::Gpu("misaligned weight part".into()))?;
                if t.dtype == dest.dtype {
                    // Same format: copy in pieces, so host (wasm) memory holds one
                    // piece per stream, never a whole tensor.
                    let mut off = 0u64;
                    while off < t.nbytes {
                        let n = UPLOAD_PIECE.min(t.nbytes - off);
                        let mut data = src.read(&t.file, t.offset + off, n).await?;
                        if data.len() as u64 != n {
                            return Err(Error::tensor(&src.describe(&t.file), &t.name, "short read"));
                        }
                        data.resize(data.len().next_multiple_of(4), 0);
                        gpu.queue.write_buffer(buf, at + off, &data);
                        off += n;
                        advance(n);
                    }
                } else {
                    // Converted to f32 (norms, biases, and the rare fallback).
                    let raw = src.read(&t.file, t.offset, t.nbytes).await?;
                    if raw.len() as u64 != t.nbytes {
                        return Err(Error::tensor(&src.describe(&t.file), &t.name, "short read"));
                    }
                    gpu.queue.write_buffer(buf, at, bytemuck::cast_slice(&dequantize(t.dtype, &raw)));
                    advance(t.nbytes);
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
    gpu.queue.submit([]);
    gpu.check()?;

    let mut dests: Vec<Option<Dest>> = plan.dests.into_iter().map(Some).collect();
    let mut take = |i: usize| -> Result<Dest> {
        dests.get_mut(i).and_then(Option::take).ok_or_else(|| Error::Gpu("weight planned twice".into()))
    };
    fn matrix(d: Dest) -> Result<Matrix> {
        debug_assert!(!d.vector);
        Ok(Matrix {
            buf: d.buf.ok_or_else(|| Error::Gpu("unallocated weight".into()))?,
            dtype: d.dtype,
            rows: d.rows,
            cols: d.cols,
            experts: d.experts,
            expert_stride: d.expert_stride,
        })
    }
    fn vector(d: Dest) -> Result<wgpu::Buffer> {
        d.buf.ok_or_else(|| Error::Gpu("unallocated weight".into()))
    }
    let embed = matrix(take(embed)?)?;
    let mut out_layers = Vec::with_capacity(layers.len());
    for li in layers {
        out_layers.push(LayerWeights {
            attn_norm: vector(take(li.attn_norm)?)?,
            qkv: matrix(take(li.qkv)?)?,
            qkv_bias: match li.qkv_bias {
                Some(b) => Some(vector(take(b)?)?),
                None => None,
            },
            o: matrix(take(li.o)?)?,
            ffn_norm: vector(take(li.ffn_norm)?)?,
            ffn: match li.ffn {
                FfnIdx::Dense(gu, d) => Ffn::Dense { gate_up: matrix(take(gu)?)?, down: matrix(take(d)?)? },
                FfnIdx::Moe(r, gu, d) => Ffn::Moe {
                    router: matrix(take(r)?)?,
                    gate_up: matrix(take(gu)?)?,
                    down: matrix(take(d)?)?,
                },
            },
        });
    }
    Ok(Weights {
        embed,
        layers: out_layers,
        norm: vector(take(norm)?)?,
        lm_head: match lm_head {
            Some(i) => Some(matrix(take(i)?)?),
            None => None,
        },
        bytes,
    })
}
