//! A `tokenizers` tokenizer built from GGUF metadata (`tokenizer.ggml.*`):
//! GPT-2 style byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre`
//! names) and SentencePiece-style BPE (`llama`: scores, byte fallback).
//! We write the equivalent tokenizer.json and let the `tokenizers` crate do the
//! rest, as transformers does when it loads a GGUF.

use serde_json::{json, Value};

use super::Tokenizer;
use crate::error::{Error, Result};
use crate::parse::gguf::{GgufHeader, MetaValue};

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type).
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

// Split patterns of llama.cpp's pre-tokenizer types that differ from GPT-2's.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(h: &GgufHeader, key: &str, file: &str) -> Result<Vec<String>> {
    h.get(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| Error::format(file, format!("GGUF metadata has no `{key}`")))?
        .iter()
        .map(|v| v.as_str().map(String::from).ok_or_else(|| Error::format(file, format!("`{key}` holds a non-string"))))
        .collect()
}

fn added_tokens(tokens: &[String], types: &[u64]) -> Vec<Value> {
    tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(&CONTROL) | Some(&USER_DEFINED)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types.get(i) == Some(&CONTROL)})
        })
        .collect()
}

pub fn from_gguf(h: &GgufHeader, file: &str) -> Result<Tokenizer> {
    let model = h.get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or("");
    let tokens = strings(h, "tokenizer.ggml.tokens", file)?;
    let types: Vec<u64> = h
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let vocab: serde_json::Map<String, Value> =
        tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let spec = match model {
        "gpt2" => {
            // A byte-level vocabulary may have no merges at all.
            let merges = if h.get("tokenizer.ggml.merges").is_some() { strings(h, "tokenizer.ggml.merges", file)? } else { Vec::new() };
            let pre = h.get("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("default");
            let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
            let split = |pattern: &str| json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                byte_level(false)]});
            let pre_tokenizer = match pre {
                "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" | "falcon3" | "pixtral" => split(LLAMA3_PATTERN),
                "qwen2" | "deepseek-r1-qwen" => split(QWEN2_PATTERN),
                // GPT-2's own pattern, built into ByteLevel: what transformers uses
                // for smollm and the other GPT-2-like types.
                "default" | "gpt2" | "smollm" | "gpt-2" | "starcoder" | "refact" | "olmo" => byte_level(true),
                other => return Err(Error::Unsupported(format!("{file}: tokenizer pre-type `{other}`"))),
            };
            json!({
                "version": "1.0",
                "added_tokens": added_tokens(&tokens, &types),
                "normalizer": null,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": null,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": pre.starts_with("llama"), "vocab": vocab, "merges": merges},
            })
        }
        "llama" => {
            let scores: Vec<f64> = h
                .get("tokenizer.ggml.scores")
                .and_then(MetaValue::as_array)
                .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
                .unwrap_or_default();
            let merges = spm_merges(&tokens, &scores);
            let add_space = h.get("tokenizer.ggml.add_space_prefix").and_then(MetaValue::as_bool).unwrap_or(true);
            let unk = h.get("tokenizer.ggml.unknown_token_id").and_then(MetaValue::as_u64).and_then(|i| tokens.get(i as usize));
            let mut norm = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
            if add_space {
                norm.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            let mut dec = vec![
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_space {
                dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            json!({
                "version": "1.0",
                "added_tokens": added_tokens(&tokens, &types),
                "normalizer": {"type": "Sequence", "normalizers": norm},
                "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": dec},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": merges},
            })
        }
        "" => return Err(Error::format(file, "GGUF metadata has no tokenizer (tokenizer.ggml.model)")),
        other => return Err(Error::Unsupported(format!("{file}: tokenizer model `{other}` (gpt2 and llama are supported)"))),
    };
    let bytes = serde_json::to_vec(&spec).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::from_json(&bytes, file)?;
    let id = |k: &str| h.get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
    tok.bos = id("tokenizer.ggml.bos_token_id");
    tok.bos_text = tok.bos.and_then(|b| tokens.get(b as usize).cloned());
    let eos = id("tokenizer.ggml.eos_token_id");
    tok.eos_text = eos.and_then(|e| tokens.get(e as usize).cloned());
    Ok(tok)
}

/// BPE merges for a SentencePiece vocabulary: every split of a token into two
/// tokens is a merge, ranked by the merged token's score (higher first), as
/// transformers derives them for SentencePiece BPE models.
fn spm_merges(tokens: &[String], scores: &[f64]) -> Vec<String> {
    let index: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f64, usize, usize, String)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (cut, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                merges.push((score, ia, ib, format!("{a} {b}")));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges.into_iter().map(|m| m.3).collect()
}
