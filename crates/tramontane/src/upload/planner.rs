//! The weights' layout, decided from the config and the tensor table alone
//! (no GPU): which buffers to create, in which types, and where each source
//! tensor's bytes land in them. Every tensor's presence and shape is checked,
//! and every tensor in the files must be used, before anything is allocated.
//!
//! q/k/v are stacked into one matrix (one matmul), gate/up are stacked
//! (SwiGLU epilogue), experts of a layer share one buffer (the MoE matvec
//! indexes it by expert id). Matrices keep their file dtype; vectors (norms,
//! biases) are converted to f32.
//!
//! A matrix larger than the device lets a kernel bind (WebGPU's default
//! `maxStorageBufferBindingSize` is 128 MiB; big vocabularies exceed it) is cut
//! into slabs by output row: each slab is its own buffer holding a range of
//! outputs for every expert and half, `[experts][halves][slab rows][cols]`, and
//! the kernels run once per slab. Slabs also keep q, k and v in their own
//! types when a file mixes them (Q4_K_M stores attn_v as q6_K): each slab has
//! its own dtype and its own kernel specialization.

use std::ops::Range;

use super::interleave::{unit_elems, RUN};
use super::naming::{ExpertTensor, LayerTensor, Naming};
use super::repack::{gpu_nbytes, packing};
use crate::error::{Error, Result};
use crate::parse::{DType, ModelConfig, TensorInfo, TensorTable};

/// The planned weights: buffers to create, the parts that fill them, and
/// which buffer is which weight.
pub(super) struct Layout {
    pub dests: Vec<Dest>,
    pub parts: Vec<Part>,
    pub embed: usize,
    pub layers: Vec<LayerIdx>,
    pub norm: usize,
    /// `None` when the LM head is tied to the embeddings.
    pub lm_head: Option<usize>,
    /// The image side of a vision checkpoint.
    pub vision: Option<VisionIdx>,
    /// Bytes of every buffer.
    pub bytes: u64,
    /// Matrices go into textures once uploaded (as the interleaved rows).
    pub textures: bool,
}

/// Plan every weight of `cfg` found in `table` under `naming`, in buffers of
/// at most `limit` bytes; `interleave`: matrices of the types that can will
/// have their rows interleaved by 8 (interleave.rs), their last run padded.
pub(super) fn plan(cfg: &ModelConfig, table: &TensorTable, naming: &dyn Naming, limit: u64, interleave: bool) -> Result<Layout> {
    let (h, v) = (cfg.hidden, cfg.vocab);
    let (qd, kvd, inter) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    let qkv_rows = qd + 2 * kvd;
    let mut plan = Planner { table, dests: Vec::new(), parts: Vec::new(), limit, interleave };
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

    let vision = match &cfg.vision {
        Some(vc) => Some(plan_vision(&mut plan, vc, cfg.hidden)?),
        None => None,
    };
    check_all_used(table, &plan.parts, cfg)?;
    // Vectors are not split: a huge one fails here, before any upload.
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
    Ok(Layout { dests: plan.dests, parts: plan.parts, embed, layers, norm, lm_head, vision, bytes, textures: interleave })
}

