//! Weights onto the GPU: decide each GPU tensor's layout, check every source
//! tensor's presence and shape before allocating anything, then stream tensors
//! one at a time (in file order) from the source into their buffers, so host
//! memory never holds more than one tensor.
//!
//! Layout decisions (see ARCHITECTURE.md): q/k/v are stacked into one matrix
//! (one matmul), gate/up are stacked (SwiGLU epilogue), experts of a layer share
//! one buffer (the MoE matvec indexes it by expert id). Matrices keep their file
//! dtype; vectors (norms, biases) are converted to f32.
//!
//! A matrix larger than the device lets a kernel bind (WebGPU's default
//! `maxStorageBufferBindingSize` is 128 MiB; big vocabularies exceed it) is cut
//! into slabs by output row: each slab is its own buffer holding a range of
//! outputs for every expert and half, `[experts][halves][slab rows][cols]`, and
//! the kernels run once per slab (see `forward::Linear`). Slabs also keep q, k
//! and v in their own types when a file mixes them (Q4_K_M stores attn_v as
//! q6_K): each slab has its own dtype and its own kernel specialization.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::parse::dequant::dequantize;
use crate::parse::{Arch, DType, ModelConfig, TensorInfo, TensorTable};
use crate::source::ModelSource;

/// A weight matrix on the GPU: `experts` blocks of `halves * outputs` rows
/// (`halves` = 2 for stacked [gate; up]) of `cols` elements, in one or more
/// slabs of outputs.
pub struct Matrix {
    pub slabs: Vec<Slab>,
    /// Outputs (rows per half per expert).
    pub outputs: usize,
    pub halves: usize,
    pub cols: usize,
    pub experts: usize,
}

/// Outputs `row0 .. row0 + rows` of a matrix, for every expert and half:
/// `[experts][halves][rows][cols]`.
pub struct Slab {
    pub buf: wgpu::Buffer,
    pub dtype: DType,
    pub row0: usize,
    pub rows: usize,
    /// Uniform `vec4<u32>(row0, rows, 0, 0)` the kernels read (the `SLAB`
    /// binding of matmul.wgsl and embed.wgsl).
    pub info: wgpu::Buffer,
}

impl Matrix {
    /// The storage type of the first slab (the matrix's, unless its parts
    /// mix types).
    pub fn dtype(&self) -> DType {
        self.slabs.first().map(|s| s.dtype).unwrap_or(DType::F32)
    }

    /// Elements from one expert's block to the next within `slab`.
    pub fn expert_stride(&self, slab: &Slab) -> usize {
        self.halves * slab.rows * self.cols
    }
}

/// `gate_up` stacks gate and up (one SwiGLU dispatch) when they share a type;
/// when they do not, it holds the gate alone and `up` the up projection.
pub enum Ffn {
    Dense { gate_up: Matrix, up: Option<Matrix>, down: Matrix },
    Moe { router: Matrix, gate_up: Matrix, up: Option<Matrix>, down: Matrix },
}

pub struct LayerWeights {
    pub attn_norm: wgpu::Buffer,
    pub qkv: Matrix,
    pub qkv_bias: Option<wgpu::Buffer>,
    pub o: Matrix,
    pub o_bias: Option<wgpu::Buffer>,
    /// `[q_norm | k_norm]`, head_dim each (Qwen3's per-head RMSNorm weights).
    pub qk_norm: Option<wgpu::Buffer>,
    /// (stacked gate/up bias, down bias) of a dense MLP with biases.
    pub mlp_bias: Option<(wgpu::Buffer, wgpu::Buffer)>,
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

