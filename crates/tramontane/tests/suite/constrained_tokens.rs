//! Constrained decoding on every kind of tokenizer we load (byte-level BPE,
//! tekken, SentencePiece with byte fallback), without a GPU: a seeded walk
//! draws only tokens the constraint's mask allows and commits them, the way
//! generation does. The constrained texts are multi-byte (accents, CJK,
//! emoji), and the walk prefers tokens that stop inside a character (a byte
//! fallback `<0xE6>`, a byte-level piece holding half of one), so the
//! constraint is shown to hold on the text across those splits: the ids must
//! decode to text the constraint accepts.

use std::path::PathBuf;

use serde_json::{json, Value};
use tramontane::constrain::{token_bytes, Constrainer, Next, ToolSyntax};
use tramontane::text::{spm_model, tekken};
use tramontane::{Constraint, Tokenizer};

use crate::common::Rng;

fn read(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn byte_level() -> Tokenizer {
    Tokenizer::from_json(&read("smollm2-tokenizer/tokenizer.json"), "tokenizer.json").expect("tokenizer")
}

fn tekken_tok() -> Tokenizer {
    tekken::from_tekken_json(&read("tokenizers/tekken_240718.json"), "tekken.json").expect("tokenizer")
}

fn spm() -> Tokenizer {
    spm_model::from_sentencepiece_model(&read("tokenizers/llama-spm.tokenizer.model"), "tokenizer.model").expect("tokenizer")
}

/// A walk's tokens, and how many of them ended inside a character.
struct Walk {
    ids: Vec<u32>,
    split_tokens: usize,
}

/// Draws allowed tokens (preferring ones whose bytes are not whole UTF-8
/// characters, when `split` and the mask has any) until the constraint is
/// complete, the end is drawn, or 300 tokens.
fn walk(tok: &Tokenizer, c: &Constraint, seed: u64, split: bool) -> Walk {
    let n = tok.vocab_size();
    let bytes = token_bytes(tok, n).expect("token bytes");
    let mut k = Constrainer::new(tok, n).expect("constrainer");
    let mut s = k.compile(c, &ToolSyntax::default()).expect("compiles");
    let mut rng = Rng(seed);
    let (mut words, mut ids, mut split_tokens) = (Vec::new(), Vec::new(), 0);
    for _ in 0..300 {
        if s.mask(&mut words).expect("mask") == Next::End {
            break;
        }
        let allowed: Vec<u32> = (0..n as u32).filter(|&t| words[t as usize / 32] >> (t % 32) & 1 == 1).collect();
        let ends = allowed.iter().any(|t| tok.is_eos(*t));
        let tokens: Vec<u32> = allowed.into_iter().filter(|t| !tok.is_eos(*t)).collect();
        if tokens.is_empty() || (ends && rng.next_u32() % 3 == 0) {
            assert!(ends, "the mask allows nothing");
            break;
        }
        let partial: Vec<u32> = tokens.iter().copied().filter(|&t| std::str::from_utf8(&bytes[t as usize]).is_err()).collect();
        let pool = if split && !partial.is_empty() && rng.next_u32() % 2 == 0 { &partial } else { &tokens };
        let t = pool[rng.next_u32() as usize % pool.len()];
        if std::str::from_utf8(&bytes[t as usize]).is_err() {
            split_tokens += 1;
        }
        s.commit(t).expect("an allowed token commits");
        ids.push(t);
        if s.is_finished() {
            break;
        }
    }
    Walk { ids, split_tokens }
}

/// Whether `text` is one or more of `words` back to back, `min..=max` times.
fn repeats(text: &str, words: &[&str], min: usize, max: usize) -> bool {
    fn go(t: &str, words: &[&str], n: usize, min: usize, max: usize) -> bool {
        (t.is_empty() && n >= min) || (n < max && words.iter().any(|w| t.strip_prefix(w).is_some_and(|r| go(r, words, n + 1, min, max))))
    }
    go(text, words, 0, min, max)
}

fn check_kind(name: &str, tok: &Tokenizer) {
    let words = ["é", "日本", "🙂", "ß", "Zürich"];
    let rx = Constraint::Regex("(é|日本|🙂|ß|Zürich){2,5}".into());
    let enum_values = ["Zürich", "東京都", "🙂👍", "naïve café", "Ελλάδα"];
    let schema = Constraint::JsonSchema(json!({"type": "object", "properties": {"city": {"enum": enum_values}}, "required": ["city"], "additionalProperties": false}));
    let mut splits = 0;
    for seed in 1..=6u64 {
        let w = walk(tok, &rx, seed, true);
        splits += w.split_tokens;
        let text = tok.decode(&w.ids, true).expect("decodes");
        assert!(repeats(&text, &words, 2, 5), "{name}, seed {seed}: {text:?} ({:?}) is not what the regex allows", w.ids);

        let w = walk(tok, &schema, seed, true);
        splits += w.split_tokens;
        let text = tok.decode(&w.ids, true).expect("decodes");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}, seed {seed}: {text:?} is not JSON: {e}"));
        assert!(enum_values.contains(&v["city"].as_str().unwrap_or("")), "{name}, seed {seed}: {text}");
    }
    eprintln!("{name}: {splits} drawn tokens ended inside a character");
    assert!(splits > 0, "{name}: no walk crossed a character boundary mid-token: the test shows nothing");
}