/// The image side (vision/): Pixtral's encoder, then the projector into the
/// text model's width `text_hidden`. Checkpoint names as parse/hf.rs keys
/// them. The patch convolution's `[hidden, channels, p, p]` weight is the
/// `[hidden, channels * p * p]` matrix of a matmul over flattened patches.
fn plan_vision(plan: &mut Planner, vc: &crate::vision::VisionConfig, text_hidden: usize) -> Result<VisionIdx> {
    let (h, inter, p) = (vc.hidden, vc.intermediate, vc.patch);
    let cols = vc.channels * p * p;
    let conv = "vision_tower.patch_conv.weight";
    let t = plan.find(conv, &[h, vc.channels, p, p])?;
    let patch = plan.matrix("vision.patch".into(), h, 1, cols, 1, vec![(0, 0, TensorInfo { shape: vec![h as u64, cols as u64], ..t })])?;
    let ln_pre = plan.vector("vision.ln_pre".into(), h, &[(0, "vision_tower.ln_pre.weight".into(), h)])?;
    let mut layers = Vec::with_capacity(vc.feature_layers);
    for l in 0..vc.feature_layers {
        let n = |what: &str| format!("vision_tower.transformer.layers.{l}.{what}.weight");
        layers.push(VisionLayerIdx {
            attn_norm: plan.vector(format!("vision.l{l}.attn_norm"), h, &[(0, n("attention_norm"), h)])?,
            qkv: plan.dense(format!("vision.l{l}.qkv"), 3 * h, 1, h, &[
                (0, n("attention.q_proj"), h),
                (h, n("attention.k_proj"), h),
                (2 * h, n("attention.v_proj"), h),
            ])?,
            o: plan.dense(format!("vision.l{l}.o"), h, 1, h, &[(0, n("attention.o_proj"), h)])?,
            ffn_norm: plan.vector(format!("vision.l{l}.ffn_norm"), h, &[(0, n("ffn_norm"), h)])?,
            gate_up: plan.dense(format!("vision.l{l}.gate_up"), inter, 2, h, &[
                (0, n("feed_forward.gate_proj"), inter),
                (inter, n("feed_forward.up_proj"), inter),
            ])?,
            down: plan.dense(format!("vision.l{l}.down"), h, 1, inter, &[(0, n("feed_forward.down_proj"), h)])?,
        });
    }
    let pj = |what: &str| format!("multi_modal_projector.{what}");
    let (proj_norm, merger) = match vc.projector {
        crate::vision::Projector::Mistral3 { merge } => (
            Some(plan.vector("vision.proj_norm".into(), h, &[(0, pj("norm.weight"), h)])?),
            Some(plan.dense("vision.merger".into(), h, 1, h * merge * merge, &[(0, pj("patch_merger.merging_layer.weight"), h)])?),
        ),
        crate::vision::Projector::Llava => (None, None),
    };
    let th = text_hidden;
    let bias = |plan: &mut Planner, name: &str| -> Result<Option<usize>> {
        if vc.projector_bias { Ok(Some(plan.vector(format!("vision.{name}_bias"), th, &[(0, pj(&format!("{name}.bias")), th)])?)) } else { Ok(None) }
    };
    Ok(VisionIdx {
        patch,
        ln_pre,
        layers,
        proj_norm,
        merger,
        linear_1: plan.dense("vision.linear_1".into(), th, 1, h, &[(0, pj("linear_1.weight"), th)])?,
        linear_1_bias: bias(plan, "linear_1")?,
        linear_2: plan.dense("vision.linear_2".into(), th, 1, th, &[(0, pj("linear_2.weight"), th)])?,
        linear_2_bias: bias(plan, "linear_2")?,
    })
}

/// The planned weights of the image side.
pub(super) struct VisionIdx {
    pub patch: usize,
    pub ln_pre: usize,
    pub layers: Vec<VisionLayerIdx>,
    pub proj_norm: Option<usize>,
    pub merger: Option<usize>,
    pub linear_1: usize,
    pub linear_1_bias: Option<usize>,
    pub linear_2: usize,
    pub linear_2_bias: Option<usize>,
}

pub(super) struct VisionLayerIdx {
    pub attn_norm: usize,
    pub qkv: usize,
    pub o: usize,
    pub ffn_norm: usize,
    /// Gate and up stacked (halves), for the SwiGLU-shaped epilogue.
    pub gate_up: usize,
    pub down: usize,
}

/// One source tensor's place in a destination: for a matrix, `tensor`'s rows
/// become rows `row ..` of expert `expert` (rows count across halves); for a
/// vector, its elements start at element `row`.
pub(super) struct Part {
    pub tensor: TensorInfo,
    pub dest: usize,
    pub expert: usize,
    pub row: usize,
}

/// A contiguous run of a part's bytes and where it lands.
pub(super) struct Piece {
    /// Bytes from the start of the source tensor.
    pub src: u64,
    pub len: u64,
    pub slab: usize,
    /// Byte offset in the slab's buffer (in the destination dtype).
    pub at: u64,
    /// Elements of the source tensor this piece covers (for converted parts).
    pub elems: Range<usize>,
}

