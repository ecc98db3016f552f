//! Hugging Face chat templates, rendered as transformers' `apply_chat_template(tokenize=False)` renders
//! them: minijinja configured like transformers' jinja2 environment (`trim_blocks`, `lstrip_blocks`, loop
//! controls, `{% generation %}`, its `tojson`, `strftime_now`, `raise_exception`, Python's way of printing
//! values and Python string/dict methods), and the request prepared the way transformers prepares it.

mod clock;
mod pyvalue;

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use web_time::SystemTime;

use crate::error::{Error, Result};

/// A plain text message (convenience for callers that only have text; the
/// template itself sees OpenAI-shaped JSON messages, see [`ChatRequest`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// What a chat template renders: OpenAI-shaped messages (with `tool_calls`,
/// `role: "tool"`, ...), tools, documents and any extra template variables
/// (`enable_thinking`, ...), as transformers' `apply_chat_template` takes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub documents: Option<Vec<Value>>,
    #[serde(default = "yes")]
    pub add_generation_prompt: bool,
    /// Extra variables passed to the template as they are.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

impl ChatRequest {
    /// The shapes OpenAI's API gives these fields, checked before a template
    /// sees them (a template fed a number for a role fails in its own words,
    /// or worse renders nonsense): INVALID_REQUEST naming the field. Values a
    /// template may legitimately understand (roles, content part types) are
    /// left to it.
    pub fn validate(&self) -> Result<()> {
        let bad = |path: String, what: &str| Err(Error::InvalidRequest(format!("{path} {what}")));
        let opt_string = |m: &Map<String, Value>, key: &str, path: &str| -> Result<()> {
            match m.get(key) {
                None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
                Some(_) => bad(format!("{path}.{key}"), "must be a string"),
            }
        };
        for (i, m) in self.messages.iter().enumerate() {
            let path = format!("messages[{i}]");
            let Value::Object(m) = m else { return bad(path, "must be an object") };
            if !matches!(m.get("role"), Some(Value::String(r)) if !r.is_empty()) {
                return bad(format!("{path}.role"), "must be a non-empty string");
            }
            match m.get("content") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        match p {
                            Value::String(_) => {}
                            Value::Object(o) => {
                                if o.get("type").is_some_and(|t| t == "text") && !matches!(o.get("text"), Some(Value::String(_))) {
                                    return bad(format!("{path}.content[{j}].text"), "must be a string");
                                }
                            }
                            _ => return bad(format!("{path}.content[{j}]"), "must be a string or an object"),
                        }
                    }
                }
                Some(_) => return bad(format!("{path}.content"), "must be a string, null or an array of parts"),
            }
            opt_string(m, "name", &path)?;
            opt_string(m, "tool_call_id", &path)?;
            match m.get("tool_calls") {
                None | Some(Value::Null) => {}
                Some(Value::Array(calls)) => {
                    for (j, c) in calls.iter().enumerate() {
                        let cp = format!("{path}.tool_calls[{j}]");
                        let Some(f) = c.get("function") else { return bad(cp, "must have a function") };
                        if !matches!(f.get("name"), Some(Value::String(_))) {
                            return bad(format!("{cp}.function.name"), "must be a string");
                        }
                        if !matches!(f.get("arguments"), None | Some(Value::String(_)) | Some(Value::Object(_))) {
                            return bad(format!("{cp}.function.arguments"), "must be a JSON string or an object");
                        }
                    }
                }
                Some(_) => return bad(format!("{path}.tool_calls"), "must be an array"),
            }
        }
        for (i, t) in self.tools.iter().flatten().enumerate() {
            let name = t.get("function").and_then(|f| f.get("name")).or_else(|| t.get("name"));
            if !matches!(name, Some(Value::String(_))) {
                return bad(format!("tools[{i}].function.name"), "must be a string");
            }
        }
        for (i, d) in self.documents.iter().flatten().enumerate() {
            if !matches!(d, Value::Object(_) | Value::String(_)) {
                return bad(format!("documents[{i}]"), "must be an object or a string");
            }
        }
        Ok(())
    }

    pub fn from_messages(messages: &[ChatMessage]) -> Self {
        ChatRequest {
            messages: messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect(),
            add_generation_prompt: true,
            ..Default::default()
        }
    }
}

