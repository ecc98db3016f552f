//! Bad input gets a clear, typed error naming the file and tensor: never a
//! panic, never a wrong answer. Each case corrupts a copy of llama_tiny.

use std::path::{Path, PathBuf};

use crate::common::*;
use tramontane::source::DirSource;
use tramontane::{Error, GenerateRequest, LoadOptions, Model};

struct TempModel(PathBuf);

impl TempModel {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tramontane-bad-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        for e in std::fs::read_dir(fixtures().join("llama_tiny")).expect("fixture") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
        }
        TempModel(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn edit(&self, name: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        let p = self.path(name);
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, f(bytes)).expect("write");
    }
    fn load(&self) -> Result<Model, Error> {
        load_dir(&self.0)
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_dir(dir: &Path) -> Result<Model, Error> {
    pollster::block_on(Model::load(gpu(), &DirSource::new(dir), &LoadOptions::default(), &mut |_| {}))
}

/// Replace `from` by `to` (same length) inside a safetensors header.
fn patch(bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).expect("utf8");
    assert!(header.contains(from), "{from} not in header");
    let mut out = bytes[..8].to_vec();
    out.extend(header.replacen(from, to, 1).into_bytes());
    out.extend(&bytes[8 + n..]);
    out
}

fn msg(e: &Error) -> String {
    e.to_string()
}

const LAYERS_SHARD: &str = "model-00003-of-00003.safetensors";

/// The shard holding the layers (a small one) and the first tensor in it.
fn layer_shard() -> &'static str {
    LAYERS_SHARD
}

#[test]
fn missing_config() {
    let m = TempModel::new("noconfig");
    std::fs::remove_file(m.path("config.json")).expect("rm");
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::MissingFile { .. }), "{e:?}");
    assert!(msg(&e).contains("config.json"), "{e}");
    assert_eq!(e.code(), "MODEL_FORMAT");
}

#[test]
fn malformed_config() {
    let m = TempModel::new("badconfig");
    m.edit("config.json", |b| b[..b.len() / 2].to_vec());
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Format { .. }) && msg(&e).contains("config.json"), "{e}");
    m.edit("config.json", |_| br#"{"model_type": "llama", "hidden_size": "big"}"#.to_vec());
    let e = m.load().err().expect("error");
    assert!(msg(&e).contains("hidden_size"), "{e}");
}

#[test]
fn unknown_architecture() {
    let m = TempModel::new("arch");
    m.edit("config.json", |b| {
        String::from_utf8(b).expect("utf8").replace("LlamaForCausalLM", "GPT2LMHeadModel").replace("\"llama\"", "\"gpt2\"").into_bytes()
    });
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Unsupported(_)) && msg(&e).contains("GPT2LMHeadModel"), "{e}");
}

#[test]
fn index_names_a_missing_shard() {
    let m = TempModel::new("noshard");
    std::fs::remove_file(m.path(LAYERS_SHARD)).expect("rm");
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::MissingFile { .. }) && msg(&e).contains(LAYERS_SHARD), "{e}");
}

#[test]
fn index_shard_names_cannot_leave_the_model_folder() {
    // Joined to a folder or a URL prefix: `..`, percent-escapes (a server
    // decodes `%2e%2e/` into `../`), backslashes and absolute paths are refused.
    for (i, bad) in ["../model-00003-of-00003.safetensors", "%2e%2e/model.safetensors", "a/../../x.safetensors",
                     "/etc/model.safetensors", "..\\x.safetensors", "x.safetensors?y", "https://evil.example/x"]
        .iter()
        .enumerate()
    {
        let m = TempModel::new(&format!("escape{i}"));
        m.edit("model.safetensors.index.json", |b| {
            String::from_utf8(b).expect("utf8").replace(LAYERS_SHARD, &bad.replace('\\', "\\\\")).into_bytes()
        });
        let e = m.load().err().expect("refused");
        assert_eq!(e.code(), "MODEL_FORMAT", "{bad}: {e}");
        assert!(msg(&e).contains("not a plain file name"), "{bad}: {e}");
    }
}