/// A weight to create: its shape and its slabs (a GPU buffer each).
pub(super) struct Dest {
    pub label: String,
    /// Outputs per half (the vector's length for vectors).
    pub outputs: usize,
    pub halves: usize,
    pub cols: usize,
    pub experts: usize,
    pub vector: bool,
    /// Rows interleaved by 8 in the slabs whose type can be (interleave.rs).
    pub interleave: bool,
    /// Output ranges, one per buffer, and each one's storage type.
    pub slabs: Vec<Range<usize>>,
    pub slab_dtypes: Vec<DType>,
}

impl Dest {
    pub(super) fn slab_bytes(&self, si: usize) -> u64 {
        let (Some(s), Some(dtype)) = (self.slabs.get(si), self.slab_dtypes.get(si)) else { return u64::MAX };
        let rows = self.experts * self.halves * s.len();
        let rows = if self.interleaved(si) { rows.next_multiple_of(RUN as usize) } else { rows };
        let elems = if self.vector { self.outputs } else { rows * self.cols };
        gpu_nbytes(*dtype, elems as u64).unwrap_or(u64::MAX)
    }

    /// Whether slab `si` has its rows interleaved.
    pub(super) fn interleaved(&self, si: usize) -> bool {
        self.interleave && !self.vector && self.slab_dtypes.get(si).is_some_and(|&d| unit_elems(d).is_some())
    }