/// Where `strftime_now` reads the time: the current instant and the local UTC offset in seconds
/// (east positive).
type Clock = Arc<dyn Fn() -> (SystemTime, i32) + Send + Sync>;

/// How the host finds the local time zone's offset from UTC in seconds (east positive) at a moment
/// given as seconds since the Unix epoch. The core crate has no time-zone database and no browser
/// code: the browser crate installs one over `Date`, the CLI one over the OS's zone.
static LOCAL_OFFSET: std::sync::OnceLock<fn(i64) -> i32> = std::sync::OnceLock::new();

/// Install the host's local-offset function (once per process; later calls are ignored).
pub fn set_local_offset_source(f: fn(i64) -> i32) {
    let _ = LOCAL_OFFSET.set(f);
}

/// The default clock: `web_time` works natively and on wasm32 (where `std`'s clock panics); the
/// offset is the host's (see [`set_local_offset_source`]), UTC if none was installed.
fn system_clock() -> (SystemTime, i32) {
    let now = SystemTime::now();
    let secs = now.duration_since(web_time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    (now, LOCAL_OFFSET.get().map(|f| f(secs)).unwrap_or(0))
}

/// The error `raise_exception` raises, so that `render` can report the template's own message.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// Instructions a template may run per render.
const TEMPLATE_FUEL: u64 = 10_000_000;

/// Variables `render` sets itself; transformers refuses them in the extra variables (they are keyword
/// arguments of `render`, so Python raises "got multiple values").
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// A Hugging Face chat template (Jinja) rendered with minijinja and the
/// Python-compatible methods templates use (`.strip()`, `.startswith()`, ...).
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: Option<String>,
    eos: Option<String>,
}

impl ChatTemplate {
    /// Compiles the template; a template that does not compile is an
    /// `Error::Template` (the model still loads: see `ModelText`).
    /// `bos`/`eos` are the tokens the model declares; one that is `None` is left undefined in the
    /// template, as transformers does for a tokenizer without it.
    pub fn new(source: &str, bos: Option<&str>, eos: Option<&str>) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        // transformers' environment: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
        // extensions=[AssistantTracker, loopcontrols]); jinja2's default Undefined is minijinja's lenient one.
        env.set_trim_blocks(true);
        // Templates come from model files: a bounded number of instructions
        // (published ones with tools use tens of thousands) so a hostile or
        // broken one ends in a template error instead of hanging the engine.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        // Debug mode copies the template source into every error; messages here carry the line instead.
        env.set_debug(false);
        env.set_unknown_method_callback(python_methods);
        env.set_formatter(|out, _state, value| {
            // jinja2 prints `str(value)`: `True`, `None`, `{'a': 1}`, floats as Python writes them.
            out.write_str(&pyvalue::py_string(value)).map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
        });
        env.add_filter("tojson", |v: &minijinja::Value, args: Rest<minijinja::Value>, kwargs: Kwargs| pyvalue::tojson(v, args, kwargs));
        // Filters that turn values into text do it the Python way (`str()`), and `length` of an undefined
        // value is 0, as with jinja2's default Undefined.
        env.add_filter("string", |v: &minijinja::Value| pyvalue::py_string(v));
        env.add_filter("trim", pyvalue::trim);
        env.add_filter("join", pyvalue::join);
        env.add_filter("length", pyvalue::length);
        env.add_filter("count", pyvalue::length);
        env.add_function("raise_exception", |msg: Option<minijinja::Value>| -> std::result::Result<String, minijinja::Error> {
            let msg = msg.map(|m| pyvalue::py_string(&m)).unwrap_or_default();
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
        });
        env.add_template_owned("chat", generation_tags_as_blocks(source))
            .map_err(|e| Error::Template(format!("cannot parse: {e}")))?;
        let t = ChatTemplate { env, bos: bos.map(str::to_string), eos: eos.map(str::to_string) };
        Ok(t.with_clock(system_clock))
    }

    /// Sets where `strftime_now` reads the time: `now()` returns the current instant and the local UTC
    /// offset in seconds. The default is the system clock with offset 0 (UTC); hosts that know the local
    /// time zone pass it here, tests pin the date with it.
    pub fn with_clock<F>(mut self, now: F) -> Self
    where
        F: Fn() -> (SystemTime, i32) + Send + Sync + 'static,
    {
        let clock: Clock = Arc::new(now);
        self.env.add_function("strftime_now", move |fmt: String| -> String {
            let (instant, offset) = clock();
            clock::strftime(&fmt, &clock::LocalTime::from_system_time(instant, offset))
        });
        self
    }

    pub fn render(&self, req: &ChatRequest) -> Result<String> {
        req.validate()?;
        let t = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        let mut ctx: BTreeMap<String, minijinja::Value> = BTreeMap::new();
        // Special tokens first: extra variables override them, as in transformers
        // (`{**special_tokens_map, **kwargs}`).
        if let Some(bos) = &self.bos {
            ctx.insert("bos_token".into(), bos.as_str().into());
        }
        if let Some(eos) = &self.eos {
            ctx.insert("eos_token".into(), eos.as_str().into());
        }
        for (k, v) in &req.extra {
            if RESERVED.contains(&k.as_str()) {
                return Err(Error::Template(format!("extra variable '{k}' clashes with the request's own {k}")));
            }
            ctx.insert(k.clone(), minijinja::Value::from_serialize(v));
        }
        let messages: Vec<Value> = req.messages.iter().map(prepare_message).collect();
        ctx.insert("messages".into(), minijinja::Value::from_serialize(&messages));
        ctx.insert("tools".into(), minijinja::Value::from_serialize(&req.tools));
        ctx.insert("documents".into(), minijinja::Value::from_serialize(&req.documents));
        ctx.insert("add_generation_prompt".into(), req.add_generation_prompt.into());
        t.render(ctx).map_err(template_error)
    }
}

