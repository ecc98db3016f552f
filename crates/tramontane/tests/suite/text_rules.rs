//! The text side of a model without weights (no GPU): BOS/EOS rules for text
//! and chat prompts, sampling defaults, templates that fail, tokenizer files.
//! Each case is a copy of a fixture folder with one file changed.

use crate::common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tramontane::source::DirSource;
use tramontane::{ChatRequest, Error, ModelText};

/// A scratch copy of `fixtures/llama_tiny`'s text files, with `edits` applied
/// (file name → new content; `None` removes the file).
fn folder(name: &str, edits: &[(&str, Option<String>)]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("text_rules").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let src = common::fixtures().join("llama_tiny");
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy fixture file");
    }
    for (f, content) in edits {
        match content {
            Some(c) => std::fs::write(dir.join(f), c).expect("write"),
            None => std::fs::remove_file(dir.join(f)).expect("remove"),
        }
    }
    dir
}

fn load(dir: &Path) -> tramontane::Result<ModelText> {
    pollster::block_on(ModelText::load(&DirSource::new(dir), None))
}

fn edit_json(file: &str, f: impl FnOnce(&mut Value)) -> String {
    let p = common::fixtures().join("llama_tiny").join(file);
    let mut v: Value = serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json");
    f(&mut v);
    serde_json::to_string(&v).expect("json")
}

/// tokenizer.json whose post-processor prepends `<|im_start|>` (id 1), as
/// Llama/Mistral tokenizers prepend `<s>`.
fn bos_post_processor() -> String {
    edit_json("tokenizer.json", |v| {
        v["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}},
        });
    })
}

#[test]
fn text_prompts_follow_the_tokenizers_bos_rule() {
    // The fixtures' post-processor adds nothing (transformers: tokenizer(text)
    // gives the plain ids): no BOS.
    let plain = load(&folder("plain", &[])).expect("loads");
    let ids = plain.tokenizer.encode_with("Hello world", false, false).expect("encode");
    assert!(!plain.tokenizer.add_bos);
    assert_eq!(plain.tokenizer.encode_prompt("Hello world").expect("encode"), ids);

    // A post-processor that prepends a BOS: text prompts get exactly one.
    let t = load(&folder("bos", &[("tokenizer.json", Some(bos_post_processor()))])).expect("loads");
    assert!(t.tokenizer.add_bos && !t.tokenizer.add_eos);
    assert_eq!(t.tokenizer.bos, Some(1));
    let with = t.tokenizer.encode_prompt("Hello world").expect("encode");
    assert_eq!(with[0], 1);
    assert_eq!(&with[1..], &ids[..]);
    // Nothing added unless asked.
    assert_eq!(t.tokenizer.encode_with("Hello world", false, false).expect("encode"), ids);

    // tokenizer_config.json's explicit `add_bos_token: false` wins, as in transformers.
    let cfg = edit_json("tokenizer_config.json", |v| v["add_bos_token"] = json!(false));
    let off = load(&folder("bos_off", &[("tokenizer.json", Some(bos_post_processor())), ("tokenizer_config.json", Some(cfg))])).expect("loads");
    assert!(!off.tokenizer.add_bos);
    assert_eq!(off.tokenizer.encode_prompt("Hello world").expect("encode"), ids);
}

#[test]
fn chat_prompts_get_exactly_what_the_template_writes() {
    let template = "{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}";
    let t = load(&folder("chat_bos", &[("tokenizer.json", Some(bos_post_processor())), ("chat_template.jinja", Some(template.into()))]))
        .expect("loads");
    let req = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "Hi")]);
    let ids = t.chat_ids(&req).expect("renders");
    assert_eq!(ids[0], 1, "the template's BOS");
    assert_ne!(ids[1], 1, "no second BOS from the tokenizer's rule: {ids:?}");
    assert_eq!(t.chat_text(&req).expect("renders"), "<|im_start|>[INST] Hi [/INST]");
}

#[test]
fn special_token_texts_are_plain_unless_parsed() {
    let t = load(&folder("special", &[])).expect("loads");
    let parsed = t.tokenizer.encode_with("<|im_end|>", false, true).expect("encode");
    assert_eq!(parsed, [2]);
    let plain = t.tokenizer.encode_with("<|im_end|>", false, false).expect("encode");
    assert!(plain.len() > 1 && !plain.contains(&2), "{plain:?}");
    // Plain pieces decode back to the same text.
    assert_eq!(t.tokenizer.decode(&plain, false).expect("decode"), "<|im_end|>");
}

#[test]
fn sampling_defaults_come_from_generation_config() {
    let t = load(&folder("gen_none", &[])).expect("loads");
    assert_eq!(t.defaults, tramontane::GenerationDefaults::default(), "the fixture recommends nothing");
    let g = edit_json("generation_config.json", |v| {
        v["do_sample"] = json!(true);
        v["temperature"] = json!(0.6);
        v["top_p"] = json!(0.9);
        v["top_k"] = json!(20);
    });
    let t = load(&folder("gen_sample", &[("generation_config.json", Some(g))])).expect("loads");
    assert_eq!((t.defaults.temperature, t.defaults.top_p, t.defaults.top_k), (Some(0.6), Some(0.9), Some(20)));
    // A temperature without do_sample is greedy in transformers.
    let g = edit_json("generation_config.json", |v| v["temperature"] = json!(0.6));
    let t = load(&folder("gen_greedy", &[("generation_config.json", Some(g))])).expect("loads");
    assert_eq!(t.defaults.temperature, Some(0.0));
}

