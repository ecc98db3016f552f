//! Tokenizers against their reference implementations, on committed reference
//! output (tests/fixtures/tokenizers/, see its README):
//! - llama.cpp's own tokenizer suite (`ggml-vocab-*.gguf` with `.inp`/`.out`:
//!   ids from Hugging Face `encode(add_special_tokens=False)`, which llama.cpp's
//!   test-tokenizer-0 reproduces with add_special = parse_special = false);
//! - tekken (GGUF `pre = "tekken"` and Mistral's `tekken.json`) against
//!   mistral-common's `encode(text, bos=False, eos=False)`;
//! - SentencePiece `tokenizer.model` files against the sentencepiece library
//!   (Mistral's v7 model) and against the llama-spm cases.
//!
//! Each vocabulary test reports every mismatching case, then fails.

use std::path::PathBuf;

use tramontane::parse::gguf::{self, GgufHeader, MetaValue, Parse};
use tramontane::text::{gguf_tokenizer, spm_model, tekken};
use tramontane::Tokenizer;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn header(name: &str) -> GgufHeader {
    let bytes = read(name);
    match gguf::parse(&bytes, name, bytes.len() as u64).expect("GGUF header") {
        Parse::Done(h) => h,
        Parse::NeedMore(n) => panic!("{name}: header wants {n} bytes, the file has {}", bytes.len()),
    }
}

/// llama.cpp's test-tokenizer-0 format: inputs separated by
/// "\n__ggml_vocab_test__\n" (a trailing separator ends the list), one line of
/// space-separated ids per input.
fn llama_cpp_cases(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let inp = String::from_utf8(read(&format!("{vocab}.inp"))).expect("utf-8 inputs");
    let out = String::from_utf8(read(&format!("{vocab}.out"))).expect("utf-8 outputs");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs: Vec<String> = inp.split(sep).map(String::from).collect();
    if inp.ends_with(sep) {
        inputs.pop();
    }
    let outputs: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("token id")).collect()).collect();
    assert_eq!(inputs.len(), outputs.len(), "{vocab}: inputs and outputs differ in number");
    inputs.into_iter().zip(outputs).collect()
}

/// Our own cases (scripts/fixtures/make_tokenizer_cases.py): a JSON list of
/// `{"text", "ids"}` produced by the reference implementation.
fn json_cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let v: serde_json::Value = serde_json::from_slice(&read(name)).expect("cases JSON");
    v.as_array()
        .expect("a list of cases")
        .iter()
        .map(|c| {
            let text = c["text"].as_str().expect("text").to_string();
            let ids = c["ids"].as_array().expect("ids").iter().map(|i| i.as_u64().expect("id") as u32).collect();
            (text, ids)
        })
        .collect()
}

/// Encodes every case as plain text (no BOS/EOS, special-token texts not
/// recognized) and fails listing all mismatches.
fn check(what: &str, tok: &Tokenizer, cases: &[(String, Vec<u32>)]) {
    assert!(!cases.is_empty(), "{what}: no cases");
    let mut bad = Vec::new();
    for (text, want) in cases {
        match tok.encode_with(text, false, false) {
            Ok(got) if &got == want => {}
            Ok(got) => bad.push(format!("  input {text:?}\n    want {want:?}\n    got  {got:?}")),
            Err(e) => bad.push(format!("  input {text:?}\n    want {want:?}\n    error {e}")),
        }
    }
    assert!(bad.is_empty(), "{what}: {} of {} cases differ\n{}", bad.len(), cases.len(), bad.join("\n"));
    eprintln!("{what}: {} cases match", cases.len());
}

fn gguf_suite(vocab: &str) {
    let file = format!("ggml-vocab-{vocab}.gguf");
    let tok = gguf_tokenizer::from_gguf(&header(&file), &file).expect("tokenizer");
    check(&file, &tok, &llama_cpp_cases(&file));
}

#[test]
fn llama_spm() {
    gguf_suite("llama-spm");
}

#[test]
fn phi_3() {
    gguf_suite("phi-3");
}

#[test]
fn llama_bpe() {
    gguf_suite("llama-bpe");
}