    /// Where the source rows of `part` land, slab by slab.
    pub(super) fn pieces(&self, part: &Part) -> Vec<Piece> {
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

struct Planner<'a> {
    table: &'a TensorTable,
    dests: Vec<Dest>,
    parts: Vec<Part>,
    /// Largest buffer a kernel may bind.
    limit: u64,
    interleave: bool,
}

impl<'a> Planner<'a> {
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
            let d = Dest { label: label.clone(), outputs, halves, cols, experts, vector: false, interleave: self.interleave, slabs, slab_dtypes };
            // Every part must land on whole words (regrouped types: on whole
            // blocks, which rows are), and the slabs must cover every output
            // exactly once.
            let covered = d.slabs.iter().map(|s| s.len()).sum::<usize>() == outputs
                && d.slabs.windows(2).all(|w| w[0].end <= w[1].start);
            let fits = covered
                && found.iter().all(|(e, r, t)| {
                    d.pieces(&Part { tensor: t.clone(), dest: 0, expert: *e, row: *r }).iter().all(|p| {
                        let same_type = d.slab_dtypes.get(p.slab) == Some(&t.dtype);
                        let end = d.slab_bytes(p.slab);
                        !same_type || packing(t.dtype).is_some() || (p.at % 4 == 0 && (p.len % 4 == 0 || p.at + p.len == end))
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
    fn slabs(&self, label: &str, outputs: Range<usize>, halves: usize, cols: usize, experts: usize,
             dtype: DType) -> Result<Vec<Range<usize>>> {
        let per_output = dtype.nbytes((experts * halves * cols) as u64).unwrap_or(u64::MAX);
        // A regrouped type's buffer ends in a whole group, an interleaved
        // one in a whole run of rows: room for their padding.
        let row = dtype.nbytes(cols as u64).unwrap_or(u64::MAX);
        let run = if self.interleave && unit_elems(dtype).is_some() { row.saturating_mul(RUN - 1) } else { 0 };
        let limit = self.limit.saturating_sub(packing(dtype).map_or(0, |p| p.group_bytes())).saturating_sub(run);
        if per_output.saturating_mul(outputs.len() as u64) <= limit {
            return Ok(std::iter::once(outputs).collect());
        }
        let fit = (limit / per_output) as usize;
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
            label, outputs: len, halves: 1, cols: 1, experts: 1, vector: true, interleave: false,
            slabs: std::iter::once(0..len).collect(), slab_dtypes: vec![DType::F32],
        });
        for (o, t) in found {
            self.parts.push(Part { tensor: t, dest, expert: 0, row: o });
        }
        Ok(dest)
    }
}

/// A feed-forward block's planned weights: gate/up (stacked when of one type;
/// else the gate alone, with `up` beside it), down, and a MoE router.
pub(super) enum FfnIdx {
    Dense { gate_up: usize, up: Option<usize>, down: usize },
    Moe { router: usize, gate_up: usize, up: Option<usize>, down: usize },
}

pub(super) struct LayerIdx {
    pub attn_norm: usize,
    pub qkv: usize,
    pub qkv_bias: Option<usize>,
    pub o: usize,
    pub o_bias: Option<usize>,
    pub qk_norm: Option<usize>,
    pub ffn_norm: usize,
    pub ffn: FfnIdx,
    /// Stacked gate/up biases and the down bias (dense MLPs with `mlp_bias`).
    pub mlp_bias: Option<(usize, usize)>,
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
fn check_all_used<'a>(table: &TensorTable, parts: &'a [Part], cfg: &ModelConfig) -> Result<()> {
    // A fused expert tensor is read in per-expert slices named `name[e]`.
    let base = |n: &'a str| -> &'a str { n.strip_suffix(']').and_then(|s| s.rsplit_once('[')).map_or(n, |(b, _)| b) };
    let used: std::collections::HashSet<&str> = parts.iter().map(|p| base(p.tensor.name.as_str())).collect();
    // Encoder layers after the one the image features come from are left in the files.
    let after_features = |key: &str| {
        cfg.vision.as_ref().is_some_and(|vc| {
            key.strip_prefix("vision_tower.transformer.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|l| l >= vc.feature_layers && l < vc.n_layers)
        })
    };
    let mut unused: Vec<&TensorInfo> =
        table.tensors.iter().filter(|(key, t)| !used.contains(t.name.as_str()) && !ignorable(&t.name) && !after_features(key)).map(|(_, t)| t).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::naming::{GgufNaming, HfNaming};

    /// A one-layer Llama: hidden 8, 2 heads of 4 (1 KV head), feed-forward 16,
    /// vocabulary 128; `extra` overrides config.json keys.
    fn config(extra: serde_json::Value) -> ModelConfig {
        let mut v = serde_json::json!({
            "model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 16, "num_hidden_layers": 1, "vocab_size": 128,
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        ModelConfig::from_json(v.to_string().as_bytes(), "config.json").expect("config")
    }

    /// Tensors laid one after another in one file.
    fn table(tensors: Vec<(String, DType, Vec<u64>)>) -> TensorTable {
        let mut offset = 0;
        let mut table = TensorTable { tensors: Default::default(), files: vec![("model.safetensors".into(), 0)] };
        for (name, dtype, shape) in tensors {
            let nbytes = dtype.nbytes(shape.iter().product()).expect("size");
            let t = TensorInfo { name: name.clone(), file: "model.safetensors".into(), dtype, shape, offset, nbytes };
            offset += nbytes;
            table.tensors.insert(name, t);
        }
        table.files[0].1 = offset;
        table
    }

    /// Every tensor of `cfg`'s dense layers under HF names, matrices in
    /// `dtype(name)`, vectors in f32.
    fn dense_tensors(cfg: &ModelConfig, dtype: impl Fn(&str) -> DType) -> Vec<(String, DType, Vec<u64>)> {
        let (h, v, i) = (cfg.hidden as u64, cfg.vocab as u64, cfg.intermediate as u64);
        let (qd, kvd) = (cfg.q_dim() as u64, cfg.kv_dim() as u64);
        let n = HfNaming;
        let mut out = vec![(n.embed(), vec![v, h]), (n.norm(), vec![h])];
        if !cfg.tie_embeddings {
            out.push((n.lm_head(), vec![v, h]));
        }
        for l in 0..cfg.n_layers {
            use LayerTensor::*;
            for (what, shape) in [
                (AttnNorm, vec![h]), (Q, vec![qd, h]), (K, vec![kvd, h]), (V, vec![kvd, h]), (O, vec![h, qd]),
                (FfnNorm, vec![h]), (Gate, vec![i, h]), (Up, vec![i, h]), (Down, vec![h, i]),
            ] {
                out.push((n.layer(l, what), shape));
            }
        }
        out.into_iter()
            .map(|(name, shape)| {
                let d = if shape.len() == 1 { DType::F32 } else { dtype(&name) };
                (name, d, shape)
            })
            .collect()
    }

    fn f16(_: &str) -> DType {
        DType::F16
    }

    /// The parts of the weight labelled `label`: (tensor, expert, row).
    fn parts_of<'l>(layout: &'l Layout, label: &str) -> Vec<&'l Part> {
        let d = layout.dests.iter().position(|d| d.label == label).expect(label);
        layout.parts.iter().filter(|p| p.dest == d).collect()
    }

    fn dest<'l>(layout: &'l Layout, label: &str) -> &'l Dest {
        layout.dests.iter().find(|d| d.label == label).expect(label)
    }

    fn err(r: Result<Layout>) -> String {
        match r {
            Ok(_) => panic!("planned"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn qkv_and_gate_up_are_stacked() {
        let cfg = config(serde_json::json!({}));
        let table = table(dense_tensors(&cfg, f16));
        let layout = plan(&cfg, &table, &HfNaming, u64::MAX, false).expect("plan");
        let qkv = dest(&layout, "l0.qkv");
        assert_eq!((qkv.outputs, qkv.halves, qkv.cols, qkv.slabs.len(), qkv.slabs[0].clone()), (16, 1, 8, 1, 0..16));
        assert_eq!(qkv.slab_dtypes, [DType::F16]);
        // q rows 0..8, k 8..12, v 12..16, each 8 f16 weights a row.
        let at: Vec<(String, usize, Vec<u64>)> = parts_of(&layout, "l0.qkv")
            .iter()
            .map(|p| (p.tensor.name.clone(), p.row, qkv.pieces(p).iter().map(|x| x.at).collect()))
            .collect();
        assert_eq!(at, [
            ("model.layers.0.self_attn.q_proj.weight".into(), 0, vec![0]),
            ("model.layers.0.self_attn.k_proj.weight".into(), 8, vec![8 * 16]),
            ("model.layers.0.self_attn.v_proj.weight".into(), 12, vec![12 * 16]),
        ]);
        // [gate; up] as two halves of 16 outputs.
        let gu = dest(&layout, "l0.gate_up");
        assert_eq!((gu.outputs, gu.halves), (16, 2));
        let up = parts_of(&layout, "l0.gate_up")[1];
        assert_eq!((up.row, gu.pieces(up)[0].at), (16, 16 * 16));
        // Vectors are f32, matrices keep the file's type.
        assert_eq!(dest(&layout, "l0.attn_norm").slab_dtypes, [DType::F32]);
        let bytes: u64 = (128 * 8 * 2) * 2 + 16 * 8 * 2 + 8 * 8 * 2 + 2 * 16 * 8 * 2 + 8 * 16 * 2 + 4 * 8 * 3;
        assert_eq!(layout.bytes, bytes);
        assert!(layout.lm_head.is_some());
    }

    /// With interleaved rows, a matrix of a type that interleaves takes whole
    /// runs of 8 rows (its last one padded); vectors and other types do not.
    #[test]
    fn interleaved_matrices_take_whole_runs_of_rows() {
        let cfg = config(serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
                                            "intermediate_size": 64}));
        let q8 = |name: &str| if name.contains("mlp") { DType::Q8_0 } else { DType::F16 };
        let table = table(dense_tensors(&cfg, q8));
        let plain = plan(&cfg, &table, &HfNaming, u64::MAX, false).expect("plan");
        let runs = plan(&cfg, &table, &HfNaming, u64::MAX, true).expect("plan");
        let row = DType::Q8_0.nbytes(64).expect("blocks");
        // [gate; up]: 2 x 64 rows of 64, whole runs.
        let (gu, gu_runs) = (dest(&plain, "l0.gate_up"), dest(&runs, "l0.gate_up"));
        assert!(gu_runs.interleaved(0) && !gu.interleaved(0));
        assert_eq!((gu.slab_bytes(0), gu_runs.slab_bytes(0)), (128 * row, 128 * row));
        let qkv = dest(&runs, "l0.qkv");
        assert!(!qkv.interleaved(0), "f16 keeps plain rows");
        assert!(!dest(&runs, "l0.attn_norm").interleaved(0), "vectors keep plain rows");
        // 36 rows of one half: a short last run, padded to 40.
        let cfg = config(serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
                                            "intermediate_size": 64, "vocab_size": 36}));
        let all_q8 = |name: &str| if name.contains("norm") { DType::F32 } else { DType::Q8_0 };
        let runs = plan(&cfg, &self::table(dense_tensors(&cfg, all_q8)), &HfNaming, u64::MAX, true).expect("plan");
        let embed = dest(&runs, "embed");
        assert!(embed.interleaved(0));
        assert_eq!(embed.slab_bytes(0), gpu_nbytes(DType::Q8_0, 40 * 64).expect("size"));
    }

