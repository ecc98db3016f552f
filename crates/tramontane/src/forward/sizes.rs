//! The GPU memory a model needs besides its weights: KV cache, activations,
//! RoPE table, sampler state, readbacks. Computed from the config, the load
//! options and the device in `u64` with checked arithmetic (a `usize` product
//! wraps on wasm32), and checked against the device before the first weight
//! byte is downloaded, so a `context` or `chunk` too large, or a config that
//! lies, fails in words at once instead of after minutes of download (or as a
//! trap in the wasm module). `buffers.rs` allocates exactly what this plans
//! (every size it uses comes from here); suite/limits.rs checks the two agree,
//! kind by kind.

use super::linear::moe_max_tiles;
use super::{rope_table, GpuBytes, RuntimeOptions, MAX_SPLITS, OUT_WORDS};
use crate::error::{Error, Result};
use crate::gpu::{readback_bytes, storage_bytes, Gpu, Step, Store};
use crate::parse::ModelConfig;

/// Buffer sizes (bytes) of one runtime.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// KV slots of each layer: a ring of window + chunk for a sliding layer (a
    /// chunk never overwrites keys its own queries need), the whole context for
    /// a full-attention one.
    pub layer_slots: Vec<usize>,
    /// f32 words of each layer's K buffer (and of its V buffer): an f16 cache
    /// packs two values in a word.
    pub kv_words: Vec<usize>,
    /// f32 words of every other storage buffer, as allocated.
    pub words: Words,
    /// Everything the runtime allocates besides the weights, by kind, as the
    /// device allocates it (buffers padded to whole 16-byte units).
    pub planned: GpuBytes,
}

/// Words of each activation and scratch buffer (each checked against the
/// binding limit, so it fits a `usize`).
#[derive(Debug, Clone, Copy)]
pub struct Words {
    pub ids: usize,
    pub x: usize,
    pub xn: usize,
    pub qkv: usize,
    pub attn: usize,
    pub attn_partials: usize,
    pub ffn_h: usize,
    pub last: usize,
    pub logits: usize,
    pub sampler_state: usize,
    pub sample_mask: usize,
    pub out: usize,
    pub rope_table: usize,
    /// MoE only.
    pub moe: Option<MoeWords>,
}

/// Words of the MoE routing buffers (see `buffers::MoeBuffers`).
#[derive(Debug, Clone, Copy)]
pub struct MoeWords {
    pub router_logits: usize,
    pub expert_out: usize,
    pub order: usize,
    pub tiles: usize,
    /// Each layer's chosen experts' ids (and, as many, their weights).
    pub choices: usize,
}

fn overflow(what: &str) -> Error {
    Error::Unsupported(format!("{what} is too large to address"))
}

/// `a * b * ...` in u64, or an error naming `what`.
fn product(what: &str, factors: &[usize]) -> Result<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f as u64)).ok_or_else(|| overflow(what))
}