#[test]
fn byte_level_bpe_keeps_multibyte_text_valid() {
    check_kind("byte-level BPE (SmolLM2)", &byte_level());
}

#[test]
fn tekken_keeps_multibyte_text_valid() {
    check_kind("tekken", &tekken_tok());
}

#[test]
fn sentencepiece_byte_fallback_keeps_multibyte_text_valid() {
    let tok = spm();
    // Byte-fallback pieces are what a split goes through here.
    let bytes = token_bytes(&tok, tok.vocab_size()).expect("bytes");
    let id = tok.token_id("<0xE6>").expect("a byte piece");
    assert_eq!(bytes[id as usize], [0xE6]);
    assert_eq!(bytes[tok.token_id("\u{2581}the").expect("a piece") as usize], b" the");
    check_kind("SentencePiece (Llama)", &tok);
}

/// Control tokens are marked, so they never count as text, and the model's
/// vocabulary past the tokenizer's (a padded LM head) stands for nothing.
#[test]
fn special_tokens_and_padding_spell_no_text() {
    let tok = byte_level();
    let n = tok.vocab_size();
    let bytes = token_bytes(&tok, n + 5).expect("bytes");
    let im_end = tok.token_id("<|im_end|>").expect("special");
    assert_eq!(bytes[im_end as usize][0], 0xFF, "marked special");
    assert!(bytes[n..].iter().all(Vec::is_empty));
    // A regex over the text never allows a control token, even one whose
    // text would match.
    let mut k = Constrainer::new(&tok, n).expect("constrainer");
    let mut s = k.compile(&Constraint::Regex("(<\\|im_end\\|>|x)+".into()), &ToolSyntax::default()).expect("compiles");
    let mut words = Vec::new();
    assert_eq!(s.mask(&mut words).expect("mask"), Next::Tokens);
    assert_eq!(words[im_end as usize / 32] >> (im_end % 32) & 1, 0);
}

/// Mistral's `[TOOL_CALLS]name[ARGS]{...}` form (Small 3.2, Devstral), which
/// the scripted model does not write: a walk through the forced grammar on
/// tekken (where `[TOOL_CALLS]` is a control token; a control token stands in
/// for `[ARGS]`) gives text the tool-call parser reads back as one call to the
/// named function with valid arguments.
#[test]
fn mistral_args_form_calls_walk_to_a_parsable_call() {
    use tramontane::text::tool_calls::ToolCallStream;
    use tramontane::{ToolChoice, ToolConstraint, ToolFormat};
    let tok = tekken_tok();
    let tc = tok.token_id("[TOOL_CALLS]").expect("[TOOL_CALLS]");
    let args = tok.token_id("<SPECIAL_40>").expect("a control token");
    let syntax = ToolSyntax { format: ToolFormat::Mistral, mistral_args: true, tool_calls_token: Some(tc), args_token: Some(args) };
    let tools = vec![
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}),
        json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
            "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"], "additionalProperties": false}}}),
    ];
    let c = Constraint::Tools(ToolConstraint { tools, choice: ToolChoice::Named("get_time".into()), parallel: true, content: None });
    let n = tok.vocab_size();
    let mut k = Constrainer::new(&tok, n).expect("constrainer");
    for seed in 1..=4u64 {
        let mut s = k.compile(&c, &syntax).expect("compiles");
        let mut rng = Rng(seed);
        let (mut words, mut ids) = (Vec::new(), Vec::new());
        while ids.len() < 200 && !s.is_finished() && s.mask(&mut words).expect("mask") == Next::Tokens {
            let allowed: Vec<u32> = (0..n as u32).filter(|&t| words[t as usize / 32] >> (t % 32) & 1 == 1 && !tok.is_eos(t)).collect();
            if allowed.is_empty() {
                break;
            }
            let t = allowed[rng.next_u32() as usize % allowed.len()];
            s.commit(t).expect("commits");
            ids.push(t);
        }
        assert_eq!(ids[0], tc, "the call opens with the control token");
        // The parser reads the text with control tokens kept, `[ARGS]` spelled out.
        let raw = tok.decode(&ids, false).expect("decodes").replace("<SPECIAL_40>", "[ARGS]");
        let visible = tok.decode(&ids, true).expect("decodes");
        let mut stream = ToolCallStream::new(ToolFormat::Mistral, seed);
        stream.observe(&raw, &visible);
        let (_, calls) = stream.finish(&raw, &visible);
        assert_eq!(calls.len(), 1, "seed {seed}: {raw:?}");
        assert_eq!(calls[0].name, "get_time", "{raw:?}");
        let a: Value = serde_json::from_str(&calls[0].arguments).expect("JSON arguments");
        assert!(a["tz"] == "UTC" || a["tz"] == "CET", "{raw:?}");
    }
}

