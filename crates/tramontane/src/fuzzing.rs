//! Fuzz entry points: one function per target of `crates/tramontane/fuzz`,
//! each taking arbitrary bytes and running them through the library the way a
//! loader would. The fuzz targets are thin wrappers over these, and
//! `tests/fuzz_corpora.rs` replays every committed corpus file (and every
//! crash found, under `regression/`) through the same functions in `cargo
//! test`, so a corpus is a regression suite even where no fuzzer runs.
//!
//! What each function checks is only what must hold for any input: it returns
//! (no panic, no endless loop), and what it accepts is consistent (a parsed
//! tensor lies inside the file, ids a tokenizer returns are in its
//! vocabulary, ...). Errors are the expected answer to most inputs. Peak memory
//! is checked by the callers: libFuzzer's `-malloc_limit_mb`, and a counting
//! allocator in the replay test.
//!
//! Not a stable API (hidden from the docs).

use std::cell::RefCell;
use std::collections::BTreeMap;

use futures_util::FutureExt;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::forward::rope_table;
use crate::parse::gguf::{self, GgufHeader, MetaValue, Parse};
use crate::parse::hf::{self, TensorTable};
use crate::parse::{safetensors, ModelConfig, TensorInfo};
use crate::source::ModelSource;
use crate::text::tool_calls::ToolCallStream;
use crate::text::{ChatRequest, ChatTemplate, ModelText, StreamDecoder, ToolFormat};

/// The most a lying size adds to the bytes really there (1 TiB).
const MAX_LIE: u64 = 1 << 40;

/// Run a future that never waits: every [`ModelSource`] here answers at once,
/// so the first poll finishes it.
fn run<F: std::future::Future>(f: F) -> F::Output {
    f.now_or_never().expect("a future over an in-memory source never waits")
}

/// A file of [`MemSource`]: the bytes really there, and the size the source
/// claims (at least the bytes' length, more when it lies).
struct MemFile {
    name: String,
    data: Vec<u8>,
    claimed: u64,
}

/// An in-memory [`ModelSource`] whose `size` may claim more than it holds, as a
/// server whose Content-Length lies and whose connection then closes: a read
/// past the bytes really there fails (after allocating nothing). Every name
/// asked for is recorded.
#[derive(Default)]
pub struct MemSource {
    files: Vec<MemFile>,
    asked: RefCell<Vec<String>>,
}

impl MemSource {
    /// Add `name` holding `data`, said to be `claimed` bytes long.
    pub fn with(mut self, name: &str, data: &[u8], claimed: u64) -> Self {
        self.files.push(MemFile { name: name.to_string(), data: data.to_vec(), claimed: claimed.max(data.len() as u64) });
        self
    }

    fn file(&self, name: &str) -> Option<&MemFile> {
        self.asked.borrow_mut().push(name.to_string());
        self.files.iter().find(|f| f.name == name)
    }
}

impl ModelSource for MemSource {
    async fn size(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.file(name).map(|f| f.claimed))
    }

    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = self.file(name).ok_or_else(|| Error::Io { file: name.to_string(), msg: "no such file".into() })?;
        let end = offset.checked_add(len).filter(|&e| e <= f.data.len() as u64).ok_or_else(|| Error::Io {
            file: name.to_string(),
            msg: format!("connection closed after {} bytes (read of {len} at {offset})", f.data.len()),
        })?;
        Ok(f.data[offset as usize..end as usize].to_vec())
    }
}

/// A name the engine asks a source for must stay inside the model: no
/// absolute path, no `.`/`..` segment, no escapes (checked independently of
/// the library's own rule).
fn assert_inside_model(name: &str) {
    assert!(!name.is_empty() && !name.starts_with('/'), "asked for `{name}`");
    for seg in name.split('/') {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "asked for `{name}`");
        assert!(!seg.contains(['%', '\\', '?', '#', ':']) && !seg.chars().any(char::is_control), "asked for `{name}`");
    }
}

