//! The command line's contract: `tokenize` and `prompt` (no weights read),
//! files read verbatim, errors as non-zero exits with the reason on stderr.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn tramontane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tramontane")).args(args).output().expect("runs")
}

fn json_out(args: &[&str]) -> Value {
    let out = tramontane(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON object")
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id")).collect()
}

#[test]
fn tokenize_matches_transformers_ids() {
    let model = fixtures().join("llama_tiny");
    let reference: Value = serde_json::from_slice(&std::fs::read(model.join("reference.json")).expect("reference")).expect("json");
    let m = model.to_str().expect("utf-8 path");
    let mut checked = 0;
    for p in reference["prompts"].as_array().expect("prompts") {
        if p["text_reencodes_to_input_ids"] != json!(true) {
            continue;
        }
        let text = p["text"].as_str().expect("text");
        let got = json_out(&["tokenize", "--model", m, "--text", text, "--json"]);
        assert_eq!(ids(&got["ids"]), ids(&p["input_ids"]), "{text:?}");
        checked += 1;
    }
    assert!(checked > 0, "no prompt to check");
}

#[test]
fn tokenize_reads_text_files_verbatim() {
    let m = fixtures().join("llama_tiny");
    let m = m.to_str().expect("utf-8 path");
    let f = scratch("verbatim").join("text.txt");
    std::fs::write(&f, "Hello world\n\n").expect("write");
    let from_file = json_out(&["tokenize", "--model", m, "--text-file", f.to_str().expect("path"), "--json"]);
    let from_arg = json_out(&["tokenize", "--model", m, "--text", "Hello world\n\n", "--json"]);
    let stripped = json_out(&["tokenize", "--model", m, "--text", "Hello world", "--json"]);
    assert_eq!(from_file, from_arg, "the file's trailing newlines are part of the text");
    assert_ne!(from_file, stripped);
}

#[test]
fn tokenize_special_texts_are_plain_unless_parse_special() {
    let m = fixtures().join("llama_tiny");
    let m = m.to_str().expect("utf-8 path");
    let plain = ids(&json_out(&["tokenize", "--model", m, "--text", "<|im_start|>hi", "--json"])["ids"]);
    let parsed = ids(&json_out(&["tokenize", "--model", m, "--text", "<|im_start|>hi", "--parse-special", "--json"])["ids"]);
    assert_eq!(parsed[0], 1);
    assert!(!plain.contains(&1) && plain.len() > parsed.len(), "{plain:?} vs {parsed:?}");
}

#[test]
fn prompt_renders_the_template_and_tokenizes_it() {
    let m = fixtures().join("llama_tiny");
    let m = m.to_str().expect("utf-8 path");
    let dir = scratch("prompt");
    let msgs = dir.join("messages.json");
    std::fs::write(&msgs, r#"[{"role": "user", "content": "Hi there"}]"#).expect("write");
    let out = json_out(&["prompt", "--model", m, "--messages", msgs.to_str().expect("path"), "--json"]);
    let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(out["text"], want);
    let tok = json_out(&["tokenize", "--model", m, "--text", want, "--parse-special", "--json"]);
    assert_eq!(out["ids"], tok["ids"]);
    let out = json_out(&["prompt", "--model", m, "--messages", msgs.to_str().expect("path"), "--no-generation-prompt", "--json"]);
    assert!(!out["text"].as_str().expect("text").ends_with("assistant\n"));
}

#[test]
fn prompt_passes_tools_and_kwargs_and_takes_a_template_override() {
    let m = fixtures().join("llama_tiny");
    let m = m.to_str().expect("utf-8 path");
    let dir = scratch("override");
    let msgs = dir.join("messages.json");
    std::fs::write(&msgs, r#"{"messages": [{"role": "user", "content": "Weather?"}], "chat_template_kwargs": {"flag": "yes"}}"#).expect("write");
    let tools = dir.join("tools.json");
    std::fs::write(&tools, r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#)
        .expect("write");
    let tpl = dir.join("t.jinja");
    // The file is read verbatim; Jinja (as transformers configures it) then
    // drops one trailing newline, so of two, one shows.
    std::fs::write(&tpl, "{% for t in tools %}[{{ t.function.name }}]{% endfor %}{{ messages[0].content }}|{{ flag }}\n\n").expect("write");
    let out = json_out(&[
        "prompt", "--model", m, "--messages", msgs.to_str().expect("path"), "--tools", tools.to_str().expect("path"),
        "--chat-template", tpl.to_str().expect("path"), "--json",
    ]);
    assert_eq!(out["text"], "[get_weather]Weather?|yes\n");
}

#[test]
fn a_template_that_raises_exits_non_zero_with_its_message() {
    let m = fixtures().join("llama_tiny");
    let m = m.to_str().expect("utf-8 path");
    let dir = scratch("raise");
    let msgs = dir.join("messages.json");
    std::fs::write(&msgs, r#"[{"role": "assistant", "content": "Hi"}]"#).expect("write");
    let tpl = dir.join("t.jinja");
    std::fs::write(&tpl, "{{ raise_exception('Conversation roles must alternate user/assistant') }}").expect("write");
    let out = tramontane(&["prompt", "--model", m, "--messages", msgs.to_str().expect("path"), "--chat-template", tpl.to_str().expect("path"), "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Conversation roles must alternate user/assistant"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn tokenize_needs_no_weights() {
    // A folder with only the tokenizer: works.
    let dir = scratch("tokenizer_only");
    std::fs::copy(fixtures().join("llama_tiny/tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
    let out = json_out(&["tokenize", "--model", dir.to_str().expect("path"), "--text", "Hello", "--json"]);
    assert!(!ids(&out["ids"]).is_empty());
}

/// llama.cpp's test-tokenizer-0 cases through the command line (texts from
/// files, read verbatim: several end in spaces or newlines).
#[test]
fn tokenize_a_vocab_only_gguf_like_llama_cpp() {
    let dir = fixtures().join("tokenizers");
    let model = dir.join("ggml-vocab-llama-spm.gguf");
    let m = model.to_str().expect("path");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).expect("inp");
    let out = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).expect("out");
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let wants: Vec<&str> = out.lines().collect();
    let scratch = scratch("llama_spm");
    let mut checked = 0;
    for (i, (text, want)) in texts.iter().zip(&wants).enumerate() {
        let f = scratch.join(format!("{i}.txt"));
        std::fs::write(&f, text).expect("write");
        let got = ids(&json_out(&["tokenize", "--model", m, "--text-file", f.to_str().expect("path"), "--json"])["ids"]);
        let want: Vec<u64> = want.split_whitespace().map(|x| x.parse().expect("id")).collect();
        assert_eq!(got, want, "case {i}: {text:?}");
        checked += 1;
    }
    assert!(checked >= 30, "{checked} cases");
    // --add-special: SentencePiece vocabularies add BOS (llama.cpp's default).
    let plain = ids(&json_out(&["tokenize", "--model", m, "--text", "Hello world", "--json"])["ids"]);
    let added = ids(&json_out(&["tokenize", "--model", m, "--text", "Hello world", "--add-special", "--json"])["ids"]);
    assert_eq!(added[0], 1);
    assert_eq!(&added[1..], &plain[..]);
}

#[test]
fn a_folder_with_only_tekken_json_tokenizes_like_mistral_common() {
    let dir = scratch("tekken_only");
    std::fs::copy(fixtures().join("tokenizers/tekken_240718.json"), dir.join("tekken.json")).expect("copy");
    let cases: Value = serde_json::from_slice(&std::fs::read(fixtures().join("tokenizers/tekken_cases.json")).expect("cases")).expect("json");
    let case = cases.as_array().expect("cases").iter().find(|c| c["text"] == "ied 4 ½ months").expect("case");
    let got = json_out(&["tokenize", "--model", dir.to_str().expect("path"), "--text", "ied 4 ½ months", "--json"]);
    assert_eq!(got["ids"], case["ids"]);
}

#[test]
fn a_successful_run_prints_no_error_line_and_zero_chunk_is_refused() {
    let m = fixtures().join("scripted/scripted.gguf");
    let m = m.to_str().expect("path");
    // Without XDG_RUNTIME_DIR Mesa's drivers would print `error: XDG_RUNTIME_DIR ...`.
    let out = Command::new(env!("CARGO_BIN_EXE_tramontane"))
        .args(["run", "--model", m, "--prompt-ids", "72,10", "--max-tokens", "2", "--json"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("error"), "a successful run printed: {err}");
    for flag in ["--chunk", "--context"] {
        let out = tramontane(&["run", "--model", m, "--prompt-ids", "72,10", "--max-tokens", "2", flag, "0"]);
        assert!(!out.status.success(), "{flag} 0 was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_REQUEST"), "{flag} 0: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bench_json_reports_speeds_and_memory_by_kind() {
    let model = fixtures().join("llama_tiny");
    let v = json_out(&["bench", "--model", model.to_str().expect("utf8"), "--prompt-tokens", "8", "--gen-tokens", "3", "--repetitions", "1", "--json"]);
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s", "time_to_first_token_cold_s", "load_seconds"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // From the load's start to the first request's first token.
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    assert!((f("load_to_first_token_s") - f("load_seconds") - f("time_to_first_token_cold_s")).abs() < 1e-9, "{v}");
    let m = &v["gpu_memory"];
    let part = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("gpu_memory.{k}: {v}"));
    assert_eq!(part("weights"), v["weight_bytes"].as_u64().expect("weight_bytes"));
    assert!(part("kv_cache") > 0 && part("activations") > 0);
    let sum = part("weights") + part("kv_cache") + part("activations") + part("scratch");
    assert!(sum <= v["gpu_bytes"].as_u64().expect("gpu_bytes"), "{v}");
    if cfg!(target_os = "linux") {
        assert!(v["peak_host_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    }
    // The device profile, and the adapter's kernel shapes agree with it.
    let p = &v["device_profile"];
    let shapes = p["shapes"].as_str().unwrap_or_else(|| panic!("device_profile.shapes: {v}"));
    assert_eq!(v["adapter"]["kernels"].as_str(), Some(shapes), "{v}");
    assert!(p["lanes"].as_u64().is_some_and(|l| l >= 1) && p["decode_matvec"].is_string() && p["weights"].is_string(), "{v}");
    assert!(v["self_test"]["kernels"].as_u64().is_some_and(|k| k >= 5), "{v}");
    assert_eq!(v["self_test"]["fallbacks"], serde_json::json!([]), "{v}");
    // The load by phase: each measured, together no more than the whole
    // (the self-test runs beside the others, within the load).
    let ph = &v["load_phases"];
    let phase = |k: &str| ph[k].as_f64().unwrap_or_else(|| panic!("load_phases.{k}: {v}"));
    let parts = ["prepare_s", "read_s", "upload_s", "pipelines_s"].map(phase);
    let load = v["load_seconds"].as_f64().expect("load_seconds");
    assert!(parts.iter().all(|&x| x >= 0.0) && phase("pipelines_s") > 0.0 && (0.0..=load).contains(&phase("self_test_s")), "{v}");
    assert!(parts.iter().sum::<f64>() <= load + 0.01, "{v}");
}

#[test]
fn kernels_gpu_gives_the_gpu_shaped_profile() {
    let model = fixtures().join("llama_tiny");
    let v = json_out(&["bench", "--model", model.to_str().expect("utf8"), "--kernels", "gpu", "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--json"]);
    let p = &v["device_profile"];
    assert_eq!((p["shapes"].as_str(), p["decode_matvec"].as_str(), p["prefill_matmul"].as_str(), p["weights"].as_str()), (Some("gpu"), Some("shared_outputs"), Some("tiles"), Some("buffer")), "{v}");
}

/// Images on the command line (issue 27), on the tiny Pixtral checkpoint:
/// `run --image` in the place of the prompt's [IMG] (the reference's tokens),
/// with `--chat`, `chat` with `/image FILE`, and `bench --image`.
#[test]
fn images_on_the_command_line() {
    let dir = fixtures().join("vision");
    let model = dir.join("pixtral");
    let model = model.to_str().expect("utf8");
    let image = dir.join("images/small.png");
    let image = image.to_str().expect("utf8");
    let reference: Value = serde_json::from_slice(&std::fs::read(dir.join("pixtral/reference.json")).expect("reference")).expect("json");
    let case = reference["cases"].as_array().expect("cases").iter().find(|c| c["name"] == "one_image").expect("one_image");
    // The reference's prompt with the image's run collapsed to one [IMG].
    let img = reference["image_token_id"].as_u64().expect("id");
    let (brk, end) = (reference["image_break_token_id"].as_u64().expect("id"), reference["image_end_token_id"].as_u64().expect("id"));
    let mut collapsed: Vec<String> = Vec::new();
    let mut inside = false;
    for t in ids(&case["input_ids"]) {
        if t == end {
            inside = false;
        } else if t == img && !inside {
            collapsed.push(t.to_string());
            inside = true;
        } else if !inside && t != brk {
            collapsed.push(t.to_string());
        }
    }
    let want = ids(&case["greedy"]["new_ids"]);
    let n = want.len().to_string();
    let v = json_out(&["run", "--model", model, "--prompt-ids", &collapsed.join(","), "--image", image, "--max-tokens", &n, "--ignore-eos", "--json"]);
    assert_eq!(ids(&v["prompt_ids"]), ids(&case["input_ids"]), "the processor's layout");
    assert_eq!(ids(&v["generated_ids"]), want, "transformers' tokens");
    // The same through the GGUF and mmproj llama.cpp's converter wrote.
    let gguf = dir.join("pixtral/gguf");
    let (text, mmproj) = (gguf.join("model.gguf"), gguf.join("mmproj-f32.gguf"));
    let (text, mmproj) = (text.to_str().expect("utf8"), mmproj.to_str().expect("utf8"));
    let v = json_out(&["run", "--model", text, "--mmproj", mmproj, "--prompt-ids", &collapsed.join(","), "--image", image, "--max-tokens", &n, "--ignore-eos", "--json"]);
    assert_eq!(ids(&v["generated_ids"]), want, "transformers' tokens from the GGUF + mmproj");
    let bad = tramontane(&["run", "--model", model, "--mmproj", mmproj, "--prompt", "x", "--max-tokens", "2"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID_REQUEST"), "an mmproj with an HF folder: {}", String::from_utf8_lossy(&bad.stderr));
    let v = json_out(&["run", "--model", model, "--chat", "--prompt", "Describe.", "--image", image, "--max-tokens", "2", "--json"]);
    assert_eq!(ids(&v["prompt_ids"]).iter().filter(|&&t| t == img).count(), 60, "6 x 10 patches");
    let bad = tramontane(&["run", "--model", model, "--chat", "--prompt", "x", "--image", model, "--max-tokens", "2"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID_REQUEST"), "{}", String::from_utf8_lossy(&bad.stderr));
    // `chat`: `/image FILE` attaches to the next message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tramontane"))
        .args(["chat", "--model", model, "--max-tokens", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "/image {image}\nWhat is this?\n/image /nonexistent.png\n").expect("writes");
    }
    let out = child.wait_with_output().expect("ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("37x23, attached"), "{err}");
    assert!(err.contains("60 image tokens") || err.contains("new prompt tokens"), "{err}");
    assert!(err.contains("/nonexistent.png"), "a bad file is an error line, not the end: {err}");
    // bench --image: the image side timed, its memory reported.
    let v = json_out(&["bench", "--model", model, "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--image", image, "--json"]);
    let im = &v["image"];
    assert_eq!((im["patches"].as_u64(), im["image_tokens"].as_u64()), (Some(60), Some(60)), "{v}");
    assert!(im["encode_seconds"].as_f64().is_some_and(|s| s > 0.0) && im["encoder_weight_bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    let v = json_out(&["bench", "--model", model, "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--image", "--json"]);
    assert_eq!((v["image"]["width"].as_u64(), v["image"]["height"].as_u64()), (Some(1024), Some(768)), "the generated picture");
    assert_eq!(v["image"]["resized"], json!([64, 48]));
}
