//! The GPU memory a model needs besides its weights: KV cache, activations,
//! RoPE table, sampler state. Computed from the config and the load options in
//! `u64` with checked arithmetic (a `usize` product wraps on wasm32), and
//! checked against the device before the first weight byte is downloaded, so a
//! `context` or `chunk` too large, or a config that lies, fails in words at once
//! instead of after minutes of download (or as a trap in the wasm module).

use super::{RuntimeOptions, MAX_SPLITS};
use crate::error::{Error, Result};
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
    /// f32 words of the buffers sized by the options, as allocated.
    pub words: Words,
    /// Keys and values of every layer.
    pub kv_bytes: u64,
    /// Everything else: activations, logits, sampler state, RoPE table.
    pub scratch_bytes: u64,
}

/// Words of the activation buffers whose size the chunk and the config set
/// (checked against the binding limit, so they fit a `usize`).
#[derive(Debug, Clone, Copy)]
pub struct Words {
    pub attn_partials: usize,
    pub ffn_h: usize,
    /// MoE only (0 otherwise).
    pub router_logits: usize,
    pub expert_out: usize,
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
    /// binding limit `max_binding` (activations are bound whole).
    pub fn plan(cfg: &ModelConfig, opts: &RuntimeOptions, max_binding: u64) -> Result<Sizes> {
        let (h, v, hd) = (cfg.hidden, cfg.vocab, cfg.head_dim);
        let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
        let c = opts.chunk.max(1);
        let ctx = opts.context;
        let qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
        let slots = cfg.moe.as_ref().map(|m| m.top_k).unwrap_or(1);
        let layer_slots: Vec<usize> = (0..cfg.n_layers)
            .map(|l| match cfg.window(l) {
                Some(w) if w.saturating_add(c) < ctx => w + c,
                _ => ctx,
            })
            .collect();
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
        let mut bound: Vec<(&str, u64)> = vec![
            ("a layer's KV cache (lower `context`)", kv_layer(kv_slots)?),
            ("the RoPE table (lower `context`)", product("the RoPE table", &[ctx, hd, 4])?),
            ("the feed-forward activations (lower `chunk`)", ffn_h),
            ("the activations (lower `chunk`)", product("the activations", &[c, qkv_dim.max(h), 4])?),
            ("the attention partials and scores (lower `chunk` or `context`)", partials),
            ("the logits", product("the logits", &[v, 4])?),
        ];
        let (mut router_logits, mut expert_out) = (0, 0);
        if let Some(m) = &cfg.moe {
            router_logits = product("the router logits", &[c, m.n_experts, 4])?;
            expert_out = product("the expert outputs", &[c, slots, h, 4])?;
            bound.push(("the router logits (lower `chunk`)", router_logits));
            bound.push(("the expert outputs (lower `chunk`)", expert_out));
        }
        for &(what, size) in &bound {
            if size > max_binding {
                return Err(Error::Unsupported(format!(
                    "{what} needs a {size}-byte buffer; this device binds at most {max_binding} bytes"
                )));
            }
        }
        // Each is at most the binding limit now: a word count fits a usize.
        let words_of = |bytes: u64| (bytes / 4) as usize;
        let mut kv_bytes = 0u64;
        let mut kv_words = Vec::with_capacity(layer_slots.len());
        for &s in &layer_slots {
            let layer = kv_layer(s)?;
            kv_bytes = kv_bytes.checked_add(2 * layer).ok_or_else(|| overflow("the KV cache"))?;
            kv_words.push(words_of(layer));
        }
        // Each activation buffer once (x, xn, qkv, attn, ffn, logits twice for
        // the readback, sampler state, ...): a bound on what the runtime makes.
        let scratch_bytes = bound.iter().skip(1).try_fold(0u64, |acc, &(_, b)| acc.checked_add(b))
            .and_then(|s| s.checked_add(product("the activations", &[c, h, 4 * 3]).ok()?))
            .and_then(|s| s.checked_add(product("the logits", &[v, 4 * 2]).ok()?))
            .ok_or_else(|| overflow("the activations"))?;
        let words = Words {
            attn_partials: words_of(partials),
            ffn_h: words_of(ffn_h),
            router_logits: words_of(router_logits),
            expert_out: words_of(expert_out),
        };
        Ok(Sizes { layer_slots, kv_words, words, kv_bytes, scratch_bytes })
    }

    /// GPU bytes besides the weights.
    pub fn total(&self) -> u64 {
        self.kv_bytes.saturating_add(self.scratch_bytes)
    }
}
