//! The dispatch plan: every pipeline and bind group of a pass, made once at
//! load from the weights and the buffers, and the order a pass records them in.

use super::buffers::Buffers;
use super::linear::{linear_binds, residual, with_norm, with_rope, Linear};
use super::pass::MAX_SPLITS;
use super::{Output, Visit};
use crate::error::{Error, Result};
use crate::gpu::bindings::{attention as at, common::STEP, embed, matmul as mm, moe, rmsnorm as rn, rope, rotary, sample};
use crate::gpu::kernels::{Dispatch, Spec};
use crate::gpu::profile::{AttentionEntry, DeviceProfile, MatmulEntry};
use crate::gpu::{Family, Gpu};
use crate::parse::ModelConfig;
use crate::upload::{Ffn, LayerWeights, Weights};

struct LayerPlan {
    /// Prefill's; decode's is in `qkv_mv` where the profile's `norm_in_matvec`.
    attn_norm: Dispatch,
    /// Decode skips the norm dispatches (the matvecs after them apply them).
    attn_norm_in_mv: bool,
    ffn_norm_in_mv: bool,
    /// Decode skips `rope` (`qkv_mv` rotates and stores: [`DeviceProfile::rope_in_matvec_for`]).
    rope_in_mv: bool,
    qkv_mv: Linear,
    qkv_mm: Linear,
    rope: Dispatch,
    attend_decode: DecodeAttention,
    attend_prefill: PrefillAttention,
    combine: Dispatch,
    o_mv: Linear,
    o_mm: Linear,
    ffn_norm: Dispatch,
    ffn: FfnPlan,
}

/// `up_*` are there when gate and up are stored in different types: the gate
/// dispatch writes the gate projection, the up one combines (`GATE_IN_Y`).
enum FfnPlan {
    Dense { gate_up_mv: Linear, gate_up_mm: Linear, up_mv: Option<Linear>, up_mm: Option<Linear>, down_mv: Linear, down_mm: Linear },
    /// Decode runs the experts as matvecs over the t*k (token, slot) rows
    /// (`*_mv`); prefill sorts those rows by expert (`group`) and runs each
    /// expert's rows as tiles of one matmul (`*_mm`, weights read once a tile).
    Moe {
        router: Linear,
        route: Dispatch,
        group: Dispatch,
        gate_up_mv: Linear,
        gate_up_mm: Linear,
        up_mv: Option<Linear>,
        up_mm: Option<Linear>,
        down_mv: Linear,
        down_mm: Linear,
        combine: Dispatch,
    },
}

/// The final norm and LM head over every row ([`Output::AllLogits`]), made on
/// first use.
struct AllLogits {
    buf: wgpu::Buffer,
    norm: Dispatch,
    lm_head: Linear,
}

pub(super) struct Plan {
    /// One per slab of the embedding matrix.
    embed: Vec<Dispatch>,
    layers: Vec<LayerPlan>,
    /// None: the LM head's matvec applies it (the profile's `norm_in_matvec`).
    final_norm: Option<Dispatch>,
    lm_head: Linear,
    pub sample: Dispatch,
    all_logits: Option<AllLogits>,
}

/// The RMSNorm dispatch's kernel (the self-test builds the same one).
pub(super) fn norm_spec(p: &DeviceProfile, cfg: &ModelConfig) -> Spec {
    Spec::new(Family::RmsNorm, "main")
        .with("H", cfg.hidden as u32)
        .with("EPS", cfg.rms_eps)
        .with("LAST_ROW", 0u32)
        .lanes(p.lanes)
}

