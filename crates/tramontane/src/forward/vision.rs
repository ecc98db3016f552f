//! The image encoder's pass (Pixtral's vision transformer) and the projector
//! into the text model's width, on the same kernels as the text model:
//! the patch convolution as a matmul over flattened patches, RMSNorm, q/k/v
//! with 2D RoPE (a RoPE table whose "position" is the patch, its angles from
//! the patch's row and column), attention where every patch sees every
//! other patch of its image (`CAUSAL` 0), a gated MLP (SiLU or GELU), then
//! Mistral 3's norm, patch merger and two linear layers (or LLaVA's two).
//!
//! One image per pass: transformers batches images with a block-diagonal
//! mask, so an image's patches never see another's, which is what encoding
//! them one at a time computes. Buffers are sized once for the largest image
//! the processor can make; the projected rows of image `k` are copied into
//! the runtime's feature buffer, where the text pass takes them in place of
//! the image tokens' embeddings (no CPU round trip).

use super::linear::{linear_binds, residual, Linear};
use super::Visit;
use crate::error::{Error, Result};
use crate::gpu::bindings::{attention as at, common::STEP, matmul as mm, patch_merge as pm, rmsnorm as rn, rope, rotary};
use crate::gpu::kernels::{Dispatch, Spec};
use crate::gpu::profile::{AttentionEntry, DeviceProfile, MatmulEntry};
use crate::gpu::{Family, Gpu, Step};
use crate::upload::VisionWeights;
use crate::vision::{Act, Pixels, Projector, VisionConfig};

/// Pixtral's `ln_pre` and its layers' norms (fixed in transformers).
const ENCODER_EPS: f32 = 1e-5;

/// The encoder's buffers, rows for the largest image.
struct EncoderBuffers {
    /// `n_tokens` = the image's patches; `tokens`: its merged tokens.
    step_patches: wgpu::Buffer,
    step_tokens: wgpu::Buffer,
    /// The image's width in patches (patch_merge.wgsl).
    grid: wgpu::Buffer,
    patches: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    qkv: wgpu::Buffer,
    kc: wgpu::Buffer,
    vc: wgpu::Buffer,
    attn: wgpu::Buffer,
    partials: wgpu::Buffer,
    ffn_h: wgpu::Buffer,
    rope_table: wgpu::Buffer,
    /// Mistral 3: merged patches, and the merger's output.
    merged: Option<(wgpu::Buffer, wgpu::Buffer)>,
    proj_h: wgpu::Buffer,
    /// The image's projected rows (text width).
    out: wgpu::Buffer,
}

struct EncoderLayer {
    attn_norm: Dispatch,
    qkv: Linear,
    rope: Dispatch,
    attend: Dispatch,
    /// Query rows per attention workgroup.
    attend_rows: u32,
    /// `attend_rows` with one split writes the output itself.
    combine: Option<Dispatch>,
    o: Linear,
    ffn_norm: Dispatch,
    gate_up: Linear,
    down: Linear,
}

/// The image encoder and projector of a vision checkpoint.
pub struct Encoder {
    vc: VisionConfig,
    /// Most patches of one image: the processor's largest output.
    pub max_patches: usize,
    bufs: EncoderBuffers,
    patch: Linear,
    ln_pre: Dispatch,
    layers: Vec<EncoderLayer>,
    /// Mistral 3: the norm, the merge gather and the merging layer.
    merge: Option<(Dispatch, Dispatch, Linear)>,
    linear_1: Linear,
    linear_2: Linear,
    /// Bytes of the encoder's buffers.
    pub bytes: u64,
}

/// Most patches along a side of an image the processor makes with `vc`'s
/// settings (the longest edge rounded up to whole merged patches).
pub fn max_side_patches(vc: &VisionConfig) -> usize {
    let unit = vc.patch * vc.merge();
    (vc.processor.longest_edge as usize).div_ceil(unit) * vc.merge()
}