/// Every family's grammar compiles in every mode (auto with free text, auto
/// with an answer format, required, named, one call or several), and a walk
/// through `auto` with a JSON answer format ends as JSON or as a call.
#[test]
fn tool_grammars_compile_in_every_mode() {
    use tramontane::{ToolChoice, ToolConstraint, ToolFormat};
    let tok = tekken_tok();
    let n = tok.vocab_size();
    let mut k = Constrainer::new(&tok, n).expect("constrainer");
    let tools = vec![
        json!({"type": "function", "function": {"name": "a\"b", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}),
        json!({"function": {"name": "plain"}}),
    ];
    let tc = tok.token_id("[TOOL_CALLS]");
    for syntax in [
        ToolSyntax::default(),
        ToolSyntax { format: ToolFormat::Mistral, mistral_args: false, tool_calls_token: tc, args_token: None },
        ToolSyntax { format: ToolFormat::Mistral, mistral_args: true, tool_calls_token: None, args_token: None },
        ToolSyntax { format: ToolFormat::Llama3, ..ToolSyntax::default() },
    ] {
        for choice in [ToolChoice::Auto, ToolChoice::Required, ToolChoice::Named("plain".into())] {
            for (parallel, content) in [(true, None), (false, Some(Box::new(Constraint::JsonObject)))] {
                let c = Constraint::Tools(ToolConstraint { tools: tools.clone(), choice: choice.clone(), parallel, content });
                if let Err(e) = k.compile(&c, &syntax) {
                    panic!("{syntax:?} {choice:?} parallel {parallel}: {e}");
                }
            }
        }
    }
    // A named function that is not offered, and no tools at all, are refused.
    for (tools, choice) in [(tools.clone(), ToolChoice::Named("nope".into())), (vec![], ToolChoice::Required)] {
        let c = Constraint::Tools(ToolConstraint { tools, choice, parallel: true, content: None });
        assert_eq!(k.compile(&c, &ToolSyntax::default()).err().map(|e| e.code()), Some("INVALID_REQUEST"));
    }
    let c = Constraint::Tools(ToolConstraint { tools, choice: ToolChoice::Auto, parallel: true, content: Some(Box::new(Constraint::JsonObject)) });
    // Random tokens rarely close an object: the walk shows which way it went.
    for seed in 1..=3 {
        let w = walk_with(&tok, &mut k, &c, &ToolSyntax::default(), seed);
        let text = tok.decode(&w, true).expect("decodes");
        let call = text.starts_with("<tool_call>\n{\"name\": \"a\\\"b\"") || text.starts_with("<tool_call>\n{\"name\": \"plain\"");
        assert!(text.starts_with('{') || call || "<tool_call>\n{\"name\": \"".starts_with(&text), "seed {seed}: {text:?}");
    }
}

/// Random allowed tokens until the constraint ends (or 200 tokens).
fn walk_with(tok: &Tokenizer, k: &mut Constrainer, c: &Constraint, syntax: &ToolSyntax, seed: u64) -> Vec<u32> {
    let n = tok.vocab_size();
    let mut s = k.compile(c, syntax).expect("compiles");
    let mut rng = Rng(seed);
    let (mut words, mut ids) = (Vec::new(), Vec::new());
    while ids.len() < 200 && !s.is_finished() && s.mask(&mut words).expect("mask") == Next::Tokens {
        let allowed: Vec<u32> = (0..n as u32).filter(|&t| words[t as usize / 32] >> (t % 32) & 1 == 1).collect();
        if allowed.iter().any(|&t| tok.is_eos(t)) && rng.next_u32() % 4 == 0 {
            break;
        }
        let pick: Vec<u32> = allowed.into_iter().filter(|&t| !tok.is_eos(t)).collect();
        if pick.is_empty() {
            break;
        }
        let t = pick[rng.next_u32() as usize % pick.len()];
        s.commit(t).expect("commits");
        ids.push(t);
    }
    ids
}