/// Layer `l`'s attention kernel `entry` over `slots` KV cache slots (the
/// self-test builds the same ones).
pub(super) fn attention_spec(cfg: &ModelConfig, l: usize, slots: usize, kv_f16: bool, entry: AttentionEntry) -> Spec {
    let hd = cfg.head_dim as u32;
    Spec::new(Family::Attention, entry.name())
        .with("HD", hd)
        .with("NH", cfg.n_heads as u32)
        .with("NKV", cfg.n_kv_heads as u32)
        .with("CAP", slots as u32)
        .with("WINDOW", cfg.window(l).unwrap_or(0) as u32)
        .with("SCALE", 1.0 / (hd as f32).sqrt())
        .with("MAX_SPLITS", MAX_SPLITS)
        .kv_f16(kv_f16)
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(g: &Gpu, p: &DeviceProfile, cfg: &ModelConfig, kv_f16: bool, w: &Weights, b: &Buffers, layer_slots: &[usize]) -> Result<Plan> {
        let k = &g.kernels;
        let step = &b.step;
        let embed = w
            .embed
            .slabs
            .iter()
            .map(|s| {
                let spec = Spec::new(Family::Embed, "main").with("WTYPE", s.dtype.shader_code()).with("H", cfg.hidden as u32);
                k.dispatch_weights(&spec, &s.store, &[(STEP, step), (embed::IDS, &b.ids), (embed::Y, &b.x), (embed::SLAB, &s.info)])
            })
            .collect();
        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(l, lw)| LayerPlan::new(g, p, cfg, kv_f16, l, lw, b, layer_slots[l]))
            .collect::<Result<_>>()?;
        let fused = p.norm_in_matvec;
        let lm_head = if fused {
            let tune = |s| with_norm(s, cfg.rms_eps, true);
            Linear::new(g, p, w.lm_head(), MatmulEntry::Matvec, tune, &[(STEP, step), (mm::X, &b.x), (mm::Y, &b.logits), (mm::NORM_W, &w.norm)])
        } else {
            Linear::new(g, p, w.lm_head(), MatmulEntry::Matvec, |s| s, &[(STEP, step), (mm::X, &b.last), (mm::Y, &b.logits)])
        };
        Ok(Plan {
            embed,
            layers,
            final_norm: (!fused).then(|| {
                k.dispatch(&norm_spec(p, cfg).with("LAST_ROW", 1u32), &[(STEP, step), (rn::X, &b.x), (rn::WN, &w.norm), (rn::Y, &b.last)])
            }),
            lm_head,
            sample: k.dispatch(
                &Spec::new(Family::Sample, "sample").with("V", cfg.vocab as u32),
                &[(STEP, step), (sample::LOGITS, &b.logits), (sample::STATE, &b.state), (sample::IDS, &b.ids), (sample::OUT, &b.out), (sample::MASK, &b.mask)],
            ),
            all_logits: None,
        })
    }

    /// Make the [`Output::AllLogits`] dispatches if not made yet.
    pub(super) fn ensure_all_logits(&mut self, g: &Gpu, p: &DeviceProfile, cfg: &ModelConfig, chunk: usize, w: &Weights, b: &Buffers) {
        if self.all_logits.is_some() {
            return;
        }
        let buf = g.storage("logits_all", (chunk * cfg.vocab * 4) as u64);
        let norm = g.kernels.dispatch(&norm_spec(p, cfg), &[(STEP, &b.step), (rn::X, &b.x), (rn::WN, &w.norm), (rn::Y, &b.xn)]);
        let lm_head = Linear::reading(g, p, w.lm_head(), MatmulEntry::Matmul, |s| s, &[(STEP, &b.step), (mm::X, &b.xn), (mm::Y, &buf)], &b.inputs);
        self.all_logits = Some(AllLogits { buf, norm, lm_head });
    }

    /// The logits of the last [`Output::AllLogits`] pass.
    pub(super) fn all_logits(&self) -> Option<&wgpu::Buffer> {
        self.all_logits.as_ref().map(|a| &a.buf)
    }

    /// Every dispatch of a pass over `t` rows with `n_splits` attention
    /// splits, in order.
    pub(super) fn steps<'a>(&'a self, cfg: &ModelConfig, t: u32, n_splits: u32, output: Output, s: Visit<'_, 'a>) {
        let (h, nh) = (cfg.hidden as u32, cfg.n_heads as u32);
        let rope_items = ((cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim / 2 + cfg.kv_dim()) as u32;
        // `qk_norm` runs a workgroup per head (q, k and v) of a row; `main` an
        // invocation per rotated pair or stored v element.
        let rope_x = if cfg.qk_norm { (cfg.n_heads + 2 * cfg.n_kv_heads) as u32 } else { rope_items.div_ceil(64) };
        let decode = t == 1;
        // Decode runs each linear layer as a matvec, prefill as a matmul.
        let linear = |mv: &'a Linear, mm: &'a Linear, label_mv, label_mm, s: Visit<'_, 'a>| {
            if decode { mv.visit(label_mv, 1, s) } else { mm.visit(label_mm, t, s) }
        };
        for e in &self.embed {
            s("embed", e, [h.div_ceil(64), t, 1]);
        }
        for l in &self.layers {
            match (decode && l.attn_norm_in_mv, decode && l.rope_in_mv) {
                (true, true) => l.qkv_mv.visit("rmsnorm + qkv matvec + rope + kv store", 1, s),
                (true, false) => l.qkv_mv.visit("rmsnorm + qkv matvec", 1, s),
                (false, _) => {
                    s("rmsnorm", &l.attn_norm, [t, 1, 1]);
                    linear(&l.qkv_mv, &l.qkv_mm, "qkv matvec", "qkv matmul", s);
                }
            }
            if !(decode && l.rope_in_mv) {
                s("rope + kv store", &l.rope, [rope_x, t, 1]);
            }
            let combine = match (&l.attend_decode, &l.attend_prefill) {
                (DecodeAttention::Tiled(d), _) if decode => {
                    s("attention", d, [nh, 1, n_splits]);
                    true
                }
                (DecodeAttention::Scored(d), _) if decode => {
                    s("attention", d, [nh, 1, n_splits]);
                    // One split: `attend_scored` wrote the output.
                    n_splits > 1
                }
                (_, p) => {
                    s("attention", &p.dispatch, [nh, t.div_ceil(p.rows), n_splits]);
                    n_splits > 1 || !p.whole_is_output
                }
            };
            if combine {
                s("attention combine", &l.combine, [nh, t, 1]);
            }
            linear(&l.o_mv, &l.o_mm, "o matvec", "o matmul", s);
            let ffn_norm_in_mv = decode && l.ffn_norm_in_mv;
            if !ffn_norm_in_mv {
                s("rmsnorm", &l.ffn_norm, [t, 1, 1]);
            }
            match &l.ffn {
                FfnPlan::Dense { gate_up_mv, gate_up_mm, up_mv, up_mm, down_mv, down_mm } => {
                    if ffn_norm_in_mv {
                        gate_up_mv.visit("rmsnorm + gate/up + swiglu matvec", 1, s);
                    } else {
                        linear(gate_up_mv, gate_up_mm, "gate/up + swiglu matvec", "gate/up + swiglu matmul", s);
                    }
                    if let (Some(mv), Some(mm)) = (up_mv, up_mm) {
                        if ffn_norm_in_mv {
                            mv.visit("rmsnorm + up (own type) + swiglu matvec", 1, s);
                        } else {
                            linear(mv, mm, "up (own type) + swiglu matvec", "up (own type) + swiglu matmul", s);
                        }
                    }
                    linear(down_mv, down_mm, "down matvec", "down matmul", s);
                }
                FfnPlan::Moe { router, route, group, gate_up_mv, gate_up_mm, up_mv, up_mm, down_mv, down_mm, combine } => {
                    let k = cfg.moe.as_ref().map(|m| m.top_k as u32).unwrap_or(1);
                    router.visit("moe router", t, s);
                    s("moe top-k", route, [t.div_ceil(64), 1, 1]);
                    if decode {
                        gate_up_mv.visit("expert gate/up + swiglu matvec", k, s);
                        if let Some(u) = up_mv {
                            u.visit("expert up (own type) + swiglu matvec", k, s);
                        }
                        down_mv.visit("expert down matvec", k, s);
                    } else {
                        s("moe group by expert", group, [1, 1, 1]);
                        gate_up_mm.visit("expert gate/up + swiglu grouped", t * k, s);
                        if let Some(u) = up_mm {
                            u.visit("expert up (own type) + swiglu grouped", t * k, s);
                        }
                        down_mm.visit("expert down grouped", t * k, s);
                    }
                    s("moe combine", combine, [h.div_ceil(64), t, 1]);
                }
            }
        }
        match output {
            Output::None => {}
            Output::Sample => match &self.final_norm {
                Some(norm) => {
                    s("rmsnorm", norm, [1, 1, 1]);
                    self.lm_head.visit("lm head matvec", 1, s);
                }
                None => self.lm_head.visit("rmsnorm + lm head matvec", 1, s),
            },
            Output::AllLogits => {
                if let Some(a) = &self.all_logits {
                    s("rmsnorm", &a.norm, [t, 1, 1]);
                    a.lm_head.visit("lm head matmul", t, s);
                }
            }
        }
    }
}