/// Lower the processor's longest edge, a merged patch at a time, until every
/// buffer of the encoder for the largest image binds within `max_binding`
/// bytes: a device with small limits (WebGPU's default is 128 MiB; Mistral
/// Small's 1540-pixel images need ~200 MB of MLP rows) takes smaller images
/// rather than none. `fitted_from` keeps the processor's own edge; images
/// within the new one are processed exactly as before. Left as it is when
/// not even one merged patch fits (the size plan then refuses the model).
pub fn fit_to_binding(vc: &mut VisionConfig, text_hidden: usize, max_binding: u64) {
    let fits = |vc: &VisionConfig| buffer_bytes(vc, text_hidden).is_some_and(|b| b.iter().all(|&(_, size)| size <= max_binding));
    let (own, unit) = (vc.processor.longest_edge, (vc.patch * vc.merge()) as u32);
    while !fits(vc) {
        let steps = vc.processor.longest_edge.div_ceil(unit);
        if steps <= 1 {
            vc.processor.longest_edge = own;
            return;
        }
        vc.processor.longest_edge = (steps - 1) * unit;
    }
    if vc.processor.longest_edge != own {
        vc.fitted_from = Some(own);
    }
}

/// Each storage buffer of the encoder for the largest image `vc`'s processor
/// makes, as (label, bytes) in the order [`Encoder::new`] allocates them;
/// `None` if a size overflows. The size plan (forward/sizes.rs) checks them
/// against the device before any weight is read.
pub fn buffer_bytes(vc: &VisionConfig, text_hidden: usize) -> Option<Vec<(&'static str, u64)>> {
    let side = max_side_patches(vc) as u64;
    let n = side.checked_mul(side)?;
    let m = vc.merge() as u64;
    let tokens = n / (m * m);
    let (h, inter, hd, nh) = (vc.hidden as u64, vc.intermediate as u64, vc.head_dim as u64, vc.n_heads as u64);
    let cols = (vc.channels * vc.patch * vc.patch) as u64;
    let th = text_hidden as u64;
    let words = |f: &[u64]| f.iter().try_fold(4u64, |a, &x| a.checked_mul(x));
    let mut out = vec![
        ("vision_patches", words(&[n, cols])?),
        ("vision_x", words(&[n, h])?),
        ("vision_xn", words(&[n, h])?),
        ("vision_qkv", words(&[n, 3, h])?),
        ("vision_k", words(&[n, h])?),
        ("vision_v", words(&[n, h])?),
        ("vision_attn", words(&[n, h])?),
        ("vision_attn_partials", words(&[n, nh, hd + 2])?),
        ("vision_ffn_h", words(&[n, inter])?),
        ("vision_rope_table", words(&[n, hd])?),
        ("vision_proj_h", words(&[n, th])?),
        ("vision_out", words(&[n, th])?),
    ];
    if m > 1 {
        out.push(("vision_merged", words(&[tokens, h, m, m])?));
        out.push(("vision_merger_out", words(&[tokens, h])?));
    }
    Some(out)
}

fn step(rows: u32) -> Step {
    Step { n_tokens: rows, start_pos: 0, n_splits: 1, split_len: 1 << 30, temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0, ..Default::default() }
}