    /// How many matrices are split to fit the binding limit (slabs beyond
    /// one per storage type).
    pub fn split_matrices(&self) -> usize {
        let mut all: Vec<&Matrix> = vec![&self.embed];
        all.extend(self.lm_head.as_ref());
        for l in &self.layers {
            all.extend([&l.qkv, &l.o]);
            match &l.ffn {
                Ffn::Dense { gate_up, up, down } => all.extend([Some(gate_up), up.as_ref(), Some(down)].into_iter().flatten()),
                Ffn::Moe { router, gate_up, up, down } => all.extend([Some(router), Some(gate_up), up.as_ref(), Some(down)].into_iter().flatten()),
            }
        }
        all.iter().filter(|m| m.slabs.windows(2).any(|w| w[0].dtype == w[1].dtype)).count()
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
    /// The naming of `arch` where the format spells families differently
    /// (HF MoE blocks: Mixtral's `block_sparse_moe`, Qwen3-MoE's `mlp`).
    fn for_arch(&self, _arch: Arch) -> Option<&'static dyn Naming> {
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
    OBias,
    GateBias,
    UpBias,
    DownBias,
    QNorm,
    KNorm,
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
            LayerTensor::OBias => format!("{p}.self_attn.o_proj.bias"),
            LayerTensor::GateBias => format!("{p}.mlp.gate_proj.bias"),
            LayerTensor::UpBias => format!("{p}.mlp.up_proj.bias"),
            LayerTensor::DownBias => format!("{p}.mlp.down_proj.bias"),
            LayerTensor::QNorm => format!("{p}.self_attn.q_norm.weight"),
            LayerTensor::KNorm => format!("{p}.self_attn.k_norm.weight"),
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
    fn for_arch(&self, arch: Arch) -> Option<&'static dyn Naming> {
        match arch {
            Arch::Qwen3Moe => Some(&HfQwenMoeNaming),
            _ => None,
        }
    }
}

/// HF names of Qwen3-MoE: the MoE block is `mlp`, its router `mlp.gate`, and
/// experts keep the dense MLP's names (transformers 5 saves them per expert).
pub struct HfQwenMoeNaming;