/// rope.wgsl's constants (rotary.wgsl's, also `matvec_rope`'s): the heads,
/// the KV ring's `slots`, the pair layout and the cache's type.
fn with_rope_constants(s: Spec, cfg: &ModelConfig, slots: usize, kv_f16: bool) -> Spec {
    s.with("HD", cfg.head_dim as u32)
        .with("NH", cfg.n_heads as u32)
        .with("NKV", cfg.n_kv_heads as u32)
        .with("CAP", slots as u32)
        .with("STYLE", cfg.rope_interleaved as u32)
        .kv_f16(kv_f16)
}

/// A decode matvec's spec, applying the norm before it where `fused`.
fn normed(fused: bool, cfg: &ModelConfig, s: Spec) -> Spec {
    if fused { with_norm(s, cfg.rms_eps, false) } else { s }
}

/// Prefill's attention ([`DeviceProfile::prefill_attention`]) and its query rows per workgroup.
struct PrefillAttention {
    dispatch: Dispatch,
    rows: u32,
    /// With one split it writes the output itself (`attend_rows`), and
    /// `combine` is skipped.
    whole_is_output: bool,
}

/// Decode's attention before `combine`.
enum DecodeAttention {
    /// GPUs: `attend` (workgroup-memory tiles of keys).
    Tiled(Dispatch),
    /// Barrier-free ([`DeviceProfile::decode_attention`]): `attend_scored` (scores, then values).
    Scored(Dispatch),
}