impl Encoder {
    /// The encoder of `vc` over `w`, its buffers for the largest image (sized
    /// by [`buffer_bytes`], checked by the size plan).
    pub fn new(g: &Gpu, p: &DeviceProfile, vc: &VisionConfig, text_hidden: usize, w: &VisionWeights) -> Result<Encoder> {
        let side = max_side_patches(vc);
        let n = side * side;
        let (h, hd, nh) = (vc.hidden, vc.head_dim, vc.n_heads);
        let m = vc.merge();
        // Sized (and checked against the device) by the size plan.
        let sizes: std::collections::HashMap<&str, u64> =
            buffer_bytes(vc, text_hidden).ok_or_else(|| Error::Unsupported("the image encoder's buffers are too large to address".into()))?.into_iter().collect();
        let mut bytes = 0u64;
        let mut buf = |label: &'static str| {
            let b = g.storage(label, sizes.get(label).copied().unwrap_or(4));
            bytes += b.size();
            b
        };
        let bufs = EncoderBuffers {
            step_patches: g.uniform("vision_step", std::mem::size_of::<Step>() as u64),
            step_tokens: g.uniform("vision_step_tokens", std::mem::size_of::<Step>() as u64),
            grid: g.uniform("vision_grid", 16),
            patches: buf("vision_patches"),
            x: buf("vision_x"),
            xn: buf("vision_xn"),
            qkv: buf("vision_qkv"),
            kc: buf("vision_k"),
            vc: buf("vision_v"),
            attn: buf("vision_attn"),
            partials: buf("vision_attn_partials"),
            ffn_h: buf("vision_ffn_h"),
            rope_table: buf("vision_rope_table"),
            merged: (m > 1).then(|| (buf("vision_merged"), buf("vision_merger_out"))),
            proj_h: buf("vision_proj_h"),
            out: buf("vision_out"),
        };
        let k = &g.kernels;
        let b = &bufs;
        let (sp, st) = (&b.step_patches, &b.step_tokens);
        let norm = |eps: f32| Spec::new(Family::RmsNorm, "main").with("H", h as u32).with("EPS", eps).with("LAST_ROW", 0u32).lanes(p.lanes);
        let rotary_spec = |s: Spec| {
            s.with("HD", hd as u32).with("NH", nh as u32).with("NKV", nh as u32).with("CAP", n as u32).with("STYLE", vc.rope_interleaved as u32)
        };
        let (entry, attend_rows) = p.prefill_attention(hd as u32);
        let whole_is_output = entry == AttentionEntry::AttendRows;
        let attention = |e: AttentionEntry| {
            Spec::new(Family::Attention, e.name())
                .with("HD", hd as u32)
                .with("NH", nh as u32)
                .with("NKV", nh as u32)
                .with("CAP", n as u32)
                .with("WINDOW", 0u32)
                .with("SCALE", 1.0 / (hd as f32).sqrt())
                .with("MAX_SPLITS", super::MAX_SPLITS)
                .with("CAUSAL", 0u32)
        };
        let gate_act = (vc.act == Act::Gelu) as u32;
        let layers = w
            .layers
            .iter()
            .map(|lw| {
                let attend_binds = [(STEP, sp), (at::QKV, &b.qkv), (at::KC, &b.kc), (at::VC, &b.vc), (at::PART, &b.partials)];
                let (attend, combine) = if whole_is_output {
                    let spec = attention(entry).lanes(p.attend_rows_lanes(hd as u32));
                    (k.dispatch(&spec, &[&attend_binds[..], &[(at::OUT, &b.attn)]].concat()), None)
                } else {
                    let combine = k.dispatch(&attention(AttentionEntry::Combine), &[(STEP, sp), (at::PART, &b.partials), (at::OUT, &b.attn)]);
                    (k.dispatch(&attention(entry), &attend_binds), Some(combine))
                };
                EncoderLayer {
                    attn_norm: k.dispatch(&norm(ENCODER_EPS), &[(STEP, sp), (rn::X, &b.x), (rn::WN, &lw.attn_norm), (rn::Y, &b.xn)]),
                    qkv: Linear::new(g, p, &lw.qkv, MatmulEntry::Matmul, |s| s, &[(STEP, sp), (mm::X, &b.xn), (mm::Y, &b.qkv)]),
                    rope: k.dispatch(
                        &rotary_spec(Spec::new(Family::Rope, "main")),
                        &[(STEP, sp), (rope::QKV, &b.qkv), (rotary::ROPE_TABLE, &b.rope_table), (rotary::KC, &b.kc), (rotary::VC, &b.vc)],
                    ),
                    attend,
                    attend_rows,
                    combine,
                    o: Linear::new(g, p, &lw.o, MatmulEntry::Matmul, |s| residual(s, false), &[(STEP, sp), (mm::X, &b.attn), (mm::Y, &b.x)]),
                    ffn_norm: k.dispatch(&norm(ENCODER_EPS), &[(STEP, sp), (rn::X, &b.x), (rn::WN, &lw.ffn_norm), (rn::Y, &b.xn)]),
                    gate_up: Linear::new(g, p, &lw.gate_up, MatmulEntry::Matmul, |s| s.with("SWIGLU", 1u32).with("GATE_ACT", gate_act), &[
                        (STEP, sp),
                        (mm::X, &b.xn),
                        (mm::Y, &b.ffn_h),
                    ]),
                    down: Linear::new(g, p, &lw.down, MatmulEntry::Matmul, |s| residual(s, false), &[(STEP, sp), (mm::X, &b.ffn_h), (mm::Y, &b.x)]),
                }
            })
            .collect();
        let out_act = match vc.projector_act {
            Act::Gelu => 1u32,
            Act::Silu => 2u32,
        };
        let has_bias = |bias: &Option<wgpu::Buffer>| bias.is_some() as u32;
        // The projector's input: the merger's output (Mistral 3) or the
        // encoder's last hidden state (LLaVA), and its step.
        let (merge, proj_in, proj_step) = match (&vc.projector, &w.proj_norm, &w.merger, &b.merged) {
            (Projector::Mistral3 { .. }, Some(nw), Some(merger), Some((merged, merger_out))) => {
                let norm = k.dispatch(&norm(vc.projector_eps), &[(STEP, sp), (rn::X, &b.x), (rn::WN, nw), (rn::Y, &b.xn)]);
                let gather = k.dispatch(
                    &Spec::new(Family::PatchMerge, "main").with("D", h as u32).with("M", m as u32),
                    &[(STEP, st), (pm::X, &b.xn), (pm::Y, merged), (pm::GRID, &b.grid)],
                );
                let layer = Linear::new(g, p, merger, MatmulEntry::Matmul, |s| s, &[(STEP, st), (mm::X, merged), (mm::Y, merger_out)]);
                (Some((norm, gather, layer)), merger_out, st)
            }
            (Projector::Llava, ..) => (None, &b.x, sp),
            _ => return Err(Error::Internal("a Mistral 3 projector without its norm or merger".into())),
        };
        let linear_1 = Linear::new(
            g,
            p,
            &w.linear_1,
            MatmulEntry::Matmul,
            |s| s.with("HAS_BIAS", has_bias(&w.linear_1_bias)).with("OUT_ACT", out_act),
            &linear_binds(&[(STEP, proj_step), (mm::X, proj_in), (mm::Y, &b.proj_h)], w.linear_1_bias.as_ref(), None, None),
        );
        let linear_2 = Linear::new(
            g,
            p,
            &w.linear_2,
            MatmulEntry::Matmul,
            |s| s.with("HAS_BIAS", has_bias(&w.linear_2_bias)),
            &linear_binds(&[(STEP, proj_step), (mm::X, &b.proj_h), (mm::Y, &b.out)], w.linear_2_bias.as_ref(), None, None),
        );
        let patch = Linear::new(g, p, &w.patch, MatmulEntry::Matmul, |s| s, &[(STEP, sp), (mm::X, &b.patches), (mm::Y, &b.xn)]);
        let ln_pre = k.dispatch(&norm(ENCODER_EPS), &[(STEP, sp), (rn::X, &b.xn), (rn::WN, &w.ln_pre), (rn::Y, &b.x)]);
        g.check()?;
        Ok(Encoder { vc: vc.clone(), max_patches: n, bufs, patch, ln_pre, layers, merge, linear_1, linear_2, bytes })
    }

    /// Image tokens (rows of projected features) of an image of `px`.
    pub fn tokens_of(&self, px: &Pixels) -> usize {
        let m = self.vc.merge();
        (px.height / self.vc.patch / m) * (px.width / self.vc.patch / m)
    }

    /// Encode one image: its projected rows land in `dst` (rows of the text
    /// model's width `text_hidden`) from row `at`. Records and submits one
    /// command buffer; returns the rows written.
    pub fn encode(&self, g: &Gpu, px: &Pixels, text_hidden: usize, dst: &wgpu::Buffer, at: usize) -> Result<usize> {
        let p = self.vc.patch;
        let (gh, gw) = (px.height / p, px.width / p);
        let n = gh * gw;
        if px.data.len() != 3 * px.height * px.width {
            return Err(Error::InvalidRequest(format!("an image of {}x{} pixels with {} values (3 a pixel)", px.width, px.height, px.data.len())));
        }
        if n == 0 || n > self.max_patches || px.height % p != 0 || px.width % p != 0 {
            return Err(Error::InvalidRequest(format!(
                "an image of {}x{} pixels: {n} patches (at most {} on this model)",
                px.width, px.height, self.max_patches
            )));
        }
        let tokens = self.tokens_of(px);
        let end = (at + tokens) as u64 * text_hidden as u64 * 4;
        if end > dst.size() {
            return Err(Error::InvalidRequest(format!("the images need more than the {} rows of image features this model holds", dst.size() / 4 / text_hidden as u64)));
        }
        let b = &self.bufs;
        g.queue.write_buffer(&b.patches, 0, bytemuck::cast_slice(&px.patches(p)));
        g.queue.write_buffer(&b.rope_table, 0, bytemuck::cast_slice(&rope_table(&self.vc, gh, gw)));
        g.queue.write_buffer(&b.step_patches, 0, bytemuck::bytes_of(&step(n as u32)));
        g.queue.write_buffer(&b.step_tokens, 0, bytemuck::bytes_of(&step(tokens as u32)));
        g.queue.write_buffer(&b.grid, 0, bytemuck::cast_slice(&[gw as u32, gh as u32, 0, 0]));
        let mut enc = g.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("vision") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("vision"), timestamp_writes: None });
            self.steps(n as u32, tokens as u32, &mut |_, d, groups| d.record(&mut pass, groups));
        }
        let row = text_hidden as u64 * 4;
        enc.copy_buffer_to_buffer(&b.out, 0, dst, at as u64 * row, tokens as u64 * row);
        g.queue.submit([enc.finish()]);
        g.check()?;
        Ok(tokens)
    }

    /// Every dispatch of an image of `n` patches and `tokens` merged tokens, in order.
    fn steps<'a>(&'a self, n: u32, tokens: u32, s: Visit<'_, 'a>) {
        let vc = &self.vc;
        let (h, hd, nh) = (vc.hidden as u32, vc.head_dim as u32, vc.n_heads as u32);
        self.patch.visit("vision patch embedding", n, s);
        s("vision ln_pre", &self.ln_pre, [n, 1, 1]);
        let rope_x = (2 * nh * hd / 2 + nh * hd).div_ceil(64);
        for l in &self.layers {
            s("vision rmsnorm", &l.attn_norm, [n, 1, 1]);
            l.qkv.visit("vision qkv matmul", n, s);
            s("vision rope + kv store", &l.rope, [rope_x, n, 1]);
            s("vision attention", &l.attend, [nh, n.div_ceil(l.attend_rows), 1]);
            if let Some(c) = &l.combine {
                s("vision attention combine", c, [nh, n, 1]);
            }
            l.o.visit("vision o matmul", n, s);
            s("vision rmsnorm", &l.ffn_norm, [n, 1, 1]);
            l.gate_up.visit("vision gate/up matmul", n, s);
            l.down.visit("vision down matmul", n, s);
        }
        let rows = match &self.merge {
            Some((norm, gather, layer)) => {
                let m = vc.merge() as u32;
                s("projector rmsnorm", norm, [n, 1, 1]);
                s("patch merge", gather, [(h * m * m).div_ceil(64), tokens, 1]);
                layer.visit("patch merger matmul", tokens, s);
                tokens
            }
            None => n,
        };
        self.linear_1.visit("projector linear 1", rows, s);
        self.linear_2.visit("projector linear 2", rows, s);
    }

    /// The encoder's last hidden state of the last image encoded (`n`
    /// patches), for tests.
    pub async fn read_hidden(&self, g: &Gpu, n: usize) -> Result<Vec<f32>> {
        g.read_f32(&self.bufs.x, n * self.vc.hidden).await
    }
}

/// cos/sin of Pixtral's 2D RoPE for a `gh` x `gw` grid of patches, row by
/// row, as transformers' `PixtralRotaryEmbedding` makes them: of each head's
/// `hd / 2` rotated pairs (rotate-half layout), the first quarter of the head
/// turns with the patch's row by the even-indexed inverse frequencies, the
/// second with its column by the odd-indexed ones.
pub fn rope_table(vc: &VisionConfig, gh: usize, gw: usize) -> Vec<f32> {
    let hd = vc.head_dim;
    // transformers' f32 inverse frequencies, as the text model's table has them.
    let inv = super::rope_table::default_inv_freq(vc.rope_theta as f32, hd);
    let quarter = hd / 4;
    let mut out = Vec::with_capacity(gh * gw * hd);
    for y in 0..gh {
        for x in 0..gw {
            for j in 0..hd / 2 {
                let angle = if j < quarter { y as f32 * inv[2 * j] } else { x as f32 * inv[2 * (j - quarter) + 1] };
                out.push(angle.cos());
                out.push(angle.sin());
            }
        }
    }
    out
}
