//! The quantized MoE path through GGUF: a small Mixtral-style model (llama
//! architecture with 3-D expert tensors, q/k permuted as llama.cpp writes them)
//! in Q8_0 and Q4_0, against numpy float64 math on the dequantized weights
//! (tests/fixtures/moe_gguf, made by scripts/fixtures/make_moe_gguf.py):
//! argmax at every position, top-10 logits, greedy tokens, router choices.
//! Also split loading, and malformed GGUF files.

use std::path::PathBuf;

use crate::common::*;
use tramontane::source::DirSource;
use tramontane::{Error, KvCache, GenerateRequest, LoadOptions, Model, SamplingParams};

fn dir() -> PathBuf {
    fixtures().join("moe_gguf")
}

fn load_from(dir: &std::path::Path, name: &str) -> Result<Model, Error> {
    load_kv(dir, name, KvCache::F32)
}

fn load_kv(dir: &std::path::Path, name: &str, kv_cache: KvCache) -> Result<Model, Error> {
    let opts = LoadOptions { chunk: 16, kv_cache, ..Default::default() };
    pollster::block_on(Model::load_gguf(gpu(), &DirSource::new(dir), name, &opts, &mut |_| {}))
}

/// f32 KV cache: |logit - float64 reference| measured 3.3e-6 (moe-q8_0 and
/// its split parts), 2.9e-6 (moe-q4_0, moe-mixed) on lavapipe (2026-12-01).
const F32_KV_TOL: f32 = 3e-5;
/// f16 KV cache (keys and values rounded to f16): measured 3.0e-3 (moe-q8_0).
const F16_KV_TOL: f32 = 3e-2;

fn check(file: &str, reference_file: &str) {
    check_kv(file, reference_file, KvCache::F32, F32_KV_TOL);
}

/// `tol` bounds |logit - reference| on the top-10; argmax, router choices and
/// greedy tokens must be identical.
fn check_kv(file: &str, reference_file: &str, kv_cache: KvCache, tol: f32) {
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(dir().join("reference.json")).expect("ref")).expect("json");
    let mut model = load_kv(&dir(), file, kv_cache).expect("load");
    let vocab = model.config().vocab;
    assert!(model.config().moe.is_some());
    let mut worst = 0f32;
    for p in r["models"][reference_file]["prompts"].as_array().expect("prompts") {
        let input = ids(&p["input_ids"]);
        let logits = pollster::block_on(model.logits_all(&input)).expect("forward");
        let want_argmax = ids(&p["argmax_per_position"]);
        assert_eq!(want_argmax.len(), input.len(), "{file}: an argmax per position");
        for (pos, want) in want_argmax.iter().enumerate() {
            assert_eq!(argmax(&logits[pos * vocab..(pos + 1) * vocab]), *want, "{file}: argmax at {pos}");
        }
        let last = &logits[(input.len() - 1) * vocab..];
        for pair in p["top10"].as_array().expect("top10") {
            let (id, want) = (pair[0].as_u64().expect("id") as usize, pair[1].as_f64().expect("l") as f32);
            worst = worst.max((last[id] - want).abs());
            assert!((last[id] - want).abs() < tol, "{file} ({kv_cache:?} KV): logit {id}: {} vs {want}", last[id]);
        }
        if input.len() <= 16 {
            // Router choices of the last pass (one chunk holds the whole prompt).
            let got = pollster::block_on(model.runtime.router_choices(input.len())).expect("router");
            let routes = p["router"].as_array().expect("router");
            assert_eq!(got.len(), routes.len(), "{file}: MoE layers");
            for (l, route) in routes.iter().enumerate() {
                let experts = route["experts"].as_array().expect("experts");
                assert_eq!(experts.len(), input.len(), "{file}: layer {l}, a route per position");
                assert_eq!(got[l].0.len(), 2 * input.len(), "{file}: layer {l}, two experts per position");
                for (pos, experts) in experts.iter().enumerate() {
                    assert_eq!(&got[l].0[pos * 2..pos * 2 + 2], &ids(experts)[..], "{file}: layer {l} position {pos}");
                }
            }
        }
        model.reset();
        let req = GenerateRequest { sampling: SamplingParams::greedy(), max_tokens: 8, ignore_eos: true, ..Default::default() };
        let g = pollster::block_on(model.generate(&input, &req, &mut |_, _, _| true)).expect("generate");
        assert_eq!(g.generated, ids(&p["greedy"]), "{file}: greedy");
    }
    eprintln!("{file}, {kv_cache:?} KV cache: max |logit - float64 reference| = {worst:.2e}");
}

#[test]
fn f16_kv_cache_stays_close_to_float_math() {
    // What quantized models get by default on devices with shader-f16: keys and
    // values rounded to f16 (as llama.cpp does) cost ~3e-3 on the logits here.
    if !has_f16(gpu().adapter.shader_f16, "the f16 KV cache") {
        return;
    }
    check_kv("moe-q8_0.gguf", "moe-q8_0.gguf", KvCache::F16, F16_KV_TOL);
}

#[test]
fn moe_q8_0_matches_float_math() {
    check("moe-q8_0.gguf", "moe-q8_0.gguf");
}