fn assert_tensor_in_file(t: &TensorInfo, size: u64) {
    let end = t.offset.checked_add(t.nbytes);
    assert!(end.is_some_and(|e| e <= size), "tensor `{}` at {}+{} outside a {size}-byte file", t.name, t.offset, t.nbytes);
    assert_eq!(t.dtype.nbytes(t.numel()), Some(t.nbytes), "tensor `{}`: bytes disagree with shape", t.name);
}

/// What a loader does with a GGUF header once parsed: the configuration, the
/// tensor table (the tokenizer is [`gguf_tokenizer`]'s).
fn check_gguf_header(h: &GgufHeader, size: u64) {
    assert!(h.alignment.is_power_of_two());
    assert!(h.data_offset <= size || h.tensors.is_empty(), "data at {} past a {size}-byte file", h.data_offset);
    for t in &h.tensors {
        assert_tensor_in_file(t, size);
        assert!(t.offset >= h.data_offset && t.offset.is_multiple_of(h.alignment), "tensor `{}` misplaced", t.name);
    }
    if let Ok(cfg) = ModelConfig::from_gguf(h, "fuzz.gguf") {
        check_config(&cfg);
    }
    let _ = TensorTable::from_gguf(std::slice::from_ref(h));
}

/// `gguf_header`: the GGUF header parser on a whole file, and on the same
/// bytes as a prefix of a larger file; then through the async reader.
pub fn gguf_header(data: &[u8]) {
    let size = data.len() as u64;
    if let Ok(Parse::Done(h)) = gguf::parse(data, "fuzz.gguf", size) {
        check_gguf_header(&h, size);
    }
    match gguf::parse(data, "fuzz.gguf", size + 4096) {
        Ok(Parse::NeedMore(n)) => assert!(n > size, "asked for {n} bytes, had {size}"),
        Ok(Parse::Done(h)) => check_gguf_header(&h, size + 4096),
        Err(_) => {}
    }
    let src = MemSource::default().with("m.gguf", data, size);
    if let Ok(h) = run(gguf::read_header(&src, "m.gguf")) {
        check_gguf_header(&h, size);
    }
}

/// `safetensors_header`: the length prefix and the JSON table, then the whole
/// single-file read path of [`TensorTable::read`].
pub fn safetensors_header(data: &[u8]) {
    let size = data.len() as u64;
    if let Ok(n) = safetensors::header_len(data, "fuzz.safetensors", size) {
        assert!(safetensors::PREFIX + n <= size);
        let json = &data[safetensors::PREFIX as usize..(safetensors::PREFIX + n) as usize];
        if let Ok(tensors) = safetensors::parse_header(json, "fuzz.safetensors", size) {
            for t in &tensors {
                assert_tensor_in_file(t, size);
                assert!(t.offset >= safetensors::PREFIX + n, "tensor `{}` inside the header", t.name);
            }
        }
    }
    let src = MemSource::default().with(hf::SINGLE, data, size);
    if let Ok(table) = run(TensorTable::read(&src)) {
        check_table(&table, &src);
    }
}

fn check_table(table: &TensorTable, src: &MemSource) {
    for t in table.tensors.values() {
        let size = table.files.iter().find(|(f, _)| *f == t.file).map(|(_, s)| *s);
        let size = size.unwrap_or_else(|| panic!("tensor `{}` in `{}`, not a listed shard", t.name, t.file));
        assert_tensor_in_file(t, size);
    }
    for name in src.asked.borrow().iter() {
        assert_inside_model(name);
    }
}