/// A render error: the template's own message for `raise_exception`, else minijinja's description
/// (with the line).
fn template_error(e: minijinja::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(Raised(msg)) = s.downcast_ref::<Raised>() {
            return Error::Template(msg.clone());
        }
        source = s.source();
    }
    Error::Template(format!("render: {e}"))
}

/// One message as transformers hands it to the template: keys whose value is null dropped (OpenAI sends
/// `content: null` next to `tool_calls`), reasoning aliased to `thinking`/`reasoning_content`, and tool-call
/// arguments sent as a JSON string (OpenAI) parsed into the object templates expect.
fn prepare_message(message: &Value) -> Value {
    let Value::Object(m) = message else { return message.clone() };
    let mut m: Map<String, Value> = m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
        for call in calls.iter_mut() {
            if let Some(Value::String(args)) = call.get("function").and_then(|f| f.get("arguments")) {
                if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(args) {
                    if let Some(f) = call.get_mut("function").and_then(Value::as_object_mut) {
                        f.insert("arguments".into(), parsed);
                    }
                }
            }
        }
    }
    // transformers' `_alias_reasoning_fields`: `{"thinking": r, **message, "reasoning_content": r}` with r the
    // first of reasoning_content / thinking / reasoning that is set.
    let reasoning = ["reasoning_content", "thinking", "reasoning"].iter().find_map(|k| m.get(*k).cloned());
    if let Some(r) = reasoning {
        let mut aliased = Map::new();
        aliased.insert("thinking".into(), r.clone());
        for (k, v) in m {
            aliased.insert(k, v);
        }
        aliased.insert("reasoning_content".into(), r);
        m = aliased;
    }
    Value::Object(m)
}