impl LayerPlan {
    /// Layer `l`'s dispatches; `slots`: its KV cache slots.
    #[allow(clippy::too_many_arguments)]
    fn new(g: &Gpu, p: &DeviceProfile, cfg: &ModelConfig, kv_f16: bool, l: usize, lw: &LayerWeights, b: &Buffers, slots: usize) -> Result<LayerPlan> {
        let k = &g.kernels;
        let hd = cfg.head_dim as u32;
        let step = &b.step;
        // Layers alike (same ring size and window) share pipelines.
        let rope_spec = with_rope_constants(Spec::new(Family::Rope, "main"), cfg, slots, kv_f16);
        let attn_spec = |entry: AttentionEntry| attention_spec(cfg, l, slots, kv_f16, entry);
        let norm = norm_spec(p, cfg);
        let fused = p.norm_in_matvec;
        let qkv_bias = lw.qkv_bias.as_ref();
        let qkv_tune = |s: Spec| s.with("HAS_BIAS", qkv_bias.is_some() as u32);
        // Decode's input: the normalized row, or the residual and the norm's weights.
        let (qkv_x, qkv_norm) = if fused { (&b.x, Some(&lw.attn_norm)) } else { (&b.xn, None) };
        let (kc, vc) = &b.kv[l];
        let rope_in_mv = p.rope_in_matvec_for(&lw.qkv, cfg.head_dim, lw.qk_norm.is_some());
        let qkv_mv = if rope_in_mv {
            // The same rotation and cache slots as rope.wgsl's.
            let tune = |s: Spec| with_rope_constants(with_rope(normed(fused, cfg, qkv_tune(s))), cfg, slots, kv_f16);
            let binds = [(STEP, step), (mm::X, qkv_x), (mm::Y, &b.qkv), (rotary::ROPE_TABLE, &b.rope_table), (rotary::KC, kc), (rotary::VC, vc)];
            Linear::new(g, p, &lw.qkv, MatmulEntry::Matvec, tune, &linear_binds(&binds, qkv_bias, qkv_norm, None))
        } else {
            Linear::new(g, p, &lw.qkv, MatmulEntry::Matvec, |s| normed(fused, cfg, qkv_tune(s)), &linear_binds(&[(STEP, step), (mm::X, qkv_x), (mm::Y, &b.qkv)], qkv_bias, qkv_norm, None))
        };
        // Optional biases (Llama's attention_bias / mlp_bias) ride in the epilogue.
        let o_bias = lw.o_bias.as_ref();
        let o_tune = |s: Spec| residual(s, o_bias.is_some());
        let attend_binds = [(STEP, step), (at::QKV, &b.qkv), (at::KC, kc), (at::VC, vc), (at::PART, &b.partials)];
        let (prefill_entry, prefill_rows) = p.prefill_attention(hd);
        Ok(LayerPlan {
            attn_norm: k.dispatch(&norm, &[(STEP, step), (rn::X, &b.x), (rn::WN, &lw.attn_norm), (rn::Y, &b.xn)]),
            attn_norm_in_mv: fused,
            // The experts' matvecs read the normalized input as it is.
            ffn_norm_in_mv: fused && matches!(lw.ffn, Ffn::Dense { .. }),
            rope_in_mv,
            qkv_mv,
            qkv_mm: Linear::reading(g, p, &lw.qkv, MatmulEntry::Matmul, qkv_tune, &linear_binds(&[(STEP, step), (mm::X, &b.xn), (mm::Y, &b.qkv)], qkv_bias, None, None), &b.inputs),
            rope: match &lw.qk_norm {
                // Qwen3: each q and k head RMS-normalized in the same kernel, before the rotation.
                Some(nw) => k.dispatch(
                    &Spec { entry: "qk_norm", ..rope_spec }.with("EPS", cfg.rms_eps),
                    &[(STEP, step), (rope::QKV, &b.qkv), (rotary::ROPE_TABLE, &b.rope_table), (rotary::KC, kc), (rotary::VC, vc), (rope::NW, nw)],
                ),
                None => k.dispatch(&rope_spec, &[(STEP, step), (rope::QKV, &b.qkv), (rotary::ROPE_TABLE, &b.rope_table), (rotary::KC, kc), (rotary::VC, vc)]),
            },
            attend_decode: if p.decode_attention(hd) == AttentionEntry::AttendScored {
                DecodeAttention::Scored(k.dispatch(
                    &attn_spec(AttentionEntry::AttendScored),
                    &[(STEP, step), (at::QKV, &b.qkv), (at::KC, kc), (at::VC, vc), (at::PART, &b.partials), (at::OUT, &b.attn)],
                ))
            } else {
                DecodeAttention::Tiled(k.dispatch(&attn_spec(AttentionEntry::Attend), &attend_binds))
            },
            attend_prefill: {
                let whole_is_output = prefill_entry == AttentionEntry::AttendRows;
                let (spec, binds) = if whole_is_output {
                    let spec = attn_spec(prefill_entry).lanes(p.attend_rows_lanes(hd));
                    (spec, [&attend_binds[..], &[(at::OUT, &b.attn)]].concat())
                } else {
                    (attn_spec(prefill_entry), attend_binds.to_vec())
                };
                PrefillAttention { dispatch: k.dispatch(&spec, &binds), rows: prefill_rows, whole_is_output }
            },
            combine: k.dispatch(&attn_spec(AttentionEntry::Combine), &[(STEP, step), (at::PART, &b.partials), (at::OUT, &b.attn)]),
            o_mv: Linear::new(g, p, &lw.o, MatmulEntry::Matvec, o_tune, &linear_binds(&[(STEP, step), (mm::X, &b.attn), (mm::Y, &b.x)], o_bias, None, None)),
            o_mm: Linear::reading(g, p, &lw.o, MatmulEntry::Matmul, o_tune, &linear_binds(&[(STEP, step), (mm::X, &b.attn), (mm::Y, &b.x)], o_bias, None, None), &b.inputs),
            ffn_norm: k.dispatch(&norm, &[(STEP, step), (rn::X, &b.x), (rn::WN, &lw.ffn_norm), (rn::Y, &b.xn)]),
            ffn: FfnPlan::new(g, p, cfg, l, lw, b)?,
        })
    }
}