fn check_config(cfg: &ModelConfig) {
    assert_eq!(cfg.layer_windows.len(), cfg.n_layers);
    assert!(cfg.n_heads > 0 && cfg.n_kv_heads > 0 && cfg.n_heads.is_multiple_of(cfg.n_kv_heads));
    assert!(cfg.head_dim > 0 && cfg.head_dim.is_multiple_of(2) && cfg.head_dim <= 256);
    assert_eq!(cfg.sliding_window, cfg.layer_windows.iter().flatten().copied().max());
    if let Some(m) = &cfg.moe {
        assert!(m.top_k <= m.n_experts && m.n_experts <= 128);
    }
    // What the loader computes on the host from the configuration alone.
    assert_eq!(rope_table::inv_freq(cfg).len(), cfg.head_dim / 2);
    assert_eq!(rope_table::table(cfg, 3).len(), 3 * cfg.head_dim);
}

/// `config_json`: `config.json` as a Hugging Face folder gives it.
pub fn config_json(data: &[u8]) {
    if let Ok(cfg) = ModelConfig::from_json(data, "config.json") {
        check_config(&cfg);
    }
}

/// `safetensors_index`: `model.safetensors.index.json` (the bytes before the
/// first NUL) with every shard it names holding the bytes after it (a
/// safetensors file), through [`TensorTable::read`].
pub fn safetensors_index(data: &[u8]) {
    let (index, shard) = split_nul(data);
    let mut src = MemSource::default().with(hf::INDEX, index, index.len() as u64);
    // Serve the shard under every name the index could give (names that the
    // reader must refuse included: it may not ask for them).
    if let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(index) {
        if let Some(Value::Object(map)) = v.get("weight_map") {
            let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
            names.sort_unstable();
            names.dedup();
            // Only the first shard holds tensors; the others an empty table, so
            // that several shards can load.
            for (i, name) in names.into_iter().take(64).enumerate() {
                let bytes: &[u8] = if i == 0 { shard } else { b"\x02\0\0\0\0\0\0\0{}" };
                src = src.with(name, bytes, bytes.len() as u64);
            }
        }
    }
    if let Ok(table) = run(TensorTable::read(&src)) {
        check_table(&table, &src);
        assert!(table.files.iter().all(|(f, _)| hf::plain_relative_path(f)));
    }
}

fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// `chat_template`: a chat template (the text before the first NUL) rendered
/// with a request read from the JSON after it (a [`ChatRequest`], or a bare
/// list of messages; a fixed conversation if neither). The template's fuel
/// bounds its running time.
pub fn chat_template(data: &[u8]) {
    let (source, request) = split_nul(data);
    let source = String::from_utf8_lossy(source);
    let req = match serde_json::from_slice::<ChatRequest>(request) {
        Ok(r) => r,
        Err(_) => match serde_json::from_slice::<Vec<Value>>(request) {
            Ok(messages) => ChatRequest { messages, add_generation_prompt: true, ..Default::default() },
            Err(_) => ChatRequest {
                messages: vec![
                    serde_json::json!({"role": "system", "content": "Be brief."}),
                    serde_json::json!({"role": "user", "content": "Hi"}),
                    serde_json::json!({"role": "assistant", "content": "Hello", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}),
                    serde_json::json!({"role": "tool", "tool_call_id": "call_1", "content": "2"}),
                    serde_json::json!({"role": "user", "content": "Thanks"}),
                ],
                tools: Some(vec![serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {}}})]),
                add_generation_prompt: true,
                ..Default::default()
            },
        },
    };
    let format = ToolFormat::detect(&source);
    let Ok(t) = ChatTemplate::new(&source, Some("<s>"), Some("</s>")) else { return };
    // A fixed instant: the same input renders the same text.
    let t = t.with_clock(|| (web_time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000), 3600));
    if let Ok(text) = t.render(&req) {
        // The rendered text read back as a generation, the way tool calls are.
        if let Some(format) = format {
            let mut stream = ToolCallStream::new(format, 0);
            let mut end = 0;
            for (i, _) in text.char_indices().chain(std::iter::once((text.len(), ' '))).step_by(7) {
                end = i;
                stream.observe(&text[..i], &text[..i]);
                let safe = stream.safe_len(&text[..i]);
                assert!(safe <= i && text[..i].is_char_boundary(safe));
            }
            let _ = stream.finish(&text[..end], &text[..end]);
        }
    }
}

