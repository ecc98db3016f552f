//! Tool calls end to end: the scripted GGUF (scripts/fixtures/make_scripted_gguf.py)
//! writes, greedily, exactly what a tool-calling model of each family writes
//! after the published templates' prompts; the engine must hand back OpenAI
//! tool calls, stream none of the call as content, and render the call and its
//! result back through the same template for the next turn.

use crate::common;

use serde_json::{json, Value};
use tramontane::source::DirSource;
use tramontane::{ChatRequest, Constraint, FinishReason, GenerateRequest, LoadOptions, Model, ToolChoice, ToolConstraint, ToolFormat};

fn model() -> Model {
    let src = DirSource::new(common::fixtures().join("scripted"));
    pollster::block_on(Model::load_gguf(common::gpu(), &src, "scripted.gguf", &LoadOptions::default(), &mut |_| {})).expect("loads")
}

fn template(name: &str) -> String {
    std::fs::read_to_string(common::fixtures().join("templates").join(name)).expect("template")
}

fn tools() -> Vec<Value> {
    vec![json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}})]
}

fn request(tools_on: bool) -> ChatRequest {
    ChatRequest {
        messages: vec![json!({"role": "user", "content": "What is the weather in Paris?"})],
        tools: tools_on.then(tools),
        add_generation_prompt: true,
        ..Default::default()
    }
}

/// Generate greedily for `req`; returns the generation and the streamed text.
fn chat(m: &mut Model, req: &ChatRequest) -> (tramontane::Generation, String) {
    let ids = m.chat_ids(req).expect("renders");
    let r = GenerateRequest { max_tokens: 12, tools: if req.tools.is_some() { m.text.tool_format } else { None }, ..Default::default() };
    let mut streamed = String::new();
    m.reset();
    let g = pollster::block_on(m.generate(&ids, &r, &mut |piece, _, _| {
        streamed.push_str(piece);
        true
    }))
    .expect("generates");
    (g, streamed)
}

fn check_call(g: &tramontane::Generation) {
    assert_eq!(g.finish, FinishReason::ToolCalls);
    assert_eq!(g.tool_calls.len(), 1, "{:?}", g.tool_calls);
    let c = &g.tool_calls[0];
    assert_eq!(c.name, "get_weather");
    let args: Value = serde_json::from_str(&c.arguments).expect("arguments are JSON text");
    assert_eq!(args, json!({"city": "Paris", "days": 2}));
    assert_eq!(c.id.len(), 9);
    assert!(c.id.chars().all(|ch| ch.is_ascii_alphanumeric()), "{}", c.id);
}

/// The assistant's call and the tool's answer, as an OpenAI client sends
/// them back (arguments as a JSON string).
fn round_trip(g: &tramontane::Generation) -> ChatRequest {
    let mut req = request(true);
    req.messages.push(json!({"role": "assistant", "content": if g.text.is_empty() { Value::Null } else { json!(g.text) },
        "tool_calls": g.tool_calls.iter().map(|c| c.to_openai()).collect::<Vec<_>>()}));
    req.messages.push(json!({"role": "tool", "tool_call_id": g.tool_calls[0].id, "content": "{\"temp\": 14}"}));
    req
}

#[test]
fn hermes_qwen_calls_after_content() {
    let mut m = model();
    m.text.set_template(&template("Qwen-Qwen2.5-7B-Instruct.jinja"));
    assert_eq!(m.text.tool_format, Some(ToolFormat::Hermes));
    let (g, streamed) = chat(&mut m, &request(true));
    check_call(&g);
    assert_eq!(g.text, "Let me check.");
    assert_eq!(streamed, g.text, "the call never streams as content");
    let next = m.text.chat_text(&round_trip(&g)).expect("the round trip renders");
    assert!(next.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>"), "{next}");
    assert!(next.contains("<tool_response>\n{\"temp\": 14}\n</tool_response>"), "{next}");

    // Without tools in the request the same text is plain content.
    let (g, streamed) = chat(&mut m, &request(false));
    assert_eq!(g.finish, FinishReason::Stop);
    assert!(g.tool_calls.is_empty());
    assert!(g.text.starts_with("Let me check.\n<tool_call>"), "{}", g.text);
    assert_eq!(streamed, g.text);
}

#[test]
fn mistral_nemo_calls_with_a_control_token() {
    let mut m = model();
    m.text.set_template(&template("mistralai-Mistral-Nemo-Instruct-2407.jinja"));
    assert_eq!(m.text.tool_format, Some(ToolFormat::Mistral));
    let (g, streamed) = chat(&mut m, &request(true));
    check_call(&g);
    assert_eq!(g.text, "");
    assert_eq!(streamed, "");
    // Nemo's template checks the ids are 9 alphanumerics: ours pass.
    let next = m.text.chat_text(&round_trip(&g)).expect("the round trip renders");
    assert!(next.contains(&format!("\"id\": \"{}\"", g.tool_calls[0].id)), "{next}");
    assert!(next.contains("[TOOL_RESULTS]"), "{next}");
}

#[test]
fn llama31_json_call_is_the_whole_message() {
    let mut m = model();
    // The scripted model keys its Llama chain on <|end_header_id|>: drop the
    // template's two newlines after it (the rest is the published template).
    let published = template("meta-llama-Llama-3.1-8B-Instruct.jinja");
    let gen_prompt = "'<|start_header_id|>assistant<|end_header_id|>\\n\\n'";
    assert!(published.contains(gen_prompt));
    m.text.set_template(&published.replace(gen_prompt, "'<|start_header_id|>assistant<|end_header_id|>'"));
    assert_eq!(m.text.tool_format, Some(ToolFormat::Llama3));
    let (g, streamed) = chat(&mut m, &request(true));
    check_call(&g);
    assert_eq!(g.text, "");
    assert_eq!(streamed, "");
    let next = m.text.chat_text(&round_trip(&g)).expect("the round trip renders");
    assert!(next.contains("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}"), "{next}");
    assert!(next.contains("<|start_header_id|>ipython<|end_header_id|>"), "{next}");
}

#[test]
fn every_published_tool_template_names_its_format() {
    for (file, want) in [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", Some(ToolFormat::Hermes)),
        ("Qwen-Qwen3-0.6B.jinja", Some(ToolFormat::Hermes)),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", Some(ToolFormat::Mistral)),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", Some(ToolFormat::Mistral)),
        ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", Some(ToolFormat::Mistral)),
        ("unsloth-mistral-Devstral-Small-2507.jinja", Some(ToolFormat::Mistral)),
        ("mistral-v3-Large-Instruct-2407.jinja", Some(ToolFormat::Mistral)),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", Some(ToolFormat::Llama3)),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", Some(ToolFormat::Llama3)),
        ("meta-llama-Llama-3.3-70B-Instruct.jinja", Some(ToolFormat::Llama3)),
        ("SmolLM2-135M-Instruct.jinja", None),
        ("mistralai-Mistral-7B-Instruct-v0.1.jinja", None),
    ] {
        assert_eq!(ToolFormat::detect(&template(file)), want, "{file}");
    }
}