#[test]
fn qwen2() {
    gguf_suite("qwen2");
}

#[test]
fn gpt_2() {
    gguf_suite("gpt-2");
}

#[test]
fn starcoder() {
    gguf_suite("starcoder");
}

#[test]
fn refact() {
    gguf_suite("refact");
}

#[test]
fn deepseek_coder() {
    gguf_suite("deepseek-coder");
}

#[test]
fn tekken_gguf() {
    let file = "ggml-vocab-tekken.gguf";
    let tok = gguf_tokenizer::from_gguf(&header(file), file).expect("tokenizer");
    check(file, &tok, &json_cases("tekken_cases.json"));
    assert!(tok.add_bos && !tok.add_eos, "the GGUF sets add_bos_token = true, add_eos_token = false");
    assert_eq!(tok.bos, Some(1));
}

#[test]
fn tekken_json() {
    let file = "tekken_240718.json";
    let tok = tekken::from_tekken_json(&read(file), file).expect("tokenizer");
    check(file, &tok, &json_cases("tekken_cases.json"));
    assert_eq!((tok.bos, tok.bos_text.as_deref(), tok.eos_text.as_deref()), (Some(1), Some("<s>"), Some("</s>")));
    assert!(tok.add_bos && !tok.add_eos);
    // Special tokens are recognized only when asked to.
    assert_eq!(tok.encode_with("[INST]", false, true).expect("encode"), [3]);
    assert_eq!(tok.token_id("<SPECIAL_999>"), Some(999));
    assert_eq!(tok.vocab_size(), 131_072);
}

/// Newer tekken files list their special tokens; a list that gives the same
/// table must give the same tokenizer, and listed names must land on their ranks.
#[test]
fn tekken_json_with_special_tokens() {
    let file = "tekken_240718.json";
    let mut v: serde_json::Value = serde_json::from_slice(&read(file)).expect("json");
    let names = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[THINK]"];
    let list: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({"rank": i, "token_str": n, "is_control": true}))
        .collect();
    v["special_tokens"] = serde_json::Value::Array(list);
    let tok = tekken::from_tekken_json(&serde_json::to_vec(&v).expect("json"), file).expect("tokenizer");
    check("tekken with special_tokens", &tok, &json_cases("tekken_cases.json"));
    assert_eq!(tok.token_id("[THINK]"), Some(5));
    assert_eq!(tok.token_id("<SPECIAL_6>"), Some(6));
}

#[test]
fn sentencepiece_model_mistral() {
    let file = "mistral-v7.tokenizer.model";
    let tok = spm_model::from_sentencepiece_model(&read(file), file).expect("tokenizer");
    check(file, &tok, &json_cases("mistral_spm_cases.json"));
    assert_eq!((tok.bos, tok.bos_text.as_deref(), tok.eos_text.as_deref()), (Some(1), Some("<s>"), Some("</s>")));
    assert!(tok.add_bos && !tok.add_eos);
}

#[test]
fn sentencepiece_model_llama_spm() {
    let file = "llama-spm.tokenizer.model";
    let tok = spm_model::from_sentencepiece_model(&read(file), file).expect("tokenizer");
    check(file, &tok, &llama_cpp_cases("ggml-vocab-llama-spm.gguf"));
}

/// ModelProto field 3 (normalizer_spec) holding remove_extra_whitespaces = 1,
/// appended: protobuf merges a repeated message field into the first one.
const EXTRA_WS_SUFFIX: [u8; 4] = [0x1A, 0x02, 0x20, 0x01];

#[test]
fn sentencepiece_model_remove_extra_whitespaces() {
    let mut bytes = read("llama-spm.tokenizer.model");
    bytes.extend_from_slice(&EXTRA_WS_SUFFIX);
    let tok = spm_model::from_sentencepiece_model(&bytes, "extra-ws.model").expect("tokenizer");
    check("llama-spm.tokenizer.model + remove_extra_whitespaces", &tok, &json_cases("llama_spm_extra_ws_cases.json"));
}