impl Sizes {
    /// Every buffer the runtime allocates, with its size checked against the
    /// binding limit of the device (activations are bound whole).
    pub fn plan(cfg: &ModelConfig, opts: &RuntimeOptions, g: &Gpu) -> Result<Sizes> {
        let max_binding = g.max_binding();
        let (h, v, hd) = (cfg.hidden, cfg.vocab, cfg.head_dim);
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let c = opts.chunk.max(1);
        let ctx = opts.context;
        let qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
        let slots = cfg.moe.as_ref().map(|m| m.top_k).unwrap_or(1);
        let layer_slots = layer_slots(cfg, c, ctx);
        let kv_slots = layer_slots.iter().copied().max().unwrap_or(ctx);
        // An f16 cache packs two values in a word.
        let kv_layer = |slots_l: usize| -> Result<u64> {
            let words = product("a layer's KV cache (lower `context`)", &[slots_l, nkv, hd])?;
            Ok(if opts.kv_f16 { words.div_ceil(2) } else { words } * 4)
        };
        // A pass's partials, and in decode after them each head's scores of
        // every slot (attention.wgsl `score_at`, CPU drivers).
        let prefill_partials = product("the attention partials", &[c, nh, hd + 2, 4])?;
        let decode_partials = product("the attention partials", &[nh, MAX_SPLITS as usize, hd + 2, 4])?
            .checked_add(product("the attention scores (lower `context`)", &[nh, kv_slots, 4])?)
            .ok_or_else(|| overflow("the attention scores (lower `context`)"))?;
        let partials = prefill_partials.max(decode_partials);
        let ffn_h = product("the feed-forward activations", &[c, slots, cfg.intermediate, 4])?;
        let rope = product("the RoPE table", &[ctx, rope_table::inv_freq(cfg).len(), 2, 4])?;
        let mut bound: Vec<(&str, u64)> = vec![
            ("a layer's KV cache (lower `context`)", kv_layer(kv_slots)?),
            ("the RoPE table (lower `context`)", rope),
            ("the feed-forward activations (lower `chunk`)", ffn_h),
            ("the activations (lower `chunk`)", product("the activations", &[c, qkv_dim.max(h), 4])?),
            ("the attention partials and scores (lower `chunk` or `context`)", partials),
            ("the logits", product("the logits", &[v, 4])?),
        ];
        let mut moe_bytes = None;
        if let Some(m) = &cfg.moe {
            let router_logits = product("the router logits", &[c, m.n_experts, 4])?;
            let expert_out = product("the expert outputs", &[c, slots, h, 4])?;
            bound.push(("the router logits (lower `chunk`)", router_logits));
            bound.push(("the expert outputs (lower `chunk`)", expert_out));
            moe_bytes = Some((router_logits, expert_out));
        }
        // An image model's encoder for the largest image, and the rows of
        // image features a prompt can hold (one per context token at most).
        let mut vision_bytes = Vec::new();
        if let Some(vc) = &cfg.vision {
            let encoder = super::vision::buffer_bytes(vc, h).ok_or_else(|| overflow("the image encoder's buffers"))?;
            let features = product("the image features (lower `context`)", &[ctx, h, 4])?;
            for &(label, size) in &encoder {
                if size > max_binding {
                    let side = super::vision::max_side_patches(vc);
                    return Err(Error::Unsupported(format!(
                        "the image encoder's buffer {label} for the largest image ({side}x{side} patches) needs {size} bytes; this device binds at most {max_binding} bytes"
                    )));
                }
            }
            bound.push(("the image features (lower `context`)", features));
            vision_bytes = encoder.into_iter().map(|e| e.1).chain([features]).collect();
        }
        for &(what, size) in &bound {
            if size > max_binding {
                return Err(Error::Unsupported(format!(
                    "{what} needs a {size}-byte buffer; this device binds at most {max_binding} bytes"
                )));
            }
        }
        // Each is at most the binding limit now, and every other buffer is
        // smaller than one of them: word counts fit a usize.
        let words_of = |bytes: u64| (bytes / 4) as usize;
        let moe = cfg.moe.as_ref().zip(moe_bytes).map(|(m, (router_logits, expert_out))| {
            let rows = c * m.top_k;
            let tiles = 1 + moe_max_tiles(rows as u32, m.n_experts as u32, opts.profile.moe_tile) as usize;
            MoeWords { router_logits: words_of(router_logits), expert_out: words_of(expert_out), order: rows, tiles: 4 * tiles, choices: rows }
        });
        let words = Words {
            ids: c,
            x: c * h,
            xn: c * h,
            qkv: c * qkv_dim,
            attn: c * cfg.q_dim(),
            attn_partials: words_of(partials),
            ffn_h: words_of(ffn_h),
            last: h,
            logits: v,
            sampler_state: v,
            sample_mask: v.div_ceil(32),
            out: OUT_WORDS,
            rope_table: words_of(rope),
            moe,
        };
        let mut kv_words = Vec::with_capacity(layer_slots.len());
        for &s in &layer_slots {
            kv_words.push(words_of(kv_layer(s)?));
        }
        // On lavapipe the prefill matmuls' inputs get texture copies: normed
        // rows, attention output, feed-forward activations.
        let input_textures: Vec<u64> = if opts.profile.prefill_inputs == Store::Texture {
            [words.xn, words.attn, words.ffn_h].iter().filter_map(|&w| g.input_texture_bytes(storage_bytes(w as u64 * 4))).collect()
        } else {
            Vec::new()
        };
        let mut planned = planned_bytes(cfg, &words, &kv_words, &input_textures).ok_or_else(|| overflow("the activations"))?;
        for b in vision_bytes {
            planned.activations = planned.activations.checked_add(storage_bytes(b)).ok_or_else(|| overflow("the activations"))?;
        }
        Ok(Sizes { layer_slots, kv_words, words, planned })
    }

    /// GPU bytes besides the weights.
    pub fn total(&self) -> u64 {
        self.planned.buffers()
    }
}

/// Each layer's KV cache slots: the context, or a sliding layer's ring of
/// window + chunk where that is smaller.
pub fn layer_slots(cfg: &ModelConfig, chunk: usize, context: usize) -> Vec<usize> {
    (0..cfg.n_layers)
        .map(|l| match cfg.window(l) {
            Some(w) if w.saturating_add(chunk) < context => w + chunk,
            _ => context,
        })
        .collect()
}

/// What `Buffers::new` allocates for these sizes, by kind (as it counts them).
fn planned_bytes(cfg: &ModelConfig, w: &Words, kv_words: &[usize], input_textures: &[u64]) -> Option<GpuBytes> {
    let sum = |words: &[usize]| words.iter().try_fold(0u64, |acc, &n| acc.checked_add(storage_bytes(n as u64 * 4)));
    let mut activations = sum(&[w.ids, w.x, w.xn, w.qkv, w.attn, w.attn_partials, w.ffn_h, w.last, w.logits])?;
    if let Some(m) = &w.moe {
        activations = activations.checked_add(sum(&[m.router_logits, m.expert_out, m.order, m.tiles])?)?;
        activations = activations.checked_add(sum(&[m.choices, m.choices])?.checked_mul(cfg.n_layers as u64)?)?;
    }
    activations = input_textures.iter().try_fold(activations, |acc, &b| acc.checked_add(b))?;
    // The sampler's state, mask and output, the RoPE table, the per-pass
    // uniform and the two readbacks.
    let scratch = sum(&[w.sampler_state, w.sample_mask, w.out, w.rope_table])?
        .checked_add(std::mem::size_of::<Step>() as u64)?
        .checked_add(readback_bytes(w.out as u64 * 4))?
        .checked_add(readback_bytes(w.logits as u64 * 4))?;
    let kv_cache = sum(kv_words)?.checked_mul(2)?;
    Some(GpuBytes { weights: 0, kv_cache, activations, scratch })
}
