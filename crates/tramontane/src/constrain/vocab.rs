//! The token trie llguidance computes masks over: every token id of the model
//! as the bytes it stands for, read off our tokenizer (every kind we load
//! ends up as a `tokenizers` tokenizer: HF tokenizer.json, GGUF vocabularies,
//! tekken and SentencePiece are rebuilt as byte-level BPE or as SentencePiece
//! BPE with byte fallback).
//!
//! - byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2, tekken): each character of a
//!   token stands for one byte (GPT-2's printable byte alphabet);
//! - SentencePiece: `▁` is a space, `<0xNN>` a single byte (byte fallback);
//! - special (control) tokens: llguidance's marker byte 0xFF then their text,
//!   so they never match text and grammars name them as `<[id]>`.
//!
//! Ids of the model past the tokenizer's vocabulary (padded LM heads) stand
//! for nothing and are never allowed.

use std::collections::HashMap;

use serde_json::Value;
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use crate::error::{Error, Result};
use crate::text::Tokenizer;

/// The longest token we keep (llguidance's trie stores lengths in a few bits
/// of its nodes; real vocabularies stay far below).
const MAX_TOKEN_BYTES: usize = 1024;

/// How a tokenizer's pieces spell bytes, read off its decoder.
#[derive(Debug, PartialEq)]
enum Spelling {
    /// GPT-2's byte-to-character table.
    ByteLevel,
    /// `space` stands for a space; `<0xNN>` pieces are single bytes.
    Pieces { space: Option<char> },
}

fn spelling(decoder: &Value) -> Spelling {
    fn walk(d: &Value, byte_level: &mut bool, space: &mut Option<char>) {
        match d.get("type").and_then(Value::as_str) {
            Some("ByteLevel") => *byte_level = true,
            Some("Metaspace") => *space = d.get("replacement").and_then(Value::as_str).and_then(|s| s.chars().next()),
            Some("Replace") if d.get("content").and_then(Value::as_str) == Some(" ") => {
                let pat = d.get("pattern").and_then(|p| p.get("String")).and_then(Value::as_str);
                if let Some(p) = pat {
                    let mut cs = p.chars();
                    if let (Some(c), None) = (cs.next(), cs.next()) {
                        *space = Some(c);
                    }
                }
            }
            Some("Sequence") => {
                for x in d.get("decoders").and_then(Value::as_array).into_iter().flatten() {
                    walk(x, byte_level, space);
                }
            }
            _ => {}
        }
    }
    let (mut byte_level, mut space) = (false, None);
    walk(decoder, &mut byte_level, &mut space);
    if byte_level {
        Spelling::ByteLevel
    } else {
        Spelling::Pieces { space }
    }
}

/// `<0xNN>`: a byte-fallback piece.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes each of the model's `n_vocab` token ids stands for (empty: none).
pub fn token_bytes(tok: &Tokenizer, n_vocab: usize) -> Result<Vec<Vec<u8>>> {
    let inner = tok.inner();
    let decoder = match inner.get_decoder() {
        Some(d) => serde_json::to_value(d).map_err(|e| Error::Tokenizer(format!("reading the tokenizer's decoder: {e}")))?,
        None => Value::Null,
    };
    let spelling = spelling(&decoder);
    let unbyte: HashMap<char, u8> = crate::text::tekken::byte_encoder().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    let added = inner.get_added_tokens_decoder();
    let mut out = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab {
        let id32 = id as u32;
        let mut bytes = if let Some(a) = added.get(&id32) {
            if a.special {
                let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                b.extend_from_slice(a.content.as_bytes());
                b
            } else {
                a.content.as_bytes().to_vec()
            }
        } else if let Some(piece) = inner.id_to_token(id32) {
            match &spelling {
                // A character outside the table: the token spells nothing we can
                // match, so it is never allowed.
                Spelling::ByteLevel => piece.chars().map(|c| unbyte.get(&c).copied()).collect::<Option<Vec<u8>>>().unwrap_or_default(),
                Spelling::Pieces { space } => match byte_piece(&piece) {
                    Some(b) => vec![b],
                    None => match space {
                        Some(s) => piece.replace(*s, " ").into_bytes(),
                        None => piece.into_bytes(),
                    },
                },
            }
        } else {
            Vec::new()
        };
        if bytes.len() > MAX_TOKEN_BYTES {
            bytes.clear();
        }
        out.push(bytes);
    }
    Ok(out)
}

/// The trie and tokenizer environment llguidance works with. `eos` are the
/// model's end-of-generation ids; with none, one extra id past the vocabulary
/// stands for the end (it is never sampled: a constraint that can only end
/// ends the generation).
pub fn tok_env(tok: &Tokenizer, n_vocab: usize) -> Result<TokEnv> {
    let mut words = token_bytes(tok, n_vocab)?;
    let mut eos: Vec<u32> = tok.eos.iter().copied().filter(|&e| (e as usize) < n_vocab).collect();
    if eos.is_empty() {
        let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        w.extend_from_slice(b"<|tramontane-end|>");
        words.push(w);
        eos.push(n_vocab as u32);
    }
    let info = TokRxInfo::new(words.len() as u32, eos[0]);
    let mut trie = TokTrie::from(&info, &words);
    if eos.len() > 1 {
        trie = trie.with_eos_tokens(&eos);
    }
    Ok(std::sync::Arc::new(ApproximateTokEnv::new(trie)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoders_tell_the_spelling() {
        assert_eq!(spelling(&json!({"type": "ByteLevel"})), Spelling::ByteLevel);
        let spm = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]});
        assert_eq!(spelling(&spm), Spelling::Pieces { space: Some('\u{2581}') });
        assert_eq!(spelling(&json!({"type": "Metaspace", "replacement": "_"})), Spelling::Pieces { space: Some('_') });
        assert_eq!(spelling(&Value::Null), Spelling::Pieces { space: None });
    }

    #[test]
    fn byte_pieces() {
        assert_eq!(byte_piece("<0x0A>"), Some(10));
        assert_eq!(byte_piece("<0xe6>"), Some(0xe6));
        assert_eq!(byte_piece("<0xZZ>"), None);
        assert_eq!(byte_piece("<0x0A0>"), None);
        assert_eq!(byte_piece("<s>"), None);
    }
}