    #[test]
    fn tied_embeddings_need_no_lm_head() {
        let cfg = config(serde_json::json!({"tie_word_embeddings": true}));
        let layout = plan(&cfg, &table(dense_tensors(&cfg, f16)), &HfNaming, u64::MAX, false).expect("plan");
        assert!(layout.lm_head.is_none());
    }

    #[test]
    fn matrices_over_the_binding_limit_split_by_output_rows() {
        let cfg = config(serde_json::json!({}));
        let table = table(dense_tensors(&cfg, f16));
        // 16 bytes an embedding row: 1024 bytes hold 64 rows (a multiple of 32).
        let layout = plan(&cfg, &table, &HfNaming, 1024, false).expect("plan");
        assert_eq!(dest(&layout, "embed").slabs, [0..64, 64..128]);
        assert_eq!(dest(&layout, "lm_head").slabs, [0..64, 64..128]);
        assert_eq!(dest(&layout, "l0.qkv").slabs, std::iter::once(0..16).collect::<Vec<_>>());
        // 256 bytes hold 8 rows of [gate; up] (32 bytes an output): each slab
        // is [gate rows; up rows] of its 8 outputs.
        let layout = plan(&cfg, &table, &HfNaming, 256, false).expect("plan");
        let gu = dest(&layout, "l0.gate_up");
        assert_eq!(gu.slabs, [0..8, 8..16]);
        assert!((0..2).all(|s| gu.slab_bytes(s) == 256));
        let up = parts_of(&layout, "l0.gate_up")[1];
        let pieces: Vec<(u64, u64, usize, u64)> = gu.pieces(up).iter().map(|p| (p.src, p.len, p.slab, p.at)).collect();
        assert_eq!(pieces, [(0, 128, 0, 128), (128, 128, 1, 128)]);
        // Slabs' bytes add up to the whole matrix.
        let whole = plan(&cfg, &table, &HfNaming, u64::MAX, false).expect("plan");
        assert_eq!(layout.bytes, whole.bytes);
    }