#[test]
fn a_template_that_does_not_compile_fails_chat_not_the_load() {
    let t = load(&folder("broken_template", &[("chat_template.jinja", Some("{% for m in messages %}{{ m.content }".into()))]))
        .expect("the model's text side still loads");
    assert!(t.template.is_none());
    let req = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "Hi")]);
    match t.chat_ids(&req) {
        Err(Error::Template(msg)) => assert!(msg.contains("cannot be used"), "{msg}"),
        other => panic!("expected a template error, got {other:?}"),
    }
    // Completions still work.
    assert!(!t.tokenizer.encode_prompt("Hi").expect("encode").is_empty());
}

#[test]
fn raise_exception_is_a_request_error_with_the_templates_message() {
    let template = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}ok";
    let t = load(&folder("raising", &[("chat_template.jinja", Some(template.into()))])).expect("loads");
    let bad = ChatRequest::from_messages(&[tramontane::ChatMessage::new("assistant", "Hi")]);
    match t.chat_text(&bad) {
        Err(Error::Template(msg)) => assert!(msg.contains("Conversations must start with the user"), "{msg}"),
        other => panic!("expected a template error, got {other:?}"),
    }
    let good = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "Hi")]);
    assert_eq!(t.chat_text(&good).expect("renders"), "ok");
}

#[test]
fn no_template_is_a_clear_error() {
    let t = load(&folder("no_template", &[("chat_template.jinja", None)])).expect("loads");
    let req = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "Hi")]);
    match t.chat_ids(&req) {
        Err(e @ Error::Unsupported(_)) => assert!(e.to_string().contains("no chat template"), "{e}"),
        other => panic!("expected UNSUPPORTED, got {other:?}"),
    }
}

#[test]
fn a_folder_without_any_tokenizer_file_names_them() {
    let e = load(&folder("no_tokenizer", &[("tokenizer.json", None)])).err().expect("fails");
    assert_eq!(e.code(), "MODEL_FORMAT");
    let msg = e.to_string();
    assert!(msg.contains("tokenizer.json") && msg.contains("tekken.json") && msg.contains("tokenizer.model"), "{msg}");
}

#[test]
fn tool_format_is_read_off_the_template() {
    let hermes = "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}<tool_call>{% endif %}";
    let t = load(&folder("hermes", &[("chat_template.jinja", Some(hermes.into()))])).expect("loads");
    assert_eq!(t.tool_format, Some(tramontane::ToolFormat::Hermes));
    let t = load(&folder("no_tools", &[])).expect("loads");
    assert_eq!(t.tool_format, None);
}

#[test]
fn a_template_that_never_ends_runs_out_of_fuel() {
    // 10^10 iterations: the fuel limit stops it with a template error, fast.
    let template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x";
    let t = load(&folder("endless", &[("chat_template.jinja", Some(template.into()))])).expect("loads");
    let req = ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", "Hi")]);
    let t0 = std::time::Instant::now();
    match t.chat_text(&req) {
        Err(Error::Template(msg)) => assert!(msg.to_lowercase().contains("fuel"), "{msg}"),
        other => panic!("expected a template error, got {other:?}"),
    }
    assert!(t0.elapsed().as_secs() < 60, "the limit stops it");
    // Ordinary templates stay well within the limit.
    let ok = load(&folder("after_endless", &[])).expect("loads");
    assert!(ok.chat_text(&req).is_ok());
}

/// A template that does not render `tools` still lets the model know them:
/// they are described (in the Hermes format calls are then parsed and
/// constrained in) in the system message, or in the first user message where
/// the template refuses a system role.
#[test]
fn tools_a_template_ignores_are_described_to_the_model() {
    let tool = serde_json::json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
    let req = |system: bool| ChatRequest {
        messages: [system.then(|| serde_json::json!({"role": "system", "content": "Be brief."})), Some(serde_json::json!({"role": "user", "content": "Hi"}))]
            .into_iter()
            .flatten()
            .collect(),
        tools: Some(vec![tool.clone()]),
        add_generation_prompt: true,
        ..Default::default()
    };
    let smollm2 = std::fs::read_to_string(common::fixtures().join("templates/SmolLM2-135M-Instruct.jinja")).expect("template");
    let t = load(&folder("describes_tools", &[("chat_template.jinja", Some(smollm2))])).expect("loads");
    assert_eq!(t.tool_format, None, "the template has no format of its own");
    assert_eq!(t.effective_tool_format(), tramontane::ToolFormat::Hermes);
    let text = t.chat_text(&req(false)).expect("renders");
    assert!(text.starts_with("<|im_start|>system\n# Tools"), "{text}");
    assert!(text.contains(&format!("<tools>\n{tool}\n</tools>")) && text.contains("<tool_call>"), "{text}");
    let text = t.chat_text(&req(true)).expect("renders");
    assert!(text.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"), "{text}");
    // Without tools nothing changes.
    let plain = ChatRequest { tools: None, ..req(true) };
    assert!(!t.chat_text(&plain).expect("renders").contains("# Tools"));

    let v01 = std::fs::read_to_string(common::fixtures().join("templates/mistralai-Mistral-7B-Instruct-v0.1.jinja")).expect("template");
    let t = load(&folder("describes_tools_v01", &[("chat_template.jinja", Some(v01))])).expect("loads");
    let text = t.chat_text(&req(false)).expect("renders with the tools in the user turn");
    assert!(text.contains("[INST] # Tools") && text.ends_with("Hi [/INST]"), "{text}");
}