/// Names of `tokenizer.ggml.pre` the structured input chooses among.
const PRE_NAMES: [&str; 22] = [
    "default", "llama3", "dbrx", "deepseek-llm", "deepseek-coder", "deepseek-v3", "falcon", "starcoder", "gpt-2",
    "qwen2", "qwen35", "ufakzeka", "glm4", "poro-chat", "viking", "tekken", "gpt-4o", "seed-coder", "bailingmoe",
    "laguna", "exaone-moe", "minicpm5",
];

/// The GGUF metadata of a tokenizer from a compact description, so that the
/// fuzzer reaches the tokenizer builder without writing a GGUF: byte 0 picks
/// the model, byte 1 the pre-type, byte 2 flags, bytes 3 and 4 BOS/EOS ids;
/// then, up to a NUL, vocabulary lines (`T:piece` gives the piece token type
/// T), a 0x01 byte, merge lines; after the NUL, text to encode.
fn tokenizer_metadata(data: &[u8]) -> Option<(GgufHeader, &[u8])> {
    let (head, rest) = (data.get(..5)?, &data[5..]);
    let (vocab, text) = split_nul(rest);
    let (tokens, merges) = match vocab.iter().position(|&b| b == 1) {
        Some(i) => (&vocab[..i], &vocab[i + 1..]),
        None => (vocab, &[][..]),
    };
    let mut m = BTreeMap::new();
    let s = |x: &str| MetaValue::Str(x.to_string());
    match head[0] % 4 {
        0 => m.insert("tokenizer.ggml.model".into(), s("gpt2")),
        1 => m.insert("tokenizer.ggml.model".into(), s("llama")),
        2 => m.insert("tokenizer.ggml.model".into(), s("bert")),
        _ => None,
    };
    match head[1] as usize {
        i if i < PRE_NAMES.len() => m.insert("tokenizer.ggml.pre".into(), s(PRE_NAMES[i])),
        i if i < 2 * PRE_NAMES.len() => None,
        _ => m.insert("tokenizer.ggml.pre".into(), s("no-such-pre")),
    };
    let (mut pieces, mut types, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in tokens.split(|&b| b == b'\n').enumerate() {
        let (ty, piece) = match line {
            [t @ b'0'..=b'9', b':', piece @ ..] => (u64::from(t - b'0'), piece),
            _ => (1, line),
        };
        pieces.push(s(&String::from_utf8_lossy(piece)));
        types.push(MetaValue::I32(ty as i32));
        scores.push(MetaValue::F32(-(i as f32)));
    }
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(pieces));
    let flags = head[2];
    if flags & 1 != 0 {
        m.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(types));
    }
    if flags & 2 != 0 {
        m.insert("tokenizer.ggml.scores".into(), MetaValue::Array(scores));
    }
    if flags & 4 != 0 {
        let merges = merges.split(|&b| b == b'\n').map(|l| s(&String::from_utf8_lossy(l))).collect();
        m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(merges));
    }
    if flags & 8 != 0 {
        m.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(flags & 16 != 0));
    }
    if flags & 32 != 0 {
        m.insert("tokenizer.ggml.add_space_prefix".into(), MetaValue::Bool(flags & 64 != 0));
    }
    if flags & 128 != 0 {
        m.insert("tokenizer.ggml.unknown_token_id".into(), MetaValue::U32(u32::from(head[3])));
    }
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(u32::from(head[3])));
    m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U8(head[4]));
    Some((GgufHeader { version: 3, metadata: m, tensors: Vec::new(), alignment: 32, data_offset: 0 }, text))
}