    #[test]
    fn a_row_over_the_binding_limit_is_refused() {
        let cfg = config(serde_json::json!({}));
        let e = err(plan(&cfg, &table(dense_tensors(&cfg, f16)), &HfNaming, 8, false));
        assert!(e.contains("weight `embed`") && e.contains("binds at most 8 bytes"), "{e}");
    }

    #[test]
    fn parts_of_different_types_keep_their_types() {
        let cfg = config(serde_json::json!({}));
        let mixed = |n: &str| if n.ends_with("v_proj.weight") || n.ends_with("up_proj.weight") { DType::BF16 } else { DType::F16 };
        let table = table(dense_tensors(&cfg, mixed));
        let layout = plan(&cfg, &table, &HfNaming, u64::MAX, false).expect("plan");
        // A slab per part, each in its part's type.
        let qkv = dest(&layout, "l0.qkv");
        assert_eq!(qkv.slabs, [0..8, 8..12, 12..16]);
        assert_eq!(qkv.slab_dtypes, [DType::F16, DType::F16, DType::BF16]);
        let v = parts_of(&layout, "l0.qkv")[2];
        let p = qkv.pieces(v);
        assert_eq!((p.len(), p[0].slab, p[0].at), (1, 2, 0));
        // Gate and up in different types are not stacked.
        match &layout.layers[0].ffn {
            FfnIdx::Dense { up: Some(up), .. } => assert_eq!(layout.dests[*up].slab_dtypes, [DType::BF16]),
            _ => panic!("gate and up stacked"),
        }
        assert!(layout.dests.iter().all(|d| d.label != "l0.gate_up"));
        assert_eq!(dest(&layout, "l0.gate").halves, 1);
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let cfg = config(serde_json::json!({}));
        let mut tensors = dense_tensors(&cfg, f16);
        tensors.retain(|t| t.0 != "model.layers.0.self_attn.k_proj.weight");
        let e = err(plan(&cfg, &table(tensors), &HfNaming, u64::MAX, false));
        assert!(e.contains("model.layers.0.self_attn.k_proj.weight") && e.contains("missing"), "{e}");

        let mut tensors = dense_tensors(&cfg, f16);
        for t in tensors.iter_mut().filter(|t| t.0 == "model.layers.0.mlp.down_proj.weight") {
            t.2 = vec![16, 8];
        }
        let e = err(plan(&cfg, &table(tensors), &HfNaming, u64::MAX, false));
        assert!(e.contains("down_proj") && e.contains("[16, 8]") && e.contains("[8, 16]"), "{e}");
    }

