//! Tool calls as Lark grammars (llguidance's syntax), in the format each model
//! family was trained to write (`text/tool_calls.rs` parses the same formats
//! back):
//! - Hermes / Qwen (and models whose template has no tool format of its own):
//!   `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`;
//! - Mistral: `[TOOL_CALLS]` then a JSON list of `{"name", "arguments"}`, or
//!   (Small 3.2, Devstral, Ministral) `[TOOL_CALLS]name[ARGS]{...}` per call;
//! - Llama 3.1+: `{"name": ..., "parameters": {...}}`, several joined by `;`.
//!
//! `required` and a named function force a call; `auto` leaves free text, but
//! once the model opens a call (the trigger: `<tool_call>`, the
//! `[TOOL_CALLS]` token, a leading `{` for Llama) the call must be valid:
//! a known name and arguments valid for its `parameters` schema.

use serde_json::{json, Value};

use super::grammar::schema_with_layout;
use super::{ToolChoice, ToolConstraint};
use crate::error::{Error, Result};
use crate::text::ToolFormat;

/// How the loaded model writes tool calls: its format and the ids of the
/// control tokens the format uses (`None`: the marker is plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSyntax {
    pub format: ToolFormat,
    /// Mistral's `name[ARGS]{...}` form (else a JSON list).
    pub mistral_args: bool,
    pub tool_calls_token: Option<u32>,
    pub args_token: Option<u32>,
}

impl Default for ToolSyntax {
    fn default() -> Self {
        ToolSyntax { format: ToolFormat::Hermes, mistral_args: false, tool_calls_token: None, args_token: None }
    }
}

/// `name` and `parameters` of an OpenAI tool (`{type, function: {...}}`, or
/// the function object itself).
fn name_and_params(tool: &Value, i: usize) -> Result<(String, Value)> {
    let f = tool.get("function").unwrap_or(tool);
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::InvalidRequest(format!("tools[{i}].function.name must be a non-empty string")))?;
    if let Some(p) = f.get("parameters") {
        super::grammar::check_depth(p, &format!("tools[{i}].function.parameters"))?;
    }
    let params = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(p @ (Value::Object(_) | Value::Bool(true))) => p.clone(),
        Some(_) => return Err(Error::InvalidRequest(format!("tools[{i}].function.parameters must be a JSON Schema object"))),
    };
    Ok((name.to_string(), params))
}

/// The tools a call may name: all of them, or the one `tool_choice` names.
fn offered(t: &ToolConstraint) -> Result<Vec<(String, Value)>> {
    let all: Vec<(String, Value)> = t.tools.iter().enumerate().map(|(i, x)| name_and_params(x, i)).collect::<Result<_>>()?;
    if all.is_empty() {
        return Err(Error::InvalidRequest("tool_choice asks for a tool call but tools is empty".into()));
    }
    match &t.choice {
        ToolChoice::Named(n) => {
            let one: Vec<_> = all.into_iter().filter(|(name, _)| name == n).collect();
            if one.is_empty() {
                return Err(Error::InvalidRequest(format!("tool_choice names {n:?}, which is not in tools")));
            }
            Ok(one)
        }
        _ => Ok(all),
    }
}

/// A Lark string literal (Lark strings are read as JSON strings).
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `%json {...}` for `schema` with our layout.
fn json_rule(schema: &Value, lenient: bool) -> Result<String> {
    let s = schema_with_layout(schema, lenient)?;
    Ok(format!("%json {}", serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?))
}

/// The JSON object of one call: `{"name": <one of the names>, <args_key>: <its parameters>}`.
fn call_object_schema(tools: &[(String, Value)], args_key: &str) -> Value {
    let one = |(name, params): &(String, Value)| {
        json!({
            "type": "object",
            "properties": {"name": {"const": name}, args_key: params},
            "required": ["name", args_key],
            "additionalProperties": false,
        })
    };
    if tools.len() == 1 {
        one(&tools[0])
    } else {
        json!({"anyOf": tools.iter().map(one).collect::<Vec<_>>()})
    }
}

