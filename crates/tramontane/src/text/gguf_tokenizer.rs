//! A `tokenizers` tokenizer built from GGUF metadata (`tokenizer.ggml.*`):
//! GPT-2 style byte-level BPE (`gpt2`, split by the regexes llama.cpp attaches
//! to `tokenizer.ggml.pre`) and SentencePiece-style BPE (`llama`: scores, byte
//! fallback). We write the equivalent tokenizer.json and let the `tokenizers`
//! crate do the rest, as transformers does when it loads a GGUF.
//! Checked against llama.cpp's own tokenizer suite (tests/suite/tokenizers.rs).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::Tokenizer;
use crate::error::{Error, Result};
use crate::parse::gguf::{GgufHeader, MetaValue};

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's llama_token_type),
/// numbered as SentencePiece's `ModelProto.SentencePiece.Type` (5 = unused).
pub(crate) const NORMAL: u64 = 1;
pub(crate) const UNKNOWN: u64 = 2;
pub(crate) const CONTROL: u64 = 3;
pub(crate) const USER_DEFINED: u64 = 4;
pub(crate) const BYTE: u64 = 6;

// Split regexes of llama.cpp's pre-tokenizer types (src/llama-vocab.cpp,
// `llm_tokenizer_bpe`). A type's regexes apply one after the other, each to the
// pieces the previous one left (matches and the text between them), which is
// a `Sequence` of `Split(Isolated)` in tokenizers' terms.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PORO: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
/// Tekken's own pattern (tekken.json `config.pattern`, the HF tokenizer.json):
/// llama.cpp rewrites its letter classes for std::regex, which drifts on
/// non-ASCII letters; fancy-regex takes the original, which is what
/// mistral-common (the reference) runs.
pub(crate) const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's pattern, original form (same reason as TEKKEN).
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a `tokenizer.ggml.pre` name means for tokenization.
pub(crate) struct PreType {
    pub regexes: &'static [&'static str],
    /// A whole pre-token found in the vocabulary is emitted as is (llama3, tekken).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the GGUF does not say.
    pub add_bos: bool,
}

const fn pre(regexes: &'static [&'static str]) -> PreType {
    PreType { regexes, ignore_merges: false, add_bos: false }
}

/// llama.cpp's pre-type table (`llama_vocab::impl::load`), for the types whose
/// splitting is plain regexes (types with hand-written splitters are left out).
pub(crate) fn pre_type(name: &str) -> Option<PreType> {
    Some(match name {
        "default" => pre(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
            PreType { regexes: &[LLAMA3], ignore_merges: true, add_bos: true }
        }
        "dbrx" | "smaug-bpe" => pre(&[LLAMA3]),
        "deepseek-llm" => pre(&[
            r"[\r\n]",
            r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
            r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
            r"\s+$",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}+",
        ]),
        "deepseek-coder" => pre(&[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+", r"\p{N}"]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => pre(&[
            r"\p{N}{1,3}",
            r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
            r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
        ]),
        "falcon" => pre(&[
            r"[\p{P}\$\+<=>\^~\|`]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            "[0-9][0-9][0-9]",
        ]),
        // Digits one by one, then GPT-2's pattern.
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            pre(&[r"\p{N}", GPT2])
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum"
        | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "exaone4"
        | "trillion" | "granite-docling" => pre(&[GPT2]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open" => {
            pre(&[QWEN2])
        }
        "qwen35" => pre(&[QWEN35]),
        "grok-2" => pre(&[QWEN2]),
        "ufakzeka" => pre(&[r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"]),
        "chatglm-bpe" => pre(&[LLAMA3]),
        "glm4" | "glm5" => PreType { regexes: &[LLAMA3], ignore_merges: true, add_bos: false },
        "poro-chat" | "bloom" | "gpt3-finnish" => pre(&[PORO]),
        "viking" => pre(&[PORO, r"\p{N}"]),
        "tekken" => PreType { regexes: &[TEKKEN], ignore_merges: true, add_bos: true },
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => pre(&[GPT4O]),
        "seed-coder" => pre(&[SEED_CODER]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => pre(&[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ]),
        "laguna" => pre(&[r"[^\n]+|[\n]+", QWEN2]),
        "exaone-moe" => pre(&[EXAONE_MOE]),
        "minicpm5" => PreType {
            regexes: &[
                r"\p{N}{1,3}",
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ],
            ignore_merges: true,
            add_bos: false,
        },
        _ => return None,
    })
}

/// A GGUF without `tokenizer.ggml.pre` (written before llama.cpp stored it):
/// the pre-type guessed from tell-tale tokens, and why.
fn guess_pre(tokens: &[String]) -> (&'static str, &'static str) {
    let has = |t: &str| tokens.iter().any(|x| x == t);
    if has("<|begin_of_text|>") {
        ("llama3", "it has `<|begin_of_text|>`")
    } else if has("<|im_start|>") && tokens.len() >= 151_000 {
        ("qwen2", "it has `<|im_start|>` and about 151k tokens")
    } else if tokens.len() == 131_072 && has("[INST]") && has("<SPECIAL_999>") {
        ("tekken", "it has `[INST]` and 1000 special tokens in 131072")
    } else {
        ("gpt-2", "nothing marks another type")
    }
}

fn strings(h: &GgufHeader, key: &str, file: &str) -> Result<Vec<String>> {
    h.get(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| Error::format(file, format!("GGUF metadata has no `{key}`")))?
        .iter()
        .map(|v| v.as_str().map(String::from).ok_or_else(|| Error::format(file, format!("`{key}` holds a non-string"))))
        .collect()
}

/// Control and user-defined tokens are matched in the text before the model
/// runs; only control tokens are `special` (dropped when `parse_special` is off).
pub(crate) fn added_tokens(tokens: &[String], types: &[u64]) -> Vec<Value> {
    tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(&CONTROL) | Some(&USER_DEFINED)))
        .map(|(i, t)| added_token(i, t, types.get(i) == Some(&CONTROL)))
        .collect()
}