    #[test]
    fn unused_tensors_are_refused_but_rope_buffers_pass() {
        let cfg = config(serde_json::json!({}));
        let mut tensors = dense_tensors(&cfg, f16);
        tensors.push(("model.layers.0.self_attn.rotary_emb.inv_freq".into(), DType::F32, vec![2]));
        assert!(plan(&cfg, &table(tensors.clone()), &HfNaming, u64::MAX, false).is_ok());
        tensors.push(("model.layers.0.self_attn.q_proj.bias".into(), DType::F32, vec![8]));
        tensors.push(("model.layers.0.extra.weight".into(), DType::F32, vec![8]));
        let e = err(plan(&cfg, &table(tensors), &HfNaming, u64::MAX, false));
        assert!(e.contains("model.layers.0.extra.weight") && e.contains("not used") && e.contains("1 more"), "{e}");
    }

    #[test]
    fn fused_gguf_experts_are_read_in_per_expert_slices() {
        let cfg = config(serde_json::json!({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 1}));
        let (h, v, i) = (8u64, 128u64, 16u64);
        let n = GgufNaming;
        let mut tensors = vec![
            (n.embed(), DType::F16, vec![v, h]), (n.norm(), DType::F32, vec![h]), (n.lm_head(), DType::F16, vec![v, h]),
            (n.layer(0, LayerTensor::AttnNorm), DType::F32, vec![h]), (n.layer(0, LayerTensor::FfnNorm), DType::F32, vec![h]),
            (n.layer(0, LayerTensor::Q), DType::F16, vec![8, h]), (n.layer(0, LayerTensor::K), DType::F16, vec![4, h]),
            (n.layer(0, LayerTensor::V), DType::F16, vec![4, h]), (n.layer(0, LayerTensor::O), DType::F16, vec![h, 8]),
            (n.layer(0, LayerTensor::Router), DType::F16, vec![2, h]),
        ];
        for (w, shape) in [(ExpertTensor::Gate, vec![2, i, h]), (ExpertTensor::Up, vec![2, i, h]), (ExpertTensor::Down, vec![2, h, i])] {
            tensors.push((n.experts_fused(0, w).expect("fused"), DType::F16, shape));
        }
        let table = table(tensors);
        let layout = plan(&cfg, &table, &GgufNaming, u64::MAX, false).expect("plan");
        let gu = dest(&layout, "l0.experts.gate_up");
        assert_eq!((gu.experts, gu.halves, gu.outputs), (2, 2, 16));
        let up = table.get("blk.0.ffn_up_exps.weight").expect("up");
        let per = up.nbytes / 2;
        let slices: Vec<(String, usize, usize, u64)> = parts_of(&layout, "l0.experts.gate_up")
            .iter()
            .filter(|p| p.tensor.name.starts_with("blk.0.ffn_up_exps"))
            .map(|p| (p.tensor.name.clone(), p.expert, p.row, p.tensor.offset))
            .collect();
        assert_eq!(slices, [
            ("blk.0.ffn_up_exps.weight[0]".into(), 0, 16, up.offset),
            ("blk.0.ffn_up_exps.weight[1]".into(), 1, 16, up.offset + per),
        ]);
        // Expert 1's up rows land after expert 0's [gate; up] block.
        let last = parts_of(&layout, "l0.experts.gate_up").into_iter().last().expect("part");
        assert_eq!(gu.pieces(last)[0].at, (2 + 1) * 16 * 8 * 2);
    }
}