/// A special token in a Lark rule (by id), or its text where the vocabulary
/// has no such token.
fn marker(id: Option<u32>, text: &str) -> String {
    match id {
        Some(i) => format!("<[{i}]>"),
        None => lit(text),
    }
}

/// The Lark grammar of `t` for a model writing `syntax`. `content`: the
/// answer has a grammar of its own (`@content`) instead of free text.
pub(super) fn lark(t: &ToolConstraint, syntax: &ToolSyntax, content: bool, lenient: bool) -> Result<String> {
    let tools = offered(t)?;
    let forced = !matches!(t.choice, ToolChoice::Auto);
    // One call, or several, as the request allows (a named tool: once).
    let many = t.parallel && !matches!(t.choice, ToolChoice::Named(_));
    let mut g = String::new();
    match syntax.format {
        ToolFormat::Hermes => {
            let call = format!("\"<tool_call>\\n\" {} \"\\n</tool_call>\"", json_rule(&call_object_schema(&tools, "arguments"), lenient)?);
            if forced {
                g += if many { "start: call (\"\\n\" call)*\n" } else { "start: call\n" };
                g += &format!("call: {call}\n");
            } else if content {
                g += "start: @content | calls\n";
                g += if many { "calls: call (\"\\n\" call)*\n" } else { "calls: call\n" };
                g += &format!("call: {call}\n");
            } else {
                // Free text until the text `<tool_call>` appears (a lazy
                // lexeme ends at its first match); then a valid call.
                g += "start: (opening call_body)* TEXT\n";
                g += "opening[lazy]: TEXT \"<tool_call>\"\n";
                g += &format!("call_body: \"\\n\" {} \"\\n</tool_call>\"\n", json_rule(&call_object_schema(&tools, "arguments"), lenient)?);
                g += "TEXT: /(.|\\n)*/\n";
            }
        }
        ToolFormat::Mistral => {
            let mark = marker(syntax.tool_calls_token, "[TOOL_CALLS]");
            if syntax.mistral_args {
                let args = marker(syntax.args_token, "[ARGS]");
                let alts: Vec<String> = (0..tools.len()).map(|i| format!("tool_{i}")).collect();
                g += &format!("calls: {mark} one{}\n", if many { format!(" ({mark} one)*") } else { String::new() });
                g += &format!("one: {}\n", alts.join(" | "));
                for (i, (name, params)) in tools.iter().enumerate() {
                    g += &format!("tool_{i}: {} {args} {}\n", lit(name), json_rule(params, lenient)?);
                }
            } else {
                let mut list = json!({"type": "array", "items": call_object_schema(&tools, "arguments"), "minItems": 1});
                if !many {
                    list["maxItems"] = json!(1);
                }
                g += &format!("calls: {mark} {}\n", json_rule(&list, lenient)?);
            }
            g = if forced {
                format!("start: calls\n{g}")
            } else if content {
                format!("start: @content | calls\n{g}")
            } else {
                // The `[TOOL_CALLS]` token may come after some text, or not at all.
                format!("start: TEXT? calls?\nTEXT: /(.|\\n)+/\n{g}")
            };
        }
        ToolFormat::Llama3 => {
            g += &format!("call: {}\n", json_rule(&call_object_schema(&tools, "parameters"), lenient)?);
            g += if many { "calls: call (\"; \" call)*\n" } else { "calls: call\n" };
            g = if forced {
                format!("start: calls\n{g}")
            } else if content {
                format!("start: @content | calls\n{g}")
            } else {
                // A call is the whole message: text that does not start with `{` is an answer.
                format!("start: (TEXT | calls)?\nTEXT: /[^{{](.|\\n)*/\n{g}")
            };
        }
    }
    Ok(g)
}