pub(crate) fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

/// A byte-level BPE tokenizer.json: text split by `regexes` (see [`PreType`]),
/// bytes mapped to GPT-2's printable characters, then BPE.
pub(crate) fn byte_level_json(
    vocab: Map<String, Value>,
    merges: Vec<Value>,
    added: Vec<Value>,
    regexes: &[&str],
    ignore_merges: bool,
) -> Value {
    let mut pre: Vec<Value> = regexes
        .iter()
        .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
        .collect();
    pre.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
    json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    })
}

/// A SentencePiece (BPE) vocabulary, from GGUF metadata or a tokenizer.model.
pub(crate) struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f64>,
    pub types: Vec<u64>,
    /// SentencePiece's `add_dummy_prefix`: a `▁` before the text.
    pub add_space_prefix: bool,
    /// SentencePiece's `remove_extra_whitespaces`: no leading or trailing
    /// spaces, runs of spaces as one (llama.cpp ignores it for SPM vocabularies).
    pub remove_extra_whitespaces: bool,
    pub unk: Option<u32>,
}

/// The tokenizer.json of a SentencePiece BPE model: spaces become `▁` (plus
/// one in front), BPE with merges ranked by score, unknown characters as
/// `<0xXX>` byte tokens.
pub(crate) fn spm_json(v: &SpmVocab) -> Value {
    let vocab: Map<String, Value> = v.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let merges = spm_merges(&v.tokens, &v.scores, &v.types);
    let unk = v.unk.and_then(|i| v.tokens.get(i as usize));
    let mut norm = Vec::new();
    if v.remove_extra_whitespaces {
        // Only U+0020 counts, as in SentencePiece's identity normalizer.
        norm.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
        norm.push(json!({"type": "Replace", "pattern": {"Regex": "^ | $"}, "content": ""}));
    }
    if v.add_space_prefix {
        norm.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    norm.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let mut dec = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if v.add_space_prefix {
        dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "added_tokens": added_tokens(&v.tokens, &v.types),
        "normalizer": {"type": "Sequence", "normalizers": norm},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": dec},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    })
}

/// BPE merges for a SentencePiece vocabulary: every split of a piece into two
/// pieces is a merge, ranked by the merged piece's score (higher first), as
/// transformers derives them. Only pieces SentencePiece's BPE can produce are
/// merge results: control, unknown and byte pieces never come out of merges.
fn spm_merges(tokens: &[String], scores: &[f64], types: &[u64]) -> Vec<Value> {
    let mergeable = |id: usize| !matches!(types.get(id), Some(&CONTROL) | Some(&UNKNOWN) | Some(&BYTE));
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f64, usize, usize)> = Vec::new();
    for (id, t) in tokens.iter().enumerate().filter(|(id, _)| mergeable(*id)) {
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (cut, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                merges.push((score, ia, ib));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges.into_iter().map(|(_, a, b)| json!([tokens[a], tokens[b]])).collect()
}

/// Builds the tokenizer and sets what the model says about BOS/EOS.
pub(crate) fn finish(spec: &Value, file: &str, tokens: &[String], ids: SpecialIds) -> Result<Tokenizer> {
    let bytes = serde_json::to_vec(spec).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::from_json(&bytes, file)?;
    tok.bos = ids.bos;
    tok.bos_text = ids.bos.and_then(|b| tokens.get(b as usize).cloned());
    tok.eos_text = ids.eos.and_then(|e| tokens.get(e as usize).cloned());
    tok.add_bos = ids.add_bos;
    tok.add_eos = ids.add_eos;
    Ok(tok)
}

pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

pub fn from_gguf(h: &GgufHeader, file: &str) -> Result<Tokenizer> {
    let model = h.get("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or("");
    let tokens = strings(h, "tokenizer.ggml.tokens", file)?;
    let types: Vec<u64> = h
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(NORMAL)).collect())
        .unwrap_or_default();
    // A special token's id must name one of the tokens: llama.cpp ignores one
    // that does not (with a warning), and so do we, rather than add an id to
    // prompts that neither the tokenizer nor the model has.
    let id = |k: &str, warnings: &mut Vec<String>| match h.get(k).and_then(MetaValue::as_u64) {
        Some(v) if v < tokens.len() as u64 => Some(v as u32),
        Some(v) => {
            warnings.push(format!("{file}: {k} {v} is not one of the {} tokens; ignored", tokens.len()));
            None
        }
        None => None,
    };
    let flag = |k: &str| h.get(k).and_then(MetaValue::as_bool);
    let mut warnings = Vec::new();
    let (spec, default_bos) = match model {
        "gpt2" => {
            let pre_name = match h.get("tokenizer.ggml.pre").and_then(MetaValue::as_str) {
                Some(p) => p,
                None => {
                    let (p, why) = guess_pre(&tokens);
                    warnings.push(format!(
                        "{file}: no tokenizer.ggml.pre; splitting text as `{p}` because {why} \
                         (llama.cpp would use its `default` pattern); tokens may differ from the original tokenizer"
                    ));
                    p
                }
            };
            let pre = pre_type(pre_name)
                .ok_or_else(|| Error::Unsupported(format!("{file}: tokenizer pre-type `{pre_name}`")))?;
            // A byte-level vocabulary may have no merges at all.
            let merges = if h.get("tokenizer.ggml.merges").is_some() { strings(h, "tokenizer.ggml.merges", file)? } else { Vec::new() };
            let vocab: Map<String, Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
            let merges = merges.into_iter().map(Value::String).collect();
            (byte_level_json(vocab, merges, added_tokens(&tokens, &types), pre.regexes, pre.ignore_merges), pre.add_bos)
        }
        "llama" => {
            let scores: Vec<f64> = h
                .get("tokenizer.ggml.scores")
                .and_then(MetaValue::as_array)
                .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
                .unwrap_or_default();
            let v = SpmVocab {
                add_space_prefix: flag("tokenizer.ggml.add_space_prefix").unwrap_or(true),
                remove_extra_whitespaces: false,
                unk: id("tokenizer.ggml.unknown_token_id", &mut warnings),
                tokens: tokens.clone(),
                scores,
                types,
            };
            (spm_json(&v), true)
        }
        "" => return Err(Error::format(file, "GGUF metadata has no tokenizer (tokenizer.ggml.model)")),
        other => return Err(Error::Unsupported(format!("{file}: tokenizer model `{other}` (gpt2 and llama are supported)"))),
    };
    let ids = SpecialIds {
        bos: id("tokenizer.ggml.bos_token_id", &mut warnings),
        eos: id("tokenizer.ggml.eos_token_id", &mut warnings),
        add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(default_bos),
        add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
    };
    let mut tok = finish(&spec, file, &tokens, ids)?;
    tok.warnings = warnings;
    Ok(tok)
}
