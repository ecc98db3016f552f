//! Mistral's `tekken.json` (tiktoken-style byte-level BPE) as a `tokenizers`
//! tokenizer, for Hugging Face folders that ship no tokenizer.json.
//!
//! The file holds `config.pattern` (the split regex), `vocab`: tokens as
//! `{rank, token_bytes (base64), token_str}`, and optionally `special_tokens`.
//! Ids: special tokens take `0..default_num_special_tokens`, a normal token's id
//! is its rank plus that count; only the first `default_vocab_size -
//! default_num_special_tokens` ranks are used (mistral-common cuts there).
//! BPE merges are derived from the ranks as transformers' tiktoken converter
//! does; `ignore_merges` gives tiktoken's "a whole piece in the vocabulary is
//! one token". Checked against mistral-common (tests/suite/tokenizers.rs).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::gguf_tokenizer::{added_token, byte_level_json, finish, SpecialIds};
use super::Tokenizer;
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct TekkenFile {
    config: Config,
    vocab: Vec<Entry>,
    #[serde(default)]
    special_tokens: Option<Vec<Special>>,
}

#[derive(Deserialize)]
struct Config {
    pattern: String,
    default_vocab_size: usize,
    default_num_special_tokens: usize,
}

#[derive(Deserialize)]
struct Entry {
    rank: usize,
    token_bytes: String,
}

#[derive(Deserialize)]
struct Special {
    rank: usize,
    token_str: String,
}

/// mistral-common's special tokens for tekken files that list none
/// (`Tekkenizer.DEPRECATED_SPECIAL_TOKENS`); the rest are `<SPECIAL_{id}>`.
const DEFAULT_SPECIALS: [&str; 20] = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
];

pub fn from_tekken_json(bytes: &[u8], file: &str) -> Result<Tokenizer> {
    let t: TekkenFile =
        serde_json::from_slice(bytes).map_err(|e| Error::format(file, format!("not a tekken tokenizer: {e}")))?;
    let n_special = t.config.default_num_special_tokens;
    let specials = special_table(t.special_tokens.as_deref(), n_special, file)?;
    let ranks = normal_tokens(&t.vocab, n_special, t.config.default_vocab_size, file)?;
    let enc = byte_encoder();
    let text = |b: &[u8]| -> String { b.iter().map(|&x| enc[x as usize]).collect() };
    // Special tokens are in the model's vocabulary too (else `tokenizers` gives
    // them fresh ids), as in Hugging Face's own conversions of tekken files;
    // the split pattern never leaves a bracketed special token as one piece.
    let specials_vocab = specials.iter().enumerate().map(|(i, s)| (s.clone(), json!(i)));
    let normal_vocab = ranks.iter().enumerate().map(|(r, b)| (text(b), json!(r + n_special)));
    let vocab: Map<String, Value> = specials_vocab.chain(normal_vocab).collect();
    if vocab.len() != specials.len() + ranks.len() {
        // One text, two ids: `tokenizers` could keep only one of them.
        return Err(Error::Unsupported(format!("{file}: a special token's text is also a normal token")));
    }
    let merges = tiktoken_merges(&ranks).into_iter().map(|(a, b)| json!([text(a), text(b)])).collect();
    let added = specials.iter().enumerate().map(|(i, s)| added_token(i, s, true)).collect();
    let spec = byte_level_json(vocab, merges, added, &[t.config.pattern.as_str()], true);
    let find = |s: &str| specials.iter().position(|x| x == s).and_then(|i| u32::try_from(i).ok());
    // Mistral prompts start with BOS; mistral-common never appends EOS to text.
    let ids = SpecialIds { bos: find("<s>"), eos: find("</s>"), add_bos: true, add_eos: false };
    finish(&spec, file, &specials, ids)
}

/// The special tokens by id: the file's list (ranks must be distinct and
/// below the count), else mistral-common's defaults, padded with fillers.
fn special_table(listed: Option<&[Special]>, n: usize, file: &str) -> Result<Vec<String>> {
    let mut table: Vec<Option<String>> = vec![None; n];
    match listed {
        Some(list) => {
            for s in list {
                let slot = table.get_mut(s.rank).ok_or_else(|| {
                    Error::format(file, format!("special token `{}` has rank {} of {n}", s.token_str, s.rank))
                })?;
                if slot.replace(s.token_str.clone()).is_some() {
                    return Err(Error::format(file, format!("two special tokens have rank {}", s.rank)));
                }
            }
        }
        None => {
            for (slot, s) in table.iter_mut().zip(DEFAULT_SPECIALS) {
                *slot = Some(s.to_string());
            }
        }
    }
    Ok(table.into_iter().enumerate().map(|(i, s)| s.unwrap_or_else(|| format!("<SPECIAL_{i}>"))).collect())
}

/// Token bytes by rank, cut to the vocabulary size the config asks for. The
/// first 256 ranks must be the single bytes (every text must be encodable).
fn normal_tokens(vocab: &[Entry], n_special: usize, vocab_size: usize, file: &str) -> Result<Vec<Vec<u8>>> {
    let n = vocab_size.checked_sub(n_special).filter(|&n| n >= 256 && n <= vocab.len()).ok_or_else(|| {
        Error::format(
            file,
            format!("vocabulary size {vocab_size} with {n_special} special tokens does not fit {} tokens", vocab.len()),
        )
    })?;
    let mut seen = HashMap::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for (i, e) in vocab.iter().take(n).enumerate() {
        if e.rank != i {
            return Err(Error::format(file, format!("vocabulary entry {i} has rank {}", e.rank)));
        }
        let b = base64_decode(&e.token_bytes)
            .ok_or_else(|| Error::format(file, format!("token of rank {i}: bad base64 `{}`", e.token_bytes)))?;
        if (i < 256 && b != [i as u8]) || b.is_empty() {
            return Err(Error::format(file, format!("token of rank {i} is not the byte {i}")));
        }
        if seen.insert(b.clone(), i).is_some() {
            return Err(Error::format(file, format!("token of rank {i} repeats an earlier token")));
        }
        out.push(b);
    }
    Ok(out)
}

/// Merges from ranks (transformers' `TikTokenConverter` / llama.cpp's
/// `extract_vocab_merges_from_model`): for each token by rank, every split
/// into two tokens, ordered by the ranks of the two parts.
fn tiktoken_merges(ranks: &[Vec<u8>]) -> Vec<(&[u8], &[u8])> {
    let rank: HashMap<&[u8], usize> = ranks.iter().enumerate().map(|(r, b)| (b.as_slice(), r)).collect();
    let mut merges = Vec::new();
    for token in ranks.iter().skip(256) {
        let mut local: Vec<(usize, usize, &[u8], &[u8])> = (1..token.len())
            .filter_map(|cut| {
                let (a, b) = token.split_at(cut);
                Some((*rank.get(a)?, *rank.get(b)?, a, b))
            })
            .collect();
        local.sort_unstable_by_key(|m| (m.0, m.1));
        merges.extend(local.into_iter().map(|m| (m.2, m.3)));
    }
    merges
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
pub(crate) fn byte_encoder() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            u32::from(b)
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

/// Standard base64 (padding optional); None on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = s.trim_end_matches('=').as_bytes();
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut v = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            v |= digit(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1; // bytes this chunk carries
        out.extend_from_slice(&v.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

