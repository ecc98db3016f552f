//! A request's constraint read from OpenAI's fields, the same way for
//! `tramontane serve` and the npm package:
//! - `response_format`: `{type: "text"}`, `{type: "json_object"}`,
//!   `{type: "json_schema", json_schema: {name, schema, strict}}`;
//! - extensions: `regex` (a regex the whole output matches), `grammar` (a
//!   grammar in llguidance's Lark syntax; llama.cpp's GBNF is refused, naming
//!   it), and llama.cpp's top-level `json_schema` (a schema);
//! - `tools` with `tool_choice` (`"auto"`, `"required"`, `{type: "function",
//!   function: {name}}`; `"none"` offers none) and `parallel_tool_calls`.

use serde_json::{Map, Value};

use crate::constrain::{Constraint, ToolChoice, ToolConstraint};

/// A field that is not what OpenAI's API (or our extension) says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BadField {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadField {
    BadField { field, message: message.into() }
}

fn present<'a>(req: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    req.get(name).filter(|v| !v.is_null())
}

/// The answer's format: `response_format`, or one of the extension fields.
fn answer_format(req: &Map<String, Value>) -> Result<Option<Constraint>, BadField> {
    let mut found: Vec<(&'static str, Constraint)> = Vec::new();
    if let Some(f) = present(req, "response_format") {
        let Value::Object(f) = f else { return Err(bad("response_format", "response_format must be an object")) };
        match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => found.push(("response_format", Constraint::JsonObject)),
            Some("json_schema") => {
                let Some(Value::Object(js)) = f.get("json_schema") else {
                    return Err(bad("response_format", "response_format.json_schema must be an object {name, schema, strict}"));
                };
                if let Some(n) = js.get("name").filter(|n| !n.is_null()) {
                    let ok = n.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
                    if !ok {
                        return Err(bad("response_format", "response_format.json_schema.name must be a-z, A-Z, 0-9, '_' or '-', at most 64 characters"));
                    }
                }
                if js.get("strict").is_some_and(|s| !s.is_null() && !s.is_boolean()) {
                    return Err(bad("response_format", "response_format.json_schema.strict must be true or false"));
                }
                let schema = match js.get("schema") {
                    // OpenAI's default: an empty schema, any JSON value.
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(s @ (Value::Object(_) | Value::Bool(_))) => s.clone(),
                    Some(_) => return Err(bad("response_format", "response_format.json_schema.schema must be a JSON Schema object")),
                };
                found.push(("response_format", Constraint::JsonSchema(schema)));
            }
            Some("regex") => match f.get("regex").and_then(Value::as_str) {
                Some(r) => found.push(("response_format", Constraint::Regex(r.to_string()))),
                None => return Err(bad("response_format", "response_format {type: \"regex\"} needs `regex`, a string")),
            },
            Some("grammar") | Some("lark") => match f.get("grammar").and_then(Value::as_str) {
                Some(g) => found.push(("response_format", Constraint::Lark(g.to_string()))),
                None => return Err(bad("response_format", "response_format {type: \"grammar\"} needs `grammar`, a string")),
            },
            other => {
                return Err(bad(
                    "response_format",
                    format!(
                        "response_format.type must be \"text\", \"json_object\", \"json_schema\" (or our \"regex\", \"grammar\"), not {}",
                        other.map(|s| format!("{s:?}")).unwrap_or_else(|| "missing".into())
                    ),
                ))
            }
        }
    }
    if let Some(r) = present(req, "regex") {
        let r = r.as_str().ok_or_else(|| bad("regex", "regex must be a string"))?;
        found.push(("regex", Constraint::Regex(r.to_string())));
    }
    if let Some(g) = present(req, "grammar") {
        let g = g.as_str().ok_or_else(|| bad("grammar", "grammar must be a string (llguidance's Lark syntax)"))?;
        found.push(("grammar", Constraint::Lark(g.to_string())));
    }
    if let Some(s) = present(req, "json_schema") {
        if !(s.is_object() || s.is_boolean()) {
            return Err(bad("json_schema", "json_schema must be a JSON Schema object"));
        }
        found.push(("json_schema", Constraint::JsonSchema(s.clone())));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
        return Err(bad(found[1].0, format!("give one output format, not several ({})", names.join(", "))));
    }
    Ok(found.pop().map(|(_, c)| c))
}