#[test]
fn text_prompts_get_the_gguf_bos() {
    let m = model();
    assert!(m.tokenizer().add_bos);
    let ids = m.text_prompt("Where?").expect("encodes");
    assert_eq!(ids[0], m.tokenizer().bos.expect("bos"));
    assert_eq!(ids.iter().filter(|&&i| Some(i) == m.tokenizer().bos).count(), 1);
}

/// Generate greedily under a tool constraint (`choice`) for `req`.
fn constrained(m: &mut Model, req: &ChatRequest, choice: ToolChoice) -> tramontane::Generation {
    let ids = m.chat_ids(req).expect("renders");
    let c = Constraint::Tools(ToolConstraint { tools: req.tools.clone().expect("tools"), choice, parallel: true, content: None });
    // The scripted vocabulary is bytes: a call is a token a character.
    let r = GenerateRequest { max_tokens: 160, tools: Some(m.text.effective_tool_format()), constraint: Some(c), ..Default::default() };
    m.reset();
    pollster::block_on(m.generate(&ids, &r, &mut |_, _, _| true)).expect("generates")
}

/// Each family's tool-call grammar (`constrain/tools.rs`): with `auto` the
/// scripted model's own call (what the published format looks like) passes
/// the grammar unchanged; a named function forces a call to it, in the
/// family's format, with arguments valid for its parameters, though the
/// model wanted another.
#[test]
fn tool_grammars_accept_each_familys_calls_and_force_named_ones() {
    let llama = template("meta-llama-Llama-3.1-8B-Instruct.jinja")
        .replace("'<|start_header_id|>assistant<|end_header_id|>\\n\\n'", "'<|start_header_id|>assistant<|end_header_id|>'");
    let time = json!({"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
        "parameters": {"type": "object", "properties": {"tz": {"enum": ["UTC", "CET", "JST"]}}, "required": ["tz"], "additionalProperties": false}}});
    for (name, source, format) in [
        ("Qwen2.5", template("Qwen-Qwen2.5-7B-Instruct.jinja"), ToolFormat::Hermes),
        ("Mistral Nemo", template("mistralai-Mistral-Nemo-Instruct-2407.jinja"), ToolFormat::Mistral),
        ("Llama 3.1", llama, ToolFormat::Llama3),
    ] {
        let mut m = model();
        m.text.set_template(&source);
        assert_eq!(m.text.tool_format, Some(format));
        let g = constrained(&mut m, &request(true), ToolChoice::Auto);
        check_call(&g);

        let mut req = request(true);
        req.tools.as_mut().expect("tools").push(time.clone());
        let g = constrained(&mut m, &req, ToolChoice::Named("get_time".into()));
        assert_eq!(g.finish, FinishReason::ToolCalls, "{name}: {:?} {:?}", g.text, g.generated);
        assert_eq!(g.tool_calls.len(), 1, "{name}: {:?}", g.tool_calls);
        assert_eq!(g.tool_calls[0].name, "get_time", "{name}");
        let args: Value = serde_json::from_str(&g.tool_calls[0].arguments).expect("JSON arguments");
        assert!(["UTC", "CET", "JST"].contains(&args["tz"].as_str().unwrap_or("")), "{name}: {args}");
        assert_eq!(args.as_object().map(|o| o.len()), Some(1), "{name}: {args}");
    }
}