#[test]
fn zero_context_or_chunk_is_refused_not_changed() {
    let src = DirSource::new(fixtures().join("llama_tiny"));
    for opts in [LoadOptions { context: Some(0), ..Default::default() }, LoadOptions { chunk: 0, ..Default::default() }] {
        let e = pollster::block_on(Model::load(gpu(), &src, &opts, &mut |_| {})).err().expect("refused");
        assert_eq!(e.code(), "INVALID_REQUEST", "{e}");
    }
    assert!(pollster::block_on(Model::load(gpu(), &src, &LoadOptions::default(), &mut |_| {})).is_ok());
}

#[test]
fn header_length_larger_than_the_file() {
    let m = TempModel::new("hdrlen");
    m.edit(layer_shard(), |mut b| {
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        b
    });
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Format { .. }) && msg(&e).contains("header length"), "{e}");
    assert!(msg(&e).contains(LAYERS_SHARD));
}

#[test]
fn header_that_is_not_json() {
    let m = TempModel::new("hdrjson");
    m.edit(layer_shard(), |mut b| {
        b[8] = b'x';
        b
    });
    let e = m.load().err().expect("error");
    assert!(msg(&e).contains("not valid JSON") && msg(&e).contains(LAYERS_SHARD), "{e}");
}

#[test]
fn truncated_shard() {
    let m = TempModel::new("trunc");
    m.edit(layer_shard(), |b| b[..b.len() - 100].to_vec());
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Tensor { .. }) && msg(&e).contains("runs past the end"), "{e}");
    assert!(msg(&e).contains(LAYERS_SHARD), "{e}");
}

#[test]
fn tensor_missing() {
    let m = TempModel::new("notensor");
    m.edit(layer_shard(), |b| patch(b, "model.norm.weight", "model.norm.weigh_"));
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Tensor { .. }) && msg(&e).contains("model.norm.weight") && msg(&e).contains("missing"), "{e}");
}

#[test]
fn shape_disagrees_with_config() {
    let m = TempModel::new("shape");
    m.edit("config.json", |b| String::from_utf8(b).expect("utf8").replace("\"intermediate_size\": 128", "\"intermediate_size\": 64").into_bytes());
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Tensor { .. }) && msg(&e).contains("gate_proj") && msg(&e).contains("shape"), "{e}");
}

#[test]
fn unknown_dtype() {
    let m = TempModel::new("dtype");
    m.edit(layer_shard(), |b| patch(b, "\"F32\"", "\"F64\""));
    let e = m.load().err().expect("error");
    assert!(matches!(e, Error::Tensor { .. }) && msg(&e).contains("F64"), "{e}");
}

#[test]
fn prompt_longer_than_the_context_then_the_engine_still_works() {
    let src = DirSource::new(fixtures().join("llama_tiny"));
    let opts = LoadOptions { context: Some(12), chunk: 4, ..Default::default() };
    let mut model = pollster::block_on(Model::load(gpu(), &src, &opts, &mut |_| {})).expect("load");
    let long: Vec<u32> = (100..120).collect();
    let req = GenerateRequest { max_tokens: 4, ..Default::default() };
    let e = pollster::block_on(model.generate(&long, &req, &mut |_, _, _| true)).expect_err("error");
    assert_eq!(e, Error::ContextOverflow { tokens: 20, context: 12 });
    assert_eq!(e.code(), "CONTEXT_OVERFLOW");
    let bad_id = pollster::block_on(model.generate(&[1, 999_999], &req, &mut |_, _, _| true)).expect_err("error");
    assert!(matches!(bad_id, Error::InvalidRequest(_)), "{bad_id:?}");
    // Generation stops at the end of the context with finish reason Length.
    let g = pollster::block_on(model.generate(&long[..10], &GenerateRequest { max_tokens: 50, ignore_eos: true, ..Default::default() }, &mut |_, _, _| true)).expect("fits");
    assert_eq!(g.generated.len(), 3); // positions 10 and 11 fed, the 3rd token read at 11
    assert_eq!(g.finish, tramontane::FinishReason::Length);
}