/// `gguf_tokenizer`: a tokenizer built from GGUF metadata, then used. Input
/// starting with the GGUF magic is a whole GGUF file (a vocab-only one: no
/// tensors); anything else is the compact description of
/// [`tokenizer_metadata`].
pub fn gguf_tokenizer(data: &[u8]) {
    let (header, text) = if data.starts_with(gguf::MAGIC) {
        match gguf::parse(data, "fuzz.gguf", data.len() as u64) {
            Ok(Parse::Done(h)) => (h, &b"Hello world! <s> 12345 \xc3\xa9t\xc3\xa9\n\tx"[..]),
            _ => return,
        }
    } else {
        match tokenizer_metadata(data) {
            Some(x) => x,
            None => return,
        }
    };
    let Ok(text_side) = ModelText::from_gguf(&header, "fuzz.gguf") else { return };
    let tok = &text_side.tokenizer;
    // Ids are positions in `tokenizer.ggml.tokens` (a piece listed twice
    // keeps its last id: the tokenizer's own vocabulary size is then smaller).
    let listed = header.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map_or(0, <[MetaValue]>::len);
    let vocab = listed.max(tok.vocab_size());
    let text = String::from_utf8_lossy(text);
    for (add, special) in [(false, true), (true, false)] {
        if let Ok(ids) = tok.encode_with(&text, add, special) {
            assert!(ids.iter().all(|&id| (id as usize) < vocab), "an id outside the {vocab} tokens listed: {ids:?}");
            let _ = tok.decode(&ids, false);
            let _ = tok.decode(&ids, true);
            let mut stream = StreamDecoder::keeping_special();
            for &id in ids.iter().take(64) {
                let _ = stream.push(tok, id);
            }
        }
    }
    for id in [tok.bos, tok.eos.first().copied()].into_iter().flatten() {
        let _ = tok.decode(&[id], false);
    }
}

/// `lying_size_headers`: header bytes from a source whose size claims up to
/// 1 TiB more than it holds (bytes 0..8, little-endian, modulo 2^40), byte 8
/// choosing the reader (even: GGUF, odd: safetensors), the rest the file.
/// The readers may refuse or fail on the short read; they must not panic nor
/// allocate by what the header claims (the callers bound peak memory).
pub fn lying_size_headers(data: &[u8]) {
    let Some((head, file)) = data.split_first_chunk::<9>() else { return };
    let lie = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) % MAX_LIE;
    let claimed = file.len() as u64 + lie;
    if head[8] % 2 == 0 {
        match gguf::parse(file, "lying.gguf", claimed) {
            Ok(Parse::NeedMore(n)) => assert!(n > file.len() as u64 && n <= claimed),
            Ok(Parse::Done(h)) => check_gguf_header(&h, claimed),
            Err(_) => {}
        }
        let src = MemSource::default().with("m.gguf", file, claimed);
        if let Ok(h) = run(gguf::read_header(&src, "m.gguf")) {
            check_gguf_header(&h, claimed);
        }
        if let Ok(parts) = run(gguf::read_model(&src, "m.gguf")) {
            assert!(!parts.is_empty());
        }
    } else {
        if let Ok(n) = safetensors::header_len(file, "lying.safetensors", claimed) {
            assert!(safetensors::PREFIX + n <= claimed);
            if let Some(json) = file.get(safetensors::PREFIX as usize..(safetensors::PREFIX + n) as usize) {
                if let Ok(tensors) = safetensors::parse_header(json, "lying.safetensors", claimed) {
                    for t in &tensors {
                        assert_tensor_in_file(t, claimed);
                    }
                }
            }
        }
        let src = MemSource::default().with(hf::SINGLE, file, claimed);
        if let Ok(table) = run(TensorTable::read(&src)) {
            check_table(&table, &src);
        }
    }
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: [(&str, Target); 7] = [
    ("gguf_header", gguf_header),
    ("safetensors_header", safetensors_header),
    ("config_json", config_json),
    ("gguf_tokenizer", gguf_tokenizer),
    ("safetensors_index", safetensors_index),
    ("chat_template", chat_template),
    ("lying_size_headers", lying_size_headers),
];