/// Quantized experts through the kernels' GPU shapes (the grouped matmul
/// over rows sorted by expert).
#[test]
fn moe_ggufs_in_gpu_shapes_match_float_math() {
    in_gpu_shapes(|| {
        check("moe-q8_0.gguf", "moe-q8_0.gguf");
        check("moe-q4_0.gguf", "moe-q4_0.gguf");
    });
}

#[test]
fn moe_q4_0_matches_float_math() {
    check("moe-q4_0.gguf", "moe-q4_0.gguf");
}

#[test]
fn experts_gate_and_up_of_different_types_keep_their_types() {
    // Experts' gate in Q8_0, up in Q4_0: no f32 copy, two dispatches.
    let model = load_from(&dir(), "moe-mixed.gguf").expect("load");
    match &model.runtime.weights.layers[0].ffn {
        tramontane::upload::Ffn::Moe { gate_up, up: Some(up), .. } => {
            assert_eq!(gate_up.dtype().name(), "q8_0");
            assert_eq!(up.dtype().name(), "q4_0");
        }
        _ => panic!("expected a MoE layer with gate and up apart"),
    }
    drop(model);
    check("moe-mixed.gguf", "moe-mixed.gguf");
}

#[test]
fn split_gguf_loads_from_its_first_part() {
    check("moe-q8_0-split-00001-of-00003.gguf", "moe-q8_0.gguf");
}

struct Corrupt(PathBuf);

impl Corrupt {
    fn new(tag: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Self {
        let d = std::env::temp_dir().join(format!("tramontane-gguf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let mut b = std::fs::read(dir().join("moe-q8_0.gguf")).expect("read");
        edit(&mut b);
        std::fs::write(d.join("m.gguf"), b).expect("write");
        Corrupt(d)
    }
    fn load(&self) -> Error {
        load_from(&self.0, "m.gguf").err().expect("an error")
    }
}

impl Drop for Corrupt {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find(b: &[u8], s: &str) -> usize {
    b.windows(s.len()).position(|w| w == s.as_bytes()).expect("marker in file")
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn malformed_gguf_files_give_clear_errors() {
    let e = Corrupt::new("magic", |b| b[0] = b'X').load();
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
    let e = Corrupt::new("version", |b| b[4] = 9).load();
    assert!(matches!(e, Error::Unsupported(_)) && e.to_string().contains("version 9"), "{e}");
    let e = Corrupt::new("count", |b| put_u64(b, 8, u64::MAX / 3)).load();
    assert!(e.to_string().contains("more than the file holds"), "{e}");
    // The first key's length.
    let e = Corrupt::new("strlen", |b| put_u64(b, 24, 1 << 60)).load();
    assert!(e.to_string().contains("exceeds the rest of the file"), "{e}");
    // The token list's element count (after key, value type 9, element type).
    let e = Corrupt::new("arrlen", |b| {
        let at = find(b, "tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 8;
        put_u64(b, at, u64::MAX / 2);
    })
    .load();
    assert!(e.to_string().contains("array of") && e.to_string().contains("exceeds"), "{e}");
    // output.weight's type: after its name come n_dims (4), 2 dims (16), type.
    let e = Corrupt::new("qtype", |b| {
        let at = b.len() / 2; // tensor infos live in the header, well before the middle
        let at = find(&b[..at], "output.weight") + "output.weight".len() + 4 + 16;
        b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    })
    .load();
    assert!(matches!(e, Error::Tensor { .. }) && e.to_string().contains("GGML type 99"), "{e}");
    let e = Corrupt::new("trunc", |b| b.truncate(b.len() - 1000)).load();
    assert!(matches!(e, Error::Tensor { .. }) && e.to_string().contains("runs past the end"), "{e}");
    let e = Corrupt::new("short", |b| b.truncate(10)).load();
    assert!(e.to_string().contains("runs past the end") || e.to_string().contains("too short"), "{e}");
}

/// A type ggml has but this engine cannot read is UNSUPPORTED, named as ggml
/// names it, from the header alone (before any weight is read).
#[test]
fn an_unsupported_ggml_type_is_named() {
    let set_type = |ty: u32| {
        move |b: &mut Vec<u8>| {
            let at = b.len() / 2;
            let at = find(&b[..at], "output.weight") + "output.weight".len() + 4 + 16;
            b[at..at + 4].copy_from_slice(&ty.to_le_bytes());
        }
    };
    for (ty, name) in [(16u32, "IQ2_XXS"), (15, "Q8_K"), (39, "MXFP4")] {
        let e = Corrupt::new(&format!("type{ty}"), set_type(ty)).load();
        assert_eq!(e.code(), "UNSUPPORTED", "{e}");
        let m = e.to_string();
        assert!(m.contains(name) && m.contains("output.weight") && m.contains("IQ4_XS"), "{m}");
    }
}

#[test]
fn a_missing_split_part_is_named() {
    let d = std::env::temp_dir().join(format!("tramontane-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    for part in ["moe-q8_0-split-00001-of-00003.gguf", "moe-q8_0-split-00003-of-00003.gguf"] {
        std::fs::copy(dir().join(part), d.join(part)).expect("copy");
    }
    let e = load_from(&d, "moe-q8_0-split-00001-of-00003.gguf").err().expect("error");
    let _ = std::fs::remove_dir_all(&d);
    assert!(matches!(e, Error::MissingFile { .. }) && e.to_string().contains("00002-of-00003"), "{e}");
}