#[test]
fn missing_pre_is_guessed_with_a_warning() {
    for (vocab, guess) in [("llama-bpe", "llama3"), ("gpt-2", "gpt-2")] {
        let file = format!("ggml-vocab-{vocab}.gguf");
        let mut h = header(&file);
        assert!(h.metadata.remove("tokenizer.ggml.pre").is_some(), "{file} names its pre-type");
        let tok = gguf_tokenizer::from_gguf(&h, &file).expect("tokenizer");
        assert_eq!(tok.warnings.len(), 1, "{:?}", tok.warnings);
        assert!(tok.warnings[0].contains(&format!("`{guess}`")), "{}", tok.warnings[0]);
        check(&format!("{file} without pre"), &tok, &llama_cpp_cases(&file));
    }
    let file = "ggml-vocab-gpt-2.gguf";
    assert!(gguf_tokenizer::from_gguf(&header(file), file).expect("tokenizer").warnings.is_empty());
}

#[test]
fn unknown_pre_is_unsupported() {
    let file = "ggml-vocab-gpt-2.gguf";
    let mut h = header(file);
    h.metadata.insert("tokenizer.ggml.pre".into(), MetaValue::Str("no-such-pre".into()));
    let e = gguf_tokenizer::from_gguf(&h, file).err().expect("an error");
    assert_eq!(e.code(), "UNSUPPORTED");
    assert!(e.to_string().contains("no-such-pre"), "{e}");
}

#[test]
fn add_bos_defaults_follow_llama_cpp() {
    let flags = |f: &str| {
        let t = gguf_tokenizer::from_gguf(&header(f), f).expect("tokenizer");
        (t.add_bos, t.add_eos)
    };
    let mut h = header("ggml-vocab-gpt-2.gguf");
    for k in ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"] {
        h.metadata.remove(k);
    }
    let gpt2 = gguf_tokenizer::from_gguf(&h, "gpt-2").expect("tokenizer");
    assert_eq!((gpt2.add_bos, gpt2.add_eos), (false, false), "BPE: no BOS unless the file says so");
    let mut h = header("ggml-vocab-llama-spm.gguf");
    for k in ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"] {
        h.metadata.remove(k);
    }
    let spm = gguf_tokenizer::from_gguf(&h, "llama-spm").expect("tokenizer");
    assert_eq!((spm.add_bos, spm.add_eos), (true, false), "SentencePiece: BOS by default");
    h.metadata.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false));
    h.metadata.insert("tokenizer.ggml.add_eos_token".into(), MetaValue::Bool(true));
    let spm = gguf_tokenizer::from_gguf(&h, "llama-spm").expect("tokenizer");
    assert_eq!((spm.add_bos, spm.add_eos), (false, true), "the file's flags win");
    assert!(flags("ggml-vocab-llama-spm.gguf").0);
}

fn tekken_error(v: &serde_json::Value) -> tramontane::Error {
    let bytes = serde_json::to_vec(v).expect("json");
    tekken::from_tekken_json(&bytes, "bad-tekken.json").err().expect("an error")
}

fn small_tekken() -> serde_json::Value {
    let b64 = |b: u8| {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        format!("{}{}==", A[(b >> 2) as usize] as char, A[((b & 3) << 4) as usize] as char)
    };
    let vocab: Vec<_> = (0..=255u8).map(|b| serde_json::json!({"rank": b, "token_bytes": b64(b), "token_str": null})).collect();
    serde_json::json!({"config": {"pattern": r"\s+|\S+", "num_vocab_tokens": 256, "default_vocab_size": 266,
                                  "default_num_special_tokens": 10, "version": "v3"},
                       "vocab": vocab})
}