impl Naming for HfQwenMoeNaming {
    fn embed(&self) -> String {
        HfNaming.embed()
    }
    fn lm_head(&self) -> String {
        HfNaming.lm_head()
    }
    fn norm(&self) -> String {
        HfNaming.norm()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        match what {
            LayerTensor::Router => format!("model.layers.{l}.mlp.gate.weight"),
            _ => HfNaming.layer(l, what),
        }
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        let w = match what {
            ExpertTensor::Gate => "gate_proj",
            ExpertTensor::Up => "up_proj",
            ExpertTensor::Down => "down_proj",
        };
        format!("model.layers.{l}.mlp.experts.{e}.{w}.weight")
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
            LayerTensor::OBias => "attn_output.bias",
            LayerTensor::GateBias => "ffn_gate.bias",
            LayerTensor::UpBias => "ffn_up.bias",
            LayerTensor::DownBias => "ffn_down.bias",
            LayerTensor::QNorm => "attn_q_norm.weight",
            LayerTensor::KNorm => "attn_k_norm.weight",
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

/// One source tensor's place in a destination: for a matrix, `tensor`'s rows
/// become rows `row ..` of expert `expert` (rows count across halves); for a
/// vector, its elements start at element `row`.
struct Part {
    tensor: TensorInfo,
    dest: usize,
    expert: usize,
    row: usize,
}

/// A contiguous run of a part's bytes and where it lands.
struct Piece {
    /// Bytes from the start of the source tensor.
    src: u64,
    len: u64,
    slab: usize,
    /// Byte offset in the slab's buffer (in the destination dtype).
    at: u64,
    /// Elements of the source tensor this piece covers (for converted parts).
    elems: std::ops::Range<usize>,
}

/// A GPU buffer to create: its shape and the parts that fill it.
struct Dest {
    label: String,
    /// Outputs per half (the vector's length for vectors).
    outputs: usize,
    halves: usize,
    cols: usize,
    experts: usize,
    vector: bool,
    /// Output ranges, one per buffer, and each one's storage type.
    slabs: Vec<std::ops::Range<usize>>,
    slab_dtypes: Vec<DType>,
    bufs: Vec<wgpu::Buffer>,
}

impl Dest {
    fn slab_bytes(&self, si: usize) -> u64 {
        let (Some(s), Some(dtype)) = (self.slabs.get(si), self.slab_dtypes.get(si)) else { return u64::MAX };
        let elems = if self.vector { self.outputs } else { self.experts * self.halves * s.len() * self.cols };
        dtype.nbytes(elems as u64).unwrap_or(u64::MAX)
    }

    /// Where the source rows of `part` land, slab by slab.
    fn pieces(&self, part: &Part) -> Vec<Piece> {
        let t = &part.tensor;
        if self.vector {
            let n = t.numel() as usize;
            return vec![Piece { src: 0, len: t.nbytes, slab: 0, at: 4 * part.row as u64, elems: 0..n }];
        }
        let cols = self.cols;
        let n = (t.numel() as usize) / cols.max(1);
        let row_bytes = |si: usize, r: usize| {
            self.slab_dtypes.get(si).and_then(|d| d.nbytes((r * cols) as u64)).unwrap_or(0)
        };
        let src_bytes = |r: usize| t.dtype.nbytes((r * cols) as u64).unwrap_or(0);
        let mut out = Vec::new();
        for (si, s) in self.slabs.iter().enumerate() {
            for hf in 0..self.halves {
                // This slab holds dest rows [hf * outputs + s.start, hf * outputs + s.end).
                let first = hf * self.outputs + s.start;
                let lo = part.row.max(first);
                let hi = (part.row + n).min(first + s.len());
                if lo >= hi {
                    continue;
                }
                let slab_row = (part.expert * self.halves + hf) * s.len() + (lo - first);
                out.push(Piece {
                    src: src_bytes(lo - part.row),
                    len: src_bytes(hi - lo),
                    slab: si,
                    at: row_bytes(si, slab_row),
                    elems: (lo - part.row) * cols..(hi - part.row) * cols,
                });
            }
        }
        out
    }
}

struct Plan<'a> {
    table: &'a TensorTable,
    dests: Vec<Dest>,
    parts: Vec<Part>,
    /// Largest buffer a kernel may bind.
    limit: u64,
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

    /// A matrix of `experts` blocks of `halves` x `outputs` rows filled from
    /// `found`: (expert, first row, tensor).
    #[allow(clippy::too_many_arguments)]
    fn matrix(&mut self, label: String, outputs: usize, halves: usize, cols: usize, experts: usize,
              found: Vec<(usize, usize, TensorInfo)>) -> Result<usize> {
        let first = found.first().map(|f| f.2.dtype).unwrap_or(DType::F32);
        let same = found.iter().all(|f| f.2.dtype == first);
        // Candidate layouts, best first: the file's type throughout; for a
        // dense matrix of parts in different types (q/k/v), a slab per part in
        // its own type; f32 (dequantized on the host: correct, but larger).
        let mut candidates = Vec::new();
        if same && first != DType::F32 {
            let slabs = self.slabs(&label, 0..outputs, halves, cols, experts, first)?;
            candidates.push((vec![first; slabs.len()], slabs));
        }
        if !same && halves == 1 && experts == 1 {
            let mut parts: Vec<&(usize, usize, TensorInfo)> = found.iter().collect();
            parts.sort_by_key(|p| p.1);
            let (mut slabs, mut types) = (Vec::new(), Vec::new());
            for (_, r, t) in parts {
                let n = t.shape.first().copied().unwrap_or(0) as usize;
                for sl in self.slabs(&label, *r..r + n, 1, cols, 1, t.dtype)? {
                    slabs.push(sl);
                    types.push(t.dtype);
                }
            }
            candidates.push((types, slabs));
        }
        let slabs = self.slabs(&label, 0..outputs, halves, cols, experts, DType::F32)?;
        candidates.push((vec![DType::F32; slabs.len()], slabs));
        let mut chosen = None;
        for (slab_dtypes, slabs) in candidates {
            let all_f32 = slab_dtypes.iter().all(|&d| d == DType::F32);
            let d = Dest { label: label.clone(), outputs, halves, cols, experts, vector: false, slabs, slab_dtypes, bufs: Vec::new() };
            // Every part must land on whole words, and the slabs must cover
            // every output exactly once.
            let covered = d.slabs.iter().map(|s| s.len()).sum::<usize>() == outputs
                && d.slabs.windows(2).all(|w| w[0].end <= w[1].start);
            let fits = covered
                && found.iter().all(|(e, r, t)| {
                    d.pieces(&Part { tensor: t.clone(), dest: 0, expert: *e, row: *r }).iter().all(|p| {
                        let same_type = d.slab_dtypes.get(p.slab) == Some(&t.dtype);
                        let end = d.slab_bytes(p.slab);
                        !same_type || (p.at % 4 == 0 && (p.len % 4 == 0 || p.at + p.len == end))
                    })
                });
            if fits || all_f32 {
                chosen = Some(d);
                break;
            }
        }
        let d = chosen.ok_or_else(|| Error::Internal("no layout for a weight".into()))?;
        let dest = self.dests.len();
        self.dests.push(d);
        for (e, r, t) in found {
            self.parts.push(Part { tensor: t, dest, expert: e, row: r });
        }
        Ok(dest)
    }

    /// Output ranges so that each buffer fits the binding limit: one range
    /// unless the matrix is too big.
    fn slabs(&self, label: &str, outputs: std::ops::Range<usize>, halves: usize, cols: usize, experts: usize,
             dtype: DType) -> Result<Vec<std::ops::Range<usize>>> {
        let per_output = dtype.nbytes((experts * halves * cols) as u64).unwrap_or(u64::MAX);
        if per_output.saturating_mul(outputs.len() as u64) <= self.limit {
            return Ok(std::iter::once(outputs).collect());
        }
        let fit = (self.limit / per_output) as usize;
        // Multiples of the matmul tile keep every slab's tiles full.
        let step = if fit >= 32 { fit / 32 * 32 } else { fit };
        if step == 0 {
            return Err(Error::Unsupported(format!(
                "weight `{label}`: one output row needs {per_output} bytes; this device binds at most {} bytes",
                self.limit
            )));
        }
        let end = outputs.end;
        Ok(outputs.step_by(step).map(|a| a..(a + step).min(end)).collect())
    }

    /// A dense matrix from named parts: (first row, name, rows).
    fn dense(&mut self, label: String, outputs: usize, halves: usize, cols: usize,
             parts: &[(usize, String, usize)]) -> Result<usize> {
        let found = parts
            .iter()
            .map(|(r, name, n)| Ok((0, *r, self.find(name, &[*n, cols])?)))
            .collect::<Result<Vec<_>>>()?;
        self.matrix(label, outputs, halves, cols, 1, found)
    }

    /// All experts of one layer, each expert's block stacking `parts` (what, first row, rows).
    #[allow(clippy::too_many_arguments)]
    fn experts(&mut self, label: String, naming: &dyn Naming, l: usize, n_experts: usize, outputs: usize,
               halves: usize, cols: usize, parts: &[(ExpertTensor, usize, usize)]) -> Result<usize> {
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
        self.matrix(label, outputs, halves, cols, n_experts, found)
    }

    /// The one type of every expert's `what` tensor (`None`: missing, or the
    /// experts differ among themselves).
    fn expert_types(&self, naming: &dyn Naming, l: usize, n_experts: usize, what: ExpertTensor) -> Option<DType> {
        if let Some(t) = naming.experts_fused(l, what).and_then(|f| self.table.get(&f)) {
            return Some(t.dtype);
        }
        let types: Vec<DType> = (0..n_experts).filter_map(|e| self.table.get(&naming.expert(l, e, what)).map(|t| t.dtype)).collect();
        let first = *types.first()?;
        (types.len() == n_experts && types.iter().all(|&t| t == first)).then_some(first)
    }

    /// An f32 vector filled from `parts`: (first element, name, len).
    fn vector(&mut self, label: String, len: usize, parts: &[(usize, String, usize)]) -> Result<usize> {
        let found: Vec<(usize, TensorInfo)> = parts
            .iter()
            .map(|(o, name, n)| Ok((*o, self.find(name, &[*n])?)))
            .collect::<Result<_>>()?;
        let dest = self.dests.len();
        self.dests.push(Dest {
            label, outputs: len, halves: 1, cols: 1, experts: 1, vector: true,
            slabs: std::iter::once(0..len).collect(), slab_dtypes: vec![DType::F32], bufs: Vec::new(),
        });
        for (o, t) in found {
            self.parts.push(Part { tensor: t, dest, expert: 0, row: o });
        }
        Ok(dest)
    }
}

/// A feed-forward block's planned weights: gate/up (stacked when of one type;
/// else the gate alone, with `up` beside it), down, and a MoE router.
enum FfnIdx {
    Dense { gate_up: usize, up: Option<usize>, down: usize },
    Moe { router: usize, gate_up: usize, up: Option<usize>, down: usize },
}

struct LayerIdx {
    attn_norm: usize,
    qkv: usize,
    qkv_bias: Option<usize>,
    o: usize,
    o_bias: Option<usize>,
    qk_norm: Option<usize>,
    ffn_norm: usize,
    ffn: FfnIdx,
    /// Stacked gate/up biases and the down bias (dense MLPs with `mlp_bias`).
    mlp_bias: Option<(usize, usize)>,
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

/// Tensors the graph does not use but that checkpoints carry harmlessly:
/// RoPE buffers older transformers saved (rebuilt from the config), and GGUF
/// `rope_freqs` (read by the model into its RoPE table).
fn ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || name == "rope_freqs.weight"
}

/// A tensor in the files that the graph does not use means the checkpoint
/// holds something this engine would silently drop (a bias, a norm, a
/// different architecture's piece): refuse it by name, before any download.
fn check_all_used<'a>(table: &TensorTable, plan: &'a Plan<'_>, cfg: &ModelConfig) -> Result<()> {
    // A fused expert tensor is read in per-expert slices named `name[e]`.
    let base = |n: &'a str| -> &'a str { n.strip_suffix(']').and_then(|s| s.rsplit_once('[')).map_or(n, |(b, _)| b) };
    let used: std::collections::HashSet<&str> = plan.parts.iter().map(|p| base(p.tensor.name.as_str())).collect();
    let mut unused: Vec<&TensorInfo> = table.tensors.values().filter(|t| !used.contains(t.name.as_str()) && !ignorable(&t.name)).collect();
    unused.sort_by(|a, b| a.name.cmp(&b.name));
    match unused.first() {
        None => Ok(()),
        Some(t) => Err(Error::tensor(
            &t.file,
            &t.name,
            format!(
                "present in the files but not used by the {:?} graph{} (a feature this engine does not implement)",
                cfg.arch,
                if unused.len() > 1 { format!(", nor are {} more", unused.len() - 1) } else { String::new() }
            ),
        )),
    }
}

