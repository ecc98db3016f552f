//! Every GPU buffer of the runtime besides the weights, allocated once at load
//! from a checked [`Sizes`] plan: activations, KV cache, RoPE table, sampler
//! state and readbacks, each counted by kind.

use super::{rope_table, RuntimeOptions, Sizes};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, InputTexture, Step, Store};
use crate::parse::ModelConfig;

/// GPU bytes by kind. `kv_cache + activations + scratch` is what the runtime
/// allocates besides the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuBytes {
    pub weights: u64,
    /// Keys and values of every layer.
    pub kv_cache: u64,
    /// Rows of a pass: hidden states, q/k/v, attention partials, feed-forward,
    /// logits, MoE routing (and on lavapipe the prefill inputs' textures).
    pub activations: u64,
    /// The RoPE table, the sampler's state, mask and output, the per-pass
    /// uniform, readbacks.
    pub scratch: u64,
}

impl GpuBytes {
    /// Everything but the weights.
    pub fn buffers(&self) -> u64 {
        self.kv_cache.saturating_add(self.activations).saturating_add(self.scratch)
    }

    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.buffers())
    }
}

/// MoE routing buffers. A pass's rows sorted by expert and its tile table are
/// made by each layer's `group` and read by the grouped matmuls right after,
/// so all layers share one pair; each layer keeps its own chosen experts.
pub(super) struct MoeBuffers {
    pub router_logits: wgpu::Buffer,
    pub expert_out: wgpu::Buffer,
    pub order: wgpu::Buffer,
    pub tiles: wgpu::Buffer,
    /// Per layer: the chosen experts' ids and weights at each row.
    pub choices: Vec<(wgpu::Buffer, wgpu::Buffer)>,
}

pub(super) struct Buffers {
    pub step: wgpu::Buffer,
    pub ids: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub qkv: wgpu::Buffer,
    pub attn: wgpu::Buffer,
    pub partials: wgpu::Buffer,
    pub ffn_h: wgpu::Buffer,
    pub last: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub state: wgpu::Buffer,
    /// The sampler's mask of allowed tokens (constrained decoding), one bit a token.
    pub mask: wgpu::Buffer,
    pub out: wgpu::Buffer,
    pub rope_table: wgpu::Buffer,
    /// Keys and values of each layer.
    pub kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    pub moe: Option<MoeBuffers>,
    /// On lavapipe, texture copies of the prefill matmuls' input buffers
    /// (normed rows, attention output, feed-forward activations): see
    /// [`InputTexture`]. Empty elsewhere.
    pub inputs: Vec<InputTexture>,
    pub out_rb: wgpu::Buffer,
    pub logits_rb: wgpu::Buffer,
    /// Bytes allocated, as the device reports each buffer's and texture's
    /// size (weights left at 0).
    pub bytes: GpuBytes,
}

/// Buffers and textures, each counted into one kind of [`GpuBytes`] by the
/// size the device gave it.
struct Alloc<'g> {
    g: &'g Gpu,
    bytes: GpuBytes,
}

#[derive(Clone, Copy)]
enum Kind {
    Kv,
    Activations,
    Scratch,
}

impl Alloc<'_> {
    fn count(&mut self, kind: Kind, bytes: u64) {
        let counter = match kind {
            Kind::Kv => &mut self.bytes.kv_cache,
            Kind::Activations => &mut self.bytes.activations,
            Kind::Scratch => &mut self.bytes.scratch,
        };
        *counter += bytes;
    }

    fn buffer(&mut self, kind: Kind, buffer: wgpu::Buffer) -> wgpu::Buffer {
        self.count(kind, buffer.size());
        buffer
    }

    /// A storage buffer of `n` f32 words.
    fn words(&mut self, kind: Kind, label: &str, n: usize) -> wgpu::Buffer {
        let buffer = self.g.storage(label, n as u64 * 4);
        self.buffer(kind, buffer)
    }
}

impl Buffers {
    /// `sizes` has been checked against the device; its word counts size the
    /// KV cache and the activations the options set.
    pub(super) fn new(g: &Gpu, cfg: &ModelConfig, opts: &RuntimeOptions, sizes: &Sizes) -> Result<Buffers> {
        if opts.kv_f16 && !g.adapter.shader_f16 {
            return Err(Error::Unsupported("an f16 KV cache needs the device's shader-f16 feature".into()));
        }
        let w = &sizes.words;
        let mut a = Alloc { g, bytes: GpuBytes::default() };
        use Kind::{Activations as Act, Scratch};
        let ids = a.words(Act, "ids", w.ids);
        let x = a.words(Act, "x", w.x);
        let xn = a.words(Act, "xn", w.xn);
        let qkv = a.words(Act, "qkv", w.qkv);
        let attn = a.words(Act, "attn", w.attn);
        let partials = a.words(Act, "attn_partials", w.attn_partials);
        let ffn_h = a.words(Act, "ffn_h", w.ffn_h);
        let last = a.words(Act, "last", w.last);
        let logits = a.words(Act, "logits", w.logits);
        let state = a.words(Scratch, "sampler_state", w.sampler_state);
        let mask = a.words(Scratch, "sample_mask", w.sample_mask);
        let out = a.words(Scratch, "out", w.out);
        let table = rope_table::table(cfg, opts.context);
        if table.len() != w.rope_table {
            return Err(Error::Internal(format!("the RoPE table has {} words, {} planned", table.len(), w.rope_table)));
        }
        let rope_table = a.buffer(Scratch, g.storage_init("rope_table", bytemuck::cast_slice(&table)));
        let moe = w.moe.map(|m| MoeBuffers {
            router_logits: a.words(Act, "router_logits", m.router_logits),
            expert_out: a.words(Act, "expert_out", m.expert_out),
            order: a.words(Act, "moe_order", m.order),
            tiles: a.words(Act, "moe_tiles", m.tiles),
            choices: (0..cfg.n_layers)
                .map(|l| (a.words(Act, &format!("moe_ids{l}"), m.choices), a.words(Act, &format!("moe_weights{l}"), m.choices)))
                .collect(),
        });
        let inputs: Vec<InputTexture> = if opts.profile.prefill_inputs == Store::Texture {
            [(&xn, "xn_texture"), (&attn, "attn_texture"), (&ffn_h, "ffn_h_texture")]
                .into_iter()
                .filter_map(|(b, label)| g.input_texture(label, b))
                .collect()
        } else {
            Vec::new()
        };
        for t in &inputs {
            a.count(Act, t.bytes());
        }
        let kv = sizes
            .kv_words
            .iter()
            .enumerate()
            .map(|(l, &words)| (a.words(Kind::Kv, &format!("k_cache{l}"), words), a.words(Kind::Kv, &format!("v_cache{l}"), words)))
            .collect();
        let step = a.buffer(Scratch, g.uniform("step", std::mem::size_of::<Step>() as u64));
        let out_rb = a.buffer(Scratch, g.readback("out_rb", w.out as u64 * 4));
        let logits_rb = a.buffer(Scratch, g.readback("logits_rb", w.logits as u64 * 4));
        Ok(Buffers {
            step,
            ids,
            x,
            xn,
            qkv,
            attn,
            partials,
            ffn_h,
            last,
            logits,
            state,
            mask,
            out,
            rope_table,
            kv,
            moe,
            inputs,
            out_rb,
            logits_rb,
            bytes: a.bytes,
        })
    }
}