impl FfnPlan {
    /// A dense FFN's gate/up matvecs apply the norm where the profile says
    /// `norm_in_matvec`.
    fn new(g: &Gpu, p: &DeviceProfile, cfg: &ModelConfig, l: usize, lw: &LayerWeights, b: &Buffers) -> Result<FfnPlan> {
        let fused = p.norm_in_matvec;
        let (step, xn, ffn_h) = (&b.step, &b.xn, &b.ffn_h);
        let gated = |s: Spec| s.with("GATE_IN_Y", 1u32);
        Ok(match &lw.ffn {
            Ffn::Dense { gate_up, up, down } => {
                let (gu_bias, down_bias) = match &lw.mlp_bias {
                    Some((a, b)) => (Some(a), Some(b)),
                    None => (None, None),
                };
                // Stacked: one SwiGLU dispatch; split: the gate alone first.
                let stacked = up.is_none() as u32;
                let gu = |s: Spec| s.with("SWIGLU", stacked).with("HAS_BIAS", gu_bias.is_some() as u32);
                let dn = |s: Spec| residual(s, down_bias.is_some());
                // Decode's input: the normalized row, or the residual and the norm's weights.
                let (mv_x, mv_norm) = if fused { (&b.x, Some(&lw.ffn_norm)) } else { (xn, None) };
                let (mv_in, mm_in) = ([(STEP, step), (mm::X, mv_x), (mm::Y, ffn_h)], [(STEP, step), (mm::X, xn), (mm::Y, ffn_h)]);
                let (mv_down, mm_down) = ([(STEP, step), (mm::X, ffn_h), (mm::Y, &b.x)], [(STEP, step), (mm::X, ffn_h), (mm::Y, &b.x)]);
                FfnPlan::Dense {
                    gate_up_mv: Linear::new(g, p, gate_up, MatmulEntry::Matvec, |s| normed(fused, cfg, gu(s)), &linear_binds(&mv_in, gu_bias, mv_norm, None)),
                    gate_up_mm: Linear::reading(g, p, gate_up, MatmulEntry::Matmul, gu, &linear_binds(&mm_in, gu_bias, None, None), &b.inputs),
                    up_mv: up.as_ref().map(|u| Linear::new(g, p, u, MatmulEntry::Matvec, |s| normed(fused, cfg, gated(s)), &linear_binds(&mv_in, None, mv_norm, None))),
                    up_mm: up.as_ref().map(|u| Linear::reading(g, p, u, MatmulEntry::Matmul, gated, &mm_in, &b.inputs)),
                    down_mv: Linear::new(g, p, down, MatmulEntry::Matvec, dn, &linear_binds(&mv_down, down_bias, None, None)),
                    down_mm: Linear::reading(g, p, down, MatmulEntry::Matmul, dn, &linear_binds(&mm_down, down_bias, None, None), &b.inputs),
                }
            }
            Ffn::Moe { router, gate_up, up, down } => {
                let (Some(m), Some(mb)) = (&cfg.moe, &b.moe) else {
                    return Err(Error::Internal("MoE weights without MoE config".into()));
                };
                let (rl, eo, order, tiles) = (&mb.router_logits, &mb.expert_out, &mb.order, &mb.tiles);
                let (ids_l, wts_l) = mb.choices.get(l).ok_or_else(|| Error::Internal("MoE buffers missing".into()))?;
                let group_tile = p.moe_tile;
                let moe_spec = |e| {
                    Spec::new(Family::Moe, e)
                        .with("E", m.n_experts as u32)
                        .with("TOPK", m.top_k as u32)
                        .with("NORM_TOPK", m.norm_topk as u32)
                        .with("H", cfg.hidden as u32)
                };
                let expert = |s: Spec| s.with("SLOTS", m.top_k as u32).with("MOE", 1u32);
                // The grouped entries take each tile's expert from the
                // table, not EXPERT_IDS (MOE stays 0 there).
                let grouped = |s: Spec| {
                    s.with("SLOTS", m.top_k as u32).with("GROUP_TILE", group_tile).with("EXPERTS", m.n_experts as u32)
                };
                let gu = |s: Spec| s.with("SWIGLU", up.is_none() as u32);
                let per_slot = |s: Spec| s.with("X_PER_SLOT", 1u32);
                let mv_in = [(STEP, step), (mm::X, xn), (mm::Y, ffn_h), (mm::EXPERT_IDS, ids_l)];
                let mm_in = [(STEP, step), (mm::X, xn), (mm::Y, ffn_h), (mm::ORDER, order), (mm::TILES, tiles)];
                let mv_down = [(STEP, step), (mm::X, ffn_h), (mm::Y, eo), (mm::EXPERT_IDS, ids_l)];
                let mm_down = [(STEP, step), (mm::X, ffn_h), (mm::Y, eo), (mm::ORDER, order), (mm::TILES, tiles)];
                let mm = MatmulEntry::MatmulGrouped;
                let k = &g.kernels;
                FfnPlan::Moe {
                    router: Linear::new(g, p, router, MatmulEntry::Matvec, |s| s, &[(STEP, step), (mm::X, xn), (mm::Y, rl)]),
                    route: k.dispatch(&moe_spec("route"), &[(STEP, step), (moe::LOGITS, rl), (moe::IDS, ids_l), (moe::WTS, wts_l)]),
                    group: k.dispatch(&moe_spec("group").with("GROUP_TILE", group_tile), &[(STEP, step), (moe::IDS, ids_l), (moe::ORDER, order), (moe::TILES, tiles)]),
                    gate_up_mv: Linear::new(g, p, gate_up, MatmulEntry::Matvec, |s| gu(expert(s)), &mv_in),
                    gate_up_mm: Linear::new(g, p, gate_up, mm, |s| gu(grouped(s)), &mm_in),
                    up_mv: up.as_ref().map(|u| Linear::new(g, p, u, MatmulEntry::Matvec, |s| gated(expert(s)), &mv_in)),
                    up_mm: up.as_ref().map(|u| Linear::new(g, p, u, mm, |s| gated(grouped(s)), &mm_in)),
                    down_mv: Linear::new(g, p, down, MatmulEntry::Matvec, |s| per_slot(expert(s)), &mv_down),
                    down_mm: Linear::new(g, p, down, mm, |s| per_slot(grouped(s)), &mm_down),
                    combine: k.dispatch(&moe_spec("combine"), &[(STEP, step), (moe::WTS, wts_l), (moe::EOUT, eo), (moe::Y, &b.x)]),
                }
            }
        })
    }
}
