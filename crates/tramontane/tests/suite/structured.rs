//! Structured output on the default model (SmolLM2-135M-Instruct Q4_1): every
//! schema of tests/fixtures/structured/schemas.json (objects, arrays, enums,
//! const, anyOf/oneOf, recursive $ref, nullable fields, patterns and formats,
//! number ranges, item and length bounds, additionalProperties), greedy and
//! sampled with several seeds, must give JSON that the `jsonschema` crate
//! validates (formats checked too). Also JSON mode, regexes, Lark grammars,
//! streaming, log-probabilities and penalties under a constraint, `length`
//! endings, and errors that leave the model usable.

use serde_json::{json, Value};
use tramontane::source::DirSource;
use tramontane::{ChatRequest, Constraint, Error, FinishReason, GenerateRequest, LoadOptions, Model, SamplingParams};

use crate::common;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn smollm2() -> Model {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    assert!(dir.join(FILE).exists(), "{FILE} is missing: run scripts/setup.sh (npm test does)");
    pollster::block_on(Model::load_gguf(common::gpu(), &DirSource::new(dir), FILE, &LoadOptions::default(), &mut |_| {})).expect("loads")
}

pub fn cases() -> Vec<Value> {
    let p = common::fixtures().join("structured/schemas.json");
    let v: Value = serde_json::from_slice(&std::fs::read(p).expect("schemas.json")).expect("json");
    v["cases"].as_array().expect("cases").clone()
}

fn prompt(m: &Model, text: &str) -> Vec<u32> {
    let req = ChatRequest { messages: vec![json!({"role": "user", "content": text})], add_generation_prompt: true, ..Default::default() };
    m.chat_ids(&req).expect("renders")
}

fn run(m: &mut Model, ids: &[u32], c: Constraint, sampling: SamplingParams, max_tokens: usize) -> (tramontane::Result<tramontane::Generation>, String) {
    let req = GenerateRequest { sampling, max_tokens, constraint: Some(c), ..Default::default() };
    let mut streamed = String::new();
    let g = pollster::block_on(m.generate(ids, &req, &mut |piece, _, _| {
        streamed.push_str(piece);
        true
    }));
    (g, streamed)
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams { temperature: 0.8, top_p: 0.95, seed, ..Default::default() }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options().should_validate_formats(true).build(schema).expect("the test's schema is valid")
}

/// Every schema once, greedy or sampled (a seed each) in turn: complete
/// (finish `stop`), parsable, valid; what streamed is the text. (Behind
/// `serve`, tests/serve/test_structured.py runs a few, greedy, seeded and streamed.)
#[test]
fn every_schema_gives_valid_json() {
    let mut m = smollm2();
    let mut failures = Vec::new();
    let mut masks = (0.0, 0usize);
    for (i, case) in cases().iter().enumerate() {
        let name = case["name"].as_str().expect("name");
        let schema = &case["schema"];
        let v = validator(schema);
        let ids = prompt(&m, case["prompt"].as_str().expect("prompt"));
        let runs = if i % 2 == 0 { [("seeded", sampled(1 + i as u64))] } else { [("greedy", SamplingParams::greedy())] };
        for (label, sampling) in runs {
            let (g, streamed) = run(&mut m, &ids, Constraint::JsonSchema(schema.clone()), sampling, 200);
            let g = g.unwrap_or_else(|e| panic!("{name} {label}: {e}"));
            let stats = g.constraint.clone().expect("stats");
            masks.0 += stats.mask_seconds;
            masks.1 += stats.masks;
            let verdict = match serde_json::from_str::<Value>(&g.text) {
                _ if g.finish != FinishReason::Stop => Some(format!("finished with {:?}", g.finish)),
                Err(e) => Some(format!("not JSON: {e}")),
                Ok(x) => v.iter_errors(&x).next().map(|e| format!("invalid: {e}")),
            };
            eprintln!("{name} ({label}): {} ({} tokens)", g.text, g.generated.len());
            if let Some(why) = verdict {
                failures.push(format!("{name} ({label}): {why}: {}", g.text));
            }
            assert_eq!(streamed, g.text, "{name} ({label}): the stream is the text");
        }
    }
    eprintln!("mask: {:.3} ms per token over {} tokens", masks.0 * 1e3 / masks.1.max(1) as f64, masks.1);
    assert!(failures.is_empty(), "{} outputs fail their schema:\n{}", failures.len(), failures.join("\n"));
}