/// Check, allocate and upload every weight of `cfg` from `src`. `budget`:
/// the GPU bytes the weights may take (`max_gpu_bytes` less the rest), checked
/// before anything is allocated or downloaded.
#[allow(clippy::too_many_arguments)]
pub async fn load_weights<S: ModelSource>(
    gpu: &Gpu,
    src: &S,
    cfg: &ModelConfig,
    table: &TensorTable,
    naming: &dyn Naming,
    parallel: usize,
    max_binding: Option<u64>,
    budget: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Weights> {
    let (h, v) = (cfg.hidden, cfg.vocab);
    let (qd, kvd, inter) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    let qkv_rows = qd + 2 * kvd;
    let limit = gpu.max_binding().min(max_binding.unwrap_or(u64::MAX)).max(4);
    let mut plan = Plan { table, dests: Vec::new(), parts: Vec::new(), limit };
    let naming = naming.for_arch(cfg.arch).unwrap_or(naming);

    let embed = plan.dense("embed".into(), v, 1, h, &[(0, naming.embed(), v)])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |w| naming.layer(l, w);
        let attn_norm = plan.vector(format!("l{l}.attn_norm"), h, &[(0, n(LayerTensor::AttnNorm), h)])?;
        let qkv = plan.dense(format!("l{l}.qkv"), qkv_rows, 1, h, &[
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
        let o = plan.dense(format!("l{l}.o"), h, 1, qd, &[(0, n(LayerTensor::O), h)])?;
        let o_bias = if cfg.o_bias { Some(plan.vector(format!("l{l}.o_bias"), h, &[(0, n(LayerTensor::OBias), h)])?) } else { None };
        let hd = cfg.head_dim;
        let qk_norm = if cfg.qk_norm {
            Some(plan.vector(format!("l{l}.qk_norm"), 2 * hd, &[(0, n(LayerTensor::QNorm), hd), (hd, n(LayerTensor::KNorm), hd)])?)
        } else {
            None
        };
        let mlp_bias = if cfg.mlp_bias && cfg.moe.is_none() {
            Some((
                plan.vector(format!("l{l}.gate_up_bias"), 2 * inter, &[(0, n(LayerTensor::GateBias), inter), (inter, n(LayerTensor::UpBias), inter)])?,
                plan.vector(format!("l{l}.down_bias"), h, &[(0, n(LayerTensor::DownBias), h)])?,
            ))
        } else {
            None
        };
        let ffn_norm = plan.vector(format!("l{l}.ffn_norm"), h, &[(0, n(LayerTensor::FfnNorm), h)])?;
        let ffn = match &cfg.moe {
            None => {
                // Gate and up in different types (a mixed quantization) stay
                // in their own types: two dispatches instead of one stacked.
                let ty = |w| table.get(&n(w)).map(|t: &TensorInfo| t.dtype);
                let split = matches!((ty(LayerTensor::Gate), ty(LayerTensor::Up)), (Some(a), Some(b)) if a != b);
                if split && cfg.mlp_bias {
                    return Err(Error::Unsupported(format!("layer {l}: gate and up of different types with MLP biases")));
                }
                let (gate_up, up) = if split {
                    (
                        plan.dense(format!("l{l}.gate"), inter, 1, h, &[(0, n(LayerTensor::Gate), inter)])?,
                        Some(plan.dense(format!("l{l}.up"), inter, 1, h, &[(0, n(LayerTensor::Up), inter)])?),
                    )
                } else {
                    let parts = [(0, n(LayerTensor::Gate), inter), (inter, n(LayerTensor::Up), inter)];
                    (plan.dense(format!("l{l}.gate_up"), inter, 2, h, &parts)?, None)
                };
                let down = plan.dense(format!("l{l}.down"), h, 1, inter, &[(0, n(LayerTensor::Down), h)])?;
                FfnIdx::Dense { gate_up, up, down }
            }
            Some(moe) => {
                let ne = moe.n_experts;
                let router = plan.dense(format!("l{l}.router"), ne, 1, h, &[(0, n(LayerTensor::Router), ne)])?;
                let (gt, ut) = (plan.expert_types(naming, l, ne, ExpertTensor::Gate), plan.expert_types(naming, l, ne, ExpertTensor::Up));
                let (gate_up, up) = match (gt, ut) {
                    (Some(a), Some(b)) if a != b => (
                        plan.experts(format!("l{l}.experts.gate"), naming, l, ne, inter, 1, h, &[(ExpertTensor::Gate, 0, inter)])?,
                        Some(plan.experts(format!("l{l}.experts.up"), naming, l, ne, inter, 1, h, &[(ExpertTensor::Up, 0, inter)])?),
                    ),
                    _ => {
                        let parts = [(ExpertTensor::Gate, 0, inter), (ExpertTensor::Up, inter, inter)];
                        (plan.experts(format!("l{l}.experts.gate_up"), naming, l, ne, inter, 2, h, &parts)?, None)
                    }
                };
                let down = plan.experts(format!("l{l}.experts.down"), naming, l, ne, h, 1, inter, &[(ExpertTensor::Down, 0, h)])?;
                FfnIdx::Moe { router, gate_up, up, down }
            }
        };
        layers.push(LayerIdx { attn_norm, qkv, qkv_bias, o, o_bias, qk_norm, ffn_norm, ffn, mlp_bias });
    }
    let norm = plan.vector("norm".into(), h, &[(0, naming.norm(), h)])?;
    let lm_head = if cfg.tie_embeddings && table.get(&naming.lm_head()).is_none() {
        None
    } else {
        Some(plan.dense("lm_head".into(), v, 1, h, &[(0, naming.lm_head(), v)])?)
    };

    check_all_used(table, &plan, cfg)?;

    // Allocate. Sizes are checked against the device's binding limit first, so a
    // model that cannot fit fails before any upload.
    let mut bytes = 0u64;
    for d in &plan.dests {
        for si in 0..d.slabs.len() {
            let size = d.slab_bytes(si);
            if size > limit {
                return Err(Error::Unsupported(format!(
                    "weight `{}` needs a {size}-byte buffer; this device binds at most {limit} bytes",
                    d.label
                )));
            }
            bytes = bytes.saturating_add(size);
        }
    }
    if let Some(budget) = budget.filter(|&b| bytes > b) {
        return Err(Error::OutOfMemory(format!(
            "the weights need {bytes} bytes of GPU memory; {budget} bytes are left of the GPU memory limit (max_gpu_bytes) after the KV cache and activations"
        )));
    }
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    for d in plan.dests.iter_mut() {
        let many = d.slabs.len() > 1;
        d.bufs = d
            .slabs
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let label = if many { format!("{}[{}..{}]", d.label, s.start, s.end) } else { d.label.clone() };
                gpu.storage(&label, d.slab_bytes(si))
            })
            .collect();
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
                let pieces = dest.pieces(part);
                let buf = |p: &Piece| dest.bufs.get(p.slab).ok_or_else(|| Error::Internal("weight buffer missing".into()));
                let as_is = |p: &Piece| dest.slab_dtypes.get(p.slab) == Some(&t.dtype);
                if pieces.iter().all(as_is) {
                    // Same format: copy in pieces, so host (wasm) memory holds one
                    // piece per stream, never a whole tensor.
                    for p in &pieces {
                        let buf = buf(p)?;
                        let mut off = 0u64;
                        while off < p.len {
                            let n = UPLOAD_PIECE.min(p.len - off);
                            let mut data = src.read(&t.file, t.offset + p.src + off, n).await?;
                            if data.len() as u64 != n {
                                return Err(Error::tensor(&src.describe(&t.file), &t.name, "short read"));
                            }
                            data.resize(data.len().next_multiple_of(4), 0);
                            gpu.queue.write_buffer(buf, p.at + off, &data);
                            off += n;
                            advance(n);
                        }
                    }
                } else {
                    // Converted to f32 (norms, biases, and the rare fallback).
                    let raw = src.read(&t.file, t.offset, t.nbytes).await?;
                    if raw.len() as u64 != t.nbytes {
                        return Err(Error::tensor(&src.describe(&t.file), &t.name, "short read"));
                    }
                    let values = dequantize(t.dtype, &raw);
                    for p in &pieces {
                        let v = values.get(p.elems.clone()).ok_or_else(|| Error::Internal("weight piece out of range".into()))?;
                        gpu.queue.write_buffer(buf(p)?, p.at, bytemuck::cast_slice(v));
                    }
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
        dests.get_mut(i).and_then(Option::take).ok_or_else(|| Error::Internal("weight planned twice".into()))
    };
    let matrix = |d: Dest| -> Result<Matrix> {
        debug_assert!(!d.vector);
        if d.bufs.len() != d.slabs.len() {
            return Err(Error::Internal("unallocated weight".into()));
        }
        let slabs = d
            .bufs
            .into_iter()
            .zip(d.slabs)
            .zip(d.slab_dtypes)
            .map(|((buf, s), dtype)| {
                let info = gpu.uniform_init("slab", bytemuck::cast_slice(&[s.start as u32, s.len() as u32, 0, 0]));
                Slab { buf, dtype, row0: s.start, rows: s.len(), info }
            })
            .collect();
        Ok(Matrix { slabs, outputs: d.outputs, halves: d.halves, cols: d.cols, experts: d.experts })
    };
    fn vector(d: Dest) -> Result<wgpu::Buffer> {
        d.bufs.into_iter().next().ok_or_else(|| Error::Internal("unallocated weight".into()))
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
            o_bias: match li.o_bias {
                Some(b) => Some(vector(take(b)?)?),
                None => None,
            },
            qk_norm: match li.qk_norm {
                Some(b) => Some(vector(take(b)?)?),
                None => None,
            },
            mlp_bias: match li.mlp_bias {
                Some((gu, d)) => Some((vector(take(gu)?)?, vector(take(d)?)?)),
                None => None,
            },
            ffn_norm: vector(take(li.ffn_norm)?)?,
            ffn: match li.ffn {
                FfnIdx::Dense { gate_up, up, down } => Ffn::Dense {
                    gate_up: matrix(take(gate_up)?)?,
                    up: match up {
                        Some(u) => Some(matrix(take(u)?)?),
                        None => None,
                    },
                    down: matrix(take(down)?)?,
                },
                FfnIdx::Moe { router, gate_up, up, down } => Ffn::Moe {
                    router: matrix(take(router)?)?,
                    gate_up: matrix(take(gate_up)?)?,
                    up: match up {
                        Some(u) => Some(matrix(take(u)?)?),
                        None => None,
                    },
                    down: matrix(take(down)?)?,
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