/// The request's `tool_choice`: `None` for "none" (no tools offered).
pub fn tool_choice(req: &Map<String, Value>) -> Result<Option<ToolChoice>, BadField> {
    Ok(match present(req, "tool_choice") {
        None => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "auto" => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Required),
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::Object(c)) => match c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_string())),
            None => return Err(bad("tool_choice", "tool_choice.function.name must be a string")),
        },
        Some(_) => {
            return Err(bad("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\"}}"))
        }
    })
}

/// What a request's output must be. `tools`: the tools the template is
/// given (after `tool_choice` left out or picked some). With tools the
/// constraint is the tool calls (forced by `required` or a named function;
/// with `auto`, a call the model opens must be valid and anything else
/// follows the answer format); without, the answer format alone.
pub fn request_constraint(req: &Map<String, Value>, tools: Option<&[Value]>) -> Result<Option<Constraint>, BadField> {
    let format = answer_format(req)?;
    let parallel = match present(req, "parallel_tool_calls") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("parallel_tool_calls", "parallel_tool_calls must be true or false")),
    };
    let choice = tool_choice(req)?;
    let tools = tools.filter(|t| !t.is_empty());
    match (tools, choice) {
        (Some(t), Some(choice)) => {
            if format.is_some() && choice != ToolChoice::Auto {
                // A forced call has no answer for the format to shape.
                return Ok(Some(Constraint::Tools(ToolConstraint { tools: t.to_vec(), choice, parallel, content: None })));
            }
            Ok(Some(Constraint::Tools(ToolConstraint { tools: t.to_vec(), choice, parallel, content: format.map(Box::new) })))
        }
        (None, Some(ToolChoice::Required)) => Err(bad("tool_choice", "tool_choice \"required\" needs tools")),
        (None, Some(ToolChoice::Named(n))) => Err(bad("tool_choice", format!("tool_choice names {n:?}, but the request has no tools"))),
        _ => Ok(format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(v: Value) -> Result<Option<Constraint>, BadField> {
        let m = v.as_object().cloned().unwrap_or_default();
        let tools = m.get("tools").and_then(Value::as_array).cloned();
        request_constraint(&m, tools.as_deref())
    }

    #[test]
    fn formats() {
        assert_eq!(of(json!({})), Ok(None));
        assert_eq!(of(json!({"response_format": {"type": "text"}})), Ok(None));
        assert_eq!(of(json!({"response_format": {"type": "json_object"}})), Ok(Some(Constraint::JsonObject)));
        let s = json!({"type": "object"});
        assert_eq!(
            of(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}}})),
            Ok(Some(Constraint::JsonSchema(s.clone())))
        );
        assert_eq!(of(json!({"regex": "a+"})), Ok(Some(Constraint::Regex("a+".into()))));
        assert_eq!(of(json!({"grammar": "start: \"x\""})), Ok(Some(Constraint::Lark("start: \"x\"".into()))));
        assert_eq!(of(json!({"json_schema": s})), Ok(Some(Constraint::JsonSchema(s))));
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(of(json!({"response_format": {"type": "xml"}})).unwrap_err().field, "response_format");
        assert_eq!(of(json!({"response_format": {"type": "json_schema"}})).unwrap_err().field, "response_format");
        assert_eq!(of(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}})).unwrap_err().field, "response_format");
        assert_eq!(of(json!({"response_format": "json"})).unwrap_err().field, "response_format");
        assert_eq!(of(json!({"regex": 5})).unwrap_err().field, "regex");
        assert_eq!(of(json!({"regex": "a", "grammar": "start: \"a\""})).unwrap_err().field, "grammar");
        assert_eq!(of(json!({"tool_choice": "required"})).unwrap_err().field, "tool_choice");
        assert_eq!(of(json!({"tool_choice": 3, "tools": [{"type": "function", "function": {"name": "f"}}]})).unwrap_err().field, "tool_choice");
    }

    #[test]
    fn tools_shape_the_constraint() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let c = of(json!({"tools": tools, "tool_choice": "required", "parallel_tool_calls": false})).unwrap().unwrap();
        let Constraint::Tools(t) = c else { panic!("tools") };
        assert_eq!((t.choice, t.parallel, t.content), (ToolChoice::Required, false, None));
        let c = of(json!({"tools": tools, "response_format": {"type": "json_object"}})).unwrap().unwrap();
        let Constraint::Tools(t) = c else { panic!("tools") };
        assert_eq!((t.choice, t.content), (ToolChoice::Auto, Some(Box::new(Constraint::JsonObject))));
        assert_eq!(of(json!({"tools": tools, "tool_choice": "none", "regex": "x"})), Ok(Some(Constraint::Regex("x".into()))));
    }
}