/// JSON mode, a regex and a Lark grammar; penalties, top-k and
/// log-probabilities under a constraint (the log-probabilities are of the
/// constrained distribution: each token's is at most 0, and the alternatives
/// are tokens the constraint allowed).
#[test]
fn json_mode_regex_grammar_and_sampling_options() {
    let mut m = smollm2();
    let ids = prompt(&m, "Describe a cat as JSON.");
    let (g, _) = run(&mut m, &ids, Constraint::JsonObject, SamplingParams::greedy(), 120);
    let g = g.expect("json mode");
    let v: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("{}: {e}", g.text));
    assert!(v.is_object(), "{}", g.text);

    let ids = prompt(&m, "What is the date of the moon landing?");
    let (g, _) = run(&mut m, &ids, Constraint::Regex("[0-9]{4}-[0-9]{2}-[0-9]{2}".into()), sampled(3), 40);
    let g = g.expect("regex");
    assert!(g.text.len() == 10 && g.text.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() }), "{}", g.text);
    assert_eq!(g.finish, FinishReason::Stop);

    let lark = "start: answer \" because \" reason\nanswer: \"yes\" | \"no\"\nreason: /[a-z ]{1,40}/\n";
    let ids = prompt(&m, "Is the sky blue?");
    let (g, _) = run(&mut m, &ids, Constraint::Lark(lark.into()), SamplingParams::greedy(), 40);
    let g = g.expect("grammar");
    assert!(g.text.starts_with("yes because ") || g.text.starts_with("no because "), "{}", g.text);

    let schema = json!({"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 4}}, "required": ["colors"]});
    let ids = prompt(&m, "Name some colors.");
    let req = GenerateRequest {
        sampling: SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.9, repetition_penalty: 1.3, frequency_penalty: 0.5, presence_penalty: 0.3, seed: 11 },
        max_tokens: 80,
        logprobs: Some(3),
        constraint: Some(Constraint::JsonSchema(schema.clone())),
        ..Default::default()
    };
    let g = pollster::block_on(m.generate(&ids, &req, &mut |_, _, _| true)).expect("generates");
    let x: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("{}: {e}", g.text));
    assert!(validator(&schema).is_valid(&x), "{}", g.text);
    assert_eq!(g.logprobs.len(), g.generated.len());
    for l in &g.logprobs {
        assert!(l.logprob <= 1e-6 && l.logprob.is_finite(), "{l:?}");
        assert!(l.top.iter().all(|(_, p)| *p <= 1e-6 && *p > -1e30), "alternatives are allowed tokens: {l:?}");
    }
}

/// A constraint that cannot finish in `max_tokens` ends with `length` and the
/// partial text (a prefix of what the schema allows); bad schemas and
/// grammars are INVALID_REQUEST naming what is wrong, and the model answers
/// the next request as before; a schema sent again comes from the cache.
#[test]
fn length_endings_errors_and_the_cache() {
    let mut m = smollm2();
    let ids = prompt(&m, "Tell me about Paris.");
    let schema = json!({"type": "object", "properties": {"text": {"type": "string", "minLength": 200}}, "required": ["text"]});
    let (g, _) = run(&mut m, &ids, Constraint::JsonSchema(schema.clone()), SamplingParams::greedy(), 8);
    let g = g.expect("partial");
    assert_eq!(g.finish, FinishReason::Length);
    assert_eq!(g.generated.len(), 8);
    assert!(g.text.starts_with("{\"text\": "), "{}", g.text);

    let (before, _) = run(&mut m, &ids, Constraint::JsonObject, SamplingParams::greedy(), 30);
    let before = before.expect("answers");
    for (bad, words) in [
        (Constraint::JsonSchema(json!({"type": "strin"})), "strin"),
        (Constraint::JsonSchema(json!({"type": "object", "properties": 5})), "properties"),
        (Constraint::JsonSchema(json!({"$ref": "#/$defs/missing"})), "missing"),
        (Constraint::JsonSchema(json!({"type": "string", "pattern": "(unclosed"})), "unclosed"),
        (Constraint::JsonSchema(json!(false)), "false"),
        (Constraint::Regex("a{2,1}".into()), "regex"),
        (Constraint::Lark("start: undefined_rule\n".into()), "undefined_rule"),
        (Constraint::Lark("root ::= \"yes\" | \"no\"\n".into()), "GBNF"),
    ] {
        let (g, _) = run(&mut m, &ids, bad.clone(), SamplingParams::greedy(), 10);
        match g {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains(words), "{bad:?}: {msg}"),
            other => panic!("{bad:?}: expected INVALID_REQUEST, got {:?}", other.map(|g| g.text)),
        }
    }
    let (after, _) = run(&mut m, &ids, Constraint::JsonObject, SamplingParams::greedy(), 30);
    let after = after.expect("still answers");
    assert_eq!(after.text, before.text, "the errors changed nothing");
    assert!(after.constraint.expect("stats").cached, "the second request's schema comes from the cache");
    let g = pollster::block_on(m.generate(&ids, &GenerateRequest { max_tokens: 5, ..Default::default() }, &mut |_, _, _| true)).expect("free text");
    assert!(g.constraint.is_none());
}

/// A hostile schema (a huge enum of long strings, a deep nest, a regex whose
/// automaton explodes) is refused or compiled within bounds, never hangs:
/// llguidance's limits (`tramontane::constrain::limits`) stop it.
#[test]
fn hostile_constraints_are_bounded() {
    let mut m = smollm2();
    let ids = prompt(&m, "Hi");
    let long: Vec<String> = (0..20_000).map(|i| format!("{i:05}-{}", "x".repeat(60))).collect();
    let mut deep = json!({"type": "integer"});
    for _ in 0..400 {
        deep = json!({"type": "object", "properties": {"a": deep}, "required": ["a"]});
    }
    for (what, c) in [
        ("a 1.3 MB enum", Constraint::JsonSchema(json!({"enum": long}))),
        ("400 nested objects", Constraint::JsonSchema(deep)),
        ("an exploding regex", Constraint::Regex("(a|b)*a(a|b){40}".into())),
    ] {
        let t0 = std::time::Instant::now();
        let r = m.compile_constraint(&c);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{what}: {} in {secs:.2} s", match &r { Ok(_) => "compiled".to_string(), Err(e) => e.to_string().chars().take(160).collect() });
        assert!(secs < 30.0, "{what} took {secs:.1} s");
        if let Err(e) = r {
            assert_eq!(e.code(), "INVALID_REQUEST", "{what}: {e}");
        }
    }
    let (g, _) = run(&mut m, &ids, Constraint::JsonObject, SamplingParams::greedy(), 20);
    g.expect("the model still answers");
}