/// `{% generation %}…{% endgeneration %}` is transformers' AssistantTracker tag: it renders its body (and
/// records where it is, which plain rendering does not need). minijinja has no custom tags, so each becomes
/// an always-true `if` block with the same whitespace control, which trims and strips exactly like it.
fn generation_tags_as_blocks(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match parse_generation_tag(tag) {
            Some((len, open_mod, end, close_mod)) => {
                out.push_str("{%");
                out.push_str(open_mod);
                out.push_str(if end { " endif " } else { " if true " });
                out.push_str(close_mod);
                out.push_str("%}");
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `{%[-+]? (end)?generation [-+]?%}` at the start of `s`: (length, open modifier, is end, close modifier).
fn parse_generation_tag(s: &str) -> Option<(usize, &str, bool, &str)> {
    let body = s.strip_prefix("{%")?;
    let open_mod = if body.starts_with('-') || body.starts_with('+') { &body[..1] } else { "" };
    let body = &body[open_mod.len()..];
    let trimmed = body.trim_start();
    let (end, after) = if let Some(a) = trimmed.strip_prefix("endgeneration") {
        (true, a)
    } else if let Some(a) = trimmed.strip_prefix("generation") {
        (false, a)
    } else {
        return None;
    };
    // The keyword must end there (not `generation_prompt`).
    if after.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let after_ws = after.trim_start();
    let (close_mod, tail) = match after_ws.chars().next() {
        Some('-' | '+') => (&after_ws[..1], &after_ws[1..]),
        _ => ("", after_ws),
    };
    if !tail.starts_with("%}") {
        return None;
    }
    let len = s.len() - tail.len() + 2;
    Some((len, open_mod, end, close_mod))
}

/// Python methods templates call on values: minijinja-contrib's pycompat set, plus the ones it lacks.
fn python_methods(state: &State, value: &minijinja::Value, method: &str, args: &[minijinja::Value]) -> std::result::Result<minijinja::Value, minijinja::Error> {
    use minijinja::value::{from_args, ValueKind};
    if value.kind() == ValueKind::String {
        let s = value.as_str().unwrap_or_default();
        match method {
            "rsplit" => {
                let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
                let max = maxsplit.filter(|m| *m >= 0).map(|m| m as usize);
                let mut parts: Vec<&str> = match (sep, max) {
                    (Some(sep), Some(m)) => s.rsplitn(m + 1, sep).collect(),
                    (Some(sep), None) => s.rsplit(sep).collect(),
                    (None, _) => {
                        // Python splits on runs of whitespace, from the right; the head that is left
                        // once maxsplit is reached keeps its leading whitespace.
                        let mut parts = Vec::new();
                        let mut rest = s.trim_end();
                        while !rest.is_empty() {
                            if max == Some(parts.len()) {
                                parts.push(rest);
                                break;
                            }
                            match rest.rfind(char::is_whitespace) {
                                Some(i) => {
                                    let ws = rest[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                                    parts.push(&rest[i + ws..]);
                                    rest = rest[..i].trim_end();
                                }
                                None => {
                                    parts.push(rest);
                                    break;
                                }
                            }
                        }
                        parts
                    }
                };
                parts.reverse();
                return Ok(parts.into_iter().map(minijinja::Value::from).collect());
            }
            "partition" | "rpartition" => {
                let (sep,): (&str,) = from_args(args)?;
                let found = if method == "partition" { s.find(sep) } else { s.rfind(sep) };
                let parts = match found {
                    Some(i) => vec![&s[..i], sep, &s[i + sep.len()..]],
                    None if method == "partition" => vec![s, "", ""],
                    None => vec!["", "", s],
                };
                return Ok(parts.into_iter().map(minijinja::Value::from).collect());
            }
            "removeprefix" => {
                let (p,): (&str,) = from_args(args)?;
                return Ok(s.strip_prefix(p).unwrap_or(s).into());
            }
            "removesuffix" => {
                let (p,): (&str,) = from_args(args)?;
                return Ok(s.strip_suffix(p).unwrap_or(s).into());
            }
            "index" | "rindex" => {
                let (sub,): (&str,) = from_args(args)?;
                let found = if method == "index" { s.find(sub) } else { s.rfind(sub) };
                return match found {
                    // Python counts characters, not bytes.
                    Some(i) => Ok((s[..i].chars().count() as i64).into()),
                    None => Err(minijinja::Error::new(ErrorKind::InvalidOperation, "substring not found")),
                };
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_blocks() {
        assert_eq!(
            generation_tags_as_blocks("a{%- generation %}b{% endgeneration -%}c{% if generation_prompt %}{% endif %}"),
            "a{%- if true %}b{% endif -%}c{% if generation_prompt %}{% endif %}"
        );
        assert_eq!(generation_tags_as_blocks("{%generation%}x{%+endgeneration+%}"), "{% if true %}x{%+ endif +%}");
        assert_eq!(generation_tags_as_blocks("{% generations %}"), "{% generations %}");
    }

    #[test]
    fn openai_string_arguments_become_objects() {
        let m = serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
            {"id": "b", "function": {"name": "g", "arguments": "not json"}},
            {"id": "c", "function": {"name": "h", "arguments": "[1]"}},
        ]});
        let p = prepare_message(&m);
        assert!(p.get("content").is_none());
        assert_eq!(p["tool_calls"][0]["function"]["arguments"], serde_json::json!({"x": 1}));
        assert_eq!(p["tool_calls"][1]["function"]["arguments"], "not json");
        assert_eq!(p["tool_calls"][2]["function"]["arguments"], "[1]");
    }
}