#[test]
fn malformed_tekken_json_is_a_format_error() {
    // The well-formed base encodes (every byte is a token).
    let ok = small_tekken();
    let tok = tekken::from_tekken_json(&serde_json::to_vec(&ok).expect("json"), "t.json").expect("small tekken");
    assert_eq!(tok.encode_with("ab", false, false).expect("encode"), [10 + 97, 10 + 98]);

    let e = tekken::from_tekken_json(b"{\"config\": {", "bad-tekken.json").err().expect("an error");
    assert_eq!(e.code(), "MODEL_FORMAT", "{e}");
    let mut cases = Vec::new();
    let mut v = ok.clone();
    v["vocab"][97]["token_bytes"] = "#$%".into();
    cases.push(("bad base64", v));
    let mut v = ok.clone();
    v["vocab"][5]["rank"] = 6.into();
    cases.push(("rank out of order", v));
    let mut v = ok.clone();
    v["vocab"][5]["token_bytes"] = "Bg==".into();
    cases.push(("byte token is not its byte", v));
    let mut v = ok.clone();
    v["config"]["default_vocab_size"] = 1000.into();
    cases.push(("vocabulary larger than the list", v));
    let mut v = ok.clone();
    v["config"]["default_vocab_size"] = 5.into();
    cases.push(("fewer tokens than special tokens", v));
    let mut v = ok.clone();
    v["special_tokens"] = serde_json::json!([{"rank": 99, "token_str": "<s>", "is_control": true}]);
    cases.push(("special rank out of range", v));
    let mut v = ok.clone();
    v["config"]["pattern"] = "(unclosed".into();
    cases.push(("bad pattern", v));
    let mut v = ok.clone();
    v["vocab"] = serde_json::json!("not a list");
    cases.push(("vocab not a list", v));
    for (what, v) in cases {
        let e = tekken_error(&v);
        assert_eq!(e.code(), "MODEL_FORMAT", "{what}: {e}");
    }
}

/// Protobuf helpers for hand-made ModelProto bytes.
fn pb_len(field: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![field << 3 | 2, body.len() as u8];
    v.extend_from_slice(body);
    v
}

fn pb_piece(text: &str, ty: u8) -> Vec<u8> {
    let mut p = pb_len(1, text.as_bytes());
    p.extend_from_slice(&[2 << 3 | 5, 0, 0, 0, 0, 3 << 3, ty]);
    pb_len(1, &p)
}

#[test]
fn malformed_tokenizer_model_is_a_typed_error() {
    let code = |bytes: &[u8]| spm_model::from_sentencepiece_model(bytes, "bad.model").err().map(|e| e.code());
    // A tiny well-formed BPE model loads.
    let mut ok = [pb_piece("<unk>", 2), pb_piece("a", 1), pb_piece("\u{2581}", 1)].concat();
    ok.extend(pb_len(2, &[3 << 3, 2]));
    assert_eq!(code(&ok), None);
    // Unigram (the proto's default model type) is not supported, by name.
    let unigram = [pb_piece("<unk>", 2), pb_piece("a", 1), pb_len(2, &[3 << 3, 1])].concat();
    let e = spm_model::from_sentencepiece_model(&unigram, "u.model").err().expect("an error");
    assert_eq!(e.code(), "UNSUPPORTED");
    assert!(e.to_string().contains("Unigram"), "{e}");
    assert_eq!(code(&[pb_piece("a", 1)].concat()), Some("UNSUPPORTED"), "no trainer_spec: Unigram");
    assert_eq!(code(b""), Some("MODEL_FORMAT"), "no pieces");
    assert_eq!(code(&[0x0A, 0x7F, 0x01]), Some("MODEL_FORMAT"), "length past the end");
    assert_eq!(code(&[0x0A]), Some("MODEL_FORMAT"), "truncated varint");
    assert_eq!(code(&[0x0B, 0x00]), Some("MODEL_FORMAT"), "unknown wire type");
    assert_eq!(code(&[0x08, 0x01]), Some("MODEL_FORMAT"), "pieces as a varint");
    assert_eq!(code(&pb_len(1, &pb_len(1, &[0xFF, 0xFE]))), Some("MODEL_FORMAT"), "piece not UTF-8");
    assert_eq!(code(b"{\"not\": \"protobuf\"}"), Some("MODEL_FORMAT"));
    // Any prefix of a real model is an error or a (smaller) model, never a panic.
    let real = read("mistral-v7.tokenizer.model");
    for cut in [1, 2, 3, 7, 100, 1001, 5000, real.len() - 3, real.len() - 1] {
        let _ = spm_model::from_sentencepiece_model(&real[..cut], "cut.model");
    }
}
