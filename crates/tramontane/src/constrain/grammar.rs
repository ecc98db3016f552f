//! A request's constraint as an llguidance grammar. JSON Schemas, regexes and
//! Lark grammars are compiled by llguidance itself; what is ours is only the
//! wrapping: JSON layout options, and tool calls written in each model
//! family's format (see `tools.rs`).

use llguidance::api::{GrammarWithLexer, TopLevelGrammar};
use serde_json::{json, Map, Value};

use super::tools::{self, ToolSyntax};
use super::Constraint;
use crate::error::{Error, Result};

/// How constrained JSON is laid out: one space after `,` and `:`, no other
/// whitespace. Free whitespace lets a small model pad an answer with newlines
/// until it runs out of tokens; this is also how `json.dumps` and most JSON
/// in training data look. A schema's own top-level `x-guidance` wins.
fn layout() -> Map<String, Value> {
    let v = json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
    v.as_object().cloned().unwrap_or_default()
}

/// A JSON Schema with our layout options, checked to be a schema at all.
/// `lenient`: keywords and formats llguidance does not implement are ignored
/// (with a warning) instead of refused.
pub(super) fn schema_with_layout(schema: &Value, lenient: bool) -> Result<Value> {
    check_depth(schema, "the JSON schema")?;
    let mut obj = match schema {
        Value::Object(o) => o.clone(),
        Value::Bool(true) => Map::new(),
        Value::Bool(false) => return Err(Error::InvalidRequest("the JSON schema is `false`: no value is valid for it".into())),
        _ => return Err(Error::InvalidRequest("the JSON schema must be an object (or `true`)".into())),
    };
    let mut opts = layout();
    match obj.get("x-guidance") {
        None | Some(Value::Null) => {}
        Some(Value::Object(theirs)) => opts.extend(theirs.clone()),
        Some(_) => return Err(Error::InvalidRequest("x-guidance must be an object".into())),
    }
    if lenient {
        opts.insert("lenient".into(), true.into());
    }
    obj.insert("x-guidance".into(), Value::Object(opts));
    Ok(Value::Object(obj))
}

/// Deepest JSON nesting of a schema (objects and arrays) and of brackets in a
/// Lark grammar: compilers recurse over them, and a hostile depth must be an
/// error, not a stack overflow. Real schemas stay far below (nesting is
/// usually written with `$ref`).
pub(super) const MAX_DEPTH: usize = 64;

fn json_depth(v: &Value) -> usize {
    // Iterative: the check itself must not recurse as deep as what it checks.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(o) => {
                max = max.max(d);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            _ => {}
        }
        if max > MAX_DEPTH {
            break;
        }
    }
    max
}

pub(super) fn check_depth(v: &Value, what: &str) -> Result<()> {
    if json_depth(v) > MAX_DEPTH {
        return Err(Error::InvalidRequest(format!("{what} is nested more than {MAX_DEPTH} levels deep")));
    }
    Ok(())
}

/// Brackets nested in a grammar's text (quoted text and regexes included:
/// a bound, not a parse).
fn bracket_depth(g: &str) -> usize {
    let (mut d, mut max) = (0usize, 0usize);
    for c in g.chars() {
        match c {
            '(' | '[' | '{' => {
                d += 1;
                max = max.max(d);
            }
            ')' | ']' | '}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// GBNF (llama.cpp's grammar format) is not something llguidance reads.
fn looks_like_gbnf(g: &str) -> bool {
    g.lines().any(|l| {
        let l = l.trim_start();
        !l.starts_with('#') && !l.starts_with("//") && l.contains("::=")
    })
}

/// The grammar llguidance compiles for `c`. `syntax` is how the model writes
/// tool calls (only tool constraints use it).
pub(super) fn to_grammar(c: &Constraint, syntax: &ToolSyntax, lenient: bool) -> Result<TopLevelGrammar> {
    Ok(match c {
        Constraint::JsonObject => TopLevelGrammar::from_json_schema(schema_with_layout(&json!({"type": "object"}), false)?),
        Constraint::JsonSchema(s) => TopLevelGrammar::from_json_schema(schema_with_layout(s, lenient)?),
        Constraint::Regex(rx) => {
            if rx.is_empty() {
                return Err(Error::InvalidRequest("the regex is empty".into()));
            }
            if bracket_depth(rx) > MAX_DEPTH {
                return Err(Error::InvalidRequest(format!("the regex nests brackets more than {MAX_DEPTH} deep")));
            }
            TopLevelGrammar::from_regex(rx)
        }
        Constraint::Lark(g) => {
            if g.trim().is_empty() {
                return Err(Error::InvalidRequest("the grammar is empty".into()));
            }
            if bracket_depth(g) > MAX_DEPTH {
                return Err(Error::InvalidRequest(format!("the grammar nests brackets more than {MAX_DEPTH} deep")));
            }
            if looks_like_gbnf(g) {
                return Err(Error::InvalidRequest(
                    "the grammar is in GBNF (llama.cpp's format, rules written `name ::= ...`), which this engine does not read: \
                     write it in llguidance's Lark syntax (rules written `name: ...`, `start` first; \
                     https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md)"
                        .into(),
                ));
            }
            TopLevelGrammar::from_lark(g.clone())
        }
        Constraint::Tools(t) => {
            let content = match &t.content {
                None => None,
                Some(inner) => {
                    if matches!(**inner, Constraint::Tools(_)) {
                        return Err(Error::Internal("tool calls nested in tool calls".into()));
                    }
                    Some(to_grammar(inner, syntax, lenient)?)
                }
            };
            let lark = tools::lark(t, syntax, content.is_some(), lenient)?;
            let mut grammars = vec![GrammarWithLexer::from_lark(lark)];
            if let Some(g) = content {
                // The answer's own grammar, referenced as `@content`.
                let mut inner = g.grammars;
                if inner.len() != 1 {
                    return Err(Error::InvalidRequest("an answer format made of several grammars cannot be combined with tools".into()));
                }
                let mut first = inner.remove(0);
                first.name = Some("content".into());
                grammars.push(first);
            }
            TopLevelGrammar { grammars, max_tokens: None }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_added_and_theirs_wins() {
        let s = schema_with_layout(&json!({"type": "object", "x-guidance": {"whitespace_flexible": true}}), false).expect("schema");
        assert_eq!(s["x-guidance"]["whitespace_flexible"], json!(true));
        assert_eq!(s["x-guidance"]["item_separator"], json!(", "));
        assert!(schema_with_layout(&json!(false), false).is_err());
        assert!(schema_with_layout(&json!([1]), false).is_err());
        assert_eq!(schema_with_layout(&json!(true), true).expect("true")["x-guidance"]["lenient"], json!(true));
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let mut deep = json!(1);
        for _ in 0..1000 {
            deep = json!([deep]);
        }
        assert!(check_depth(&deep, "x").is_err());
        assert!(check_depth(&json!({"a": [{"b": 1}]}), "x").is_ok());
        assert_eq!(bracket_depth("start: (a (b) [c])"), 2);
    }

    #[test]
    fn gbnf_is_told_apart() {
        assert!(looks_like_gbnf("root ::= \"yes\" | \"no\"\n"));
        assert!(!looks_like_gbnf("start: \"yes\" | \"no\"\n// a ::= comment\n"));
    }
}
