//! OpenAI's request and response shapes: a request's fields checked one by one
//! (the same rules as the JS API's `samplingParams`), then turned into a
//! [`GenerateRequest`]; a [`Generation`] turned into `chat.completion` /
//! `text_completion` objects and their stream chunks; errors in OpenAI's
//! `{"error": {message, type, param, code}}` shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tramontane::{ChatRequest, Error, GenerateRequest, Generation, SamplingParams};

use super::engine::{Logprob, ModelFacts, Prompt};

/// An HTTP error with OpenAI's body. `code` is the engine's error code where
/// the engine refused (CONTEXT_OVERFLOW, INVALID_REQUEST, ...).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: Some("INVALID_REQUEST".into()),
        }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, kind) = match &e {
            // What the request asked for: the client's to change.
            Error::InvalidRequest(_) | Error::ContextOverflow { .. } | Error::Template(_) | Error::Unsupported(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        ApiError { status, message: e.to_string(), kind, param: None, code: Some(e.code().into()) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// How the response reports log-probabilities.
#[derive(Clone, Copy, PartialEq)]
pub enum Logprobs {
    None,
    /// `choices[].logprobs.content[]` (chat).
    Chat,
    /// `tokens` / `token_logprobs` / `top_logprobs` / `text_offset` (completions).
    Legacy,
}

/// A checked request.
pub struct Parsed {
    pub prompt: Prompt,
    pub gen: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: Logprobs,
}

fn is_int(v: &Value) -> bool {
    v.as_u64().is_some() || v.as_i64().is_some()
}

/// `req[name]` as a finite number, if present and not null.
fn num(req: &Map<String, Value>, name: &str, ok: impl Fn(f64) -> bool, what: &str) -> Result<Option<f64>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && ok(x) => Ok(Some(x)),
            _ => Err(ApiError::bad(name, format!("{name} {what}"))),
        },
    }
}

fn int(req: &Map<String, Value>, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if is_int(v) && (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::bad(name, format!("{name} must be an integer from {min} to {max}"))),
        },
    }
}

fn boolean(req: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(name, format!("{name} must be true or false"))),
    }
}

/// Text of a message's content: a string, or the text parts of a list (as
/// the JS API does; other parts are not something this engine reads).
fn content_text(c: &Value, i: usize) -> Result<Value, ApiError> {
    match c {
        Value::Null | Value::String(_) => Ok(c.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p {
                    Value::String(t) => s.push_str(t),
                    Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                        Some("text") => match o.get("text") {
                            Some(Value::String(t)) => s.push_str(t),
                            _ => return Err(ApiError::bad("messages", format!("messages[{i}].content[{j}].text must be a string"))),
                        },
                        other => {
                            return Err(ApiError::bad(
                                "messages",
                                format!("messages[{i}].content[{j}]: content of type {} is not supported (text only)", other.unwrap_or("?")),
                            ))
                        }
                    },
                    _ => return Err(ApiError::bad("messages", format!("messages[{i}].content[{j}] must be a string or an object"))),
                }
            }
            Ok(Value::String(s))
        }
        _ => Err(ApiError::bad("messages", format!("messages[{i}].content must be a string, null or an array of parts"))),
    }
}

/// What a chat template renders: the messages with their content flattened,
/// the tools `tool_choice` leaves (none: no tools; a named one: only it).
fn chat_request(req: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let messages = match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(ApiError::bad("messages", "messages must be a non-empty array")),
    };
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(o) = m else { return Err(ApiError::bad("messages", format!("messages[{i}] must be an object"))) };
        let mut o = o.clone();
        if let Some(c) = o.get("content") {
            let flat = content_text(c, i)?;
            o.insert("content".into(), flat);
        }
        out.push(Value::Object(o));
    }
    let mut tools = match req.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(t)) if t.is_empty() => None,
        Some(Value::Array(t)) => Some(t.clone()),
        Some(_) => return Err(ApiError::bad("tools", "tools must be an array")),
    };
    match req.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => tools = None,
        Some(Value::String(s)) if s == "auto" || s == "required" => {}
        Some(Value::Object(c)) => {
            let name = c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            let Some(name) = name else { return Err(ApiError::bad("tool_choice", "tool_choice.function.name must be a string")) };
            let named: Vec<Value> = tools
                .iter()
                .flatten()
                .filter(|t| t.get("function").and_then(|f| f.get("name")).or_else(|| t.get("name")).and_then(Value::as_str) == Some(name))
                .cloned()
                .collect();
            if named.is_empty() {
                return Err(ApiError::bad("tool_choice", format!("tool_choice names {name:?}, which is not in tools")));
            }
            tools = Some(named);
        }
        Some(_) => return Err(ApiError::bad("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\"}}")),
    }
    let documents = match req.get("documents") {
        None | Some(Value::Null) => None,
        Some(Value::Array(d)) => Some(d.clone()),
        Some(_) => return Err(ApiError::bad("documents", "documents must be an array")),
    };
    let extra = match req.get("chat_template_kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(k)) => k.clone(),
        Some(_) => return Err(ApiError::bad("chat_template_kwargs", "chat_template_kwargs must be an object")),
    };
    let chat = ChatRequest { messages: out, tools, documents, add_generation_prompt: true, extra };
    chat.validate()?;
    Ok(chat)
}

fn completion_prompt(req: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let bad = || ApiError::bad("prompt", "prompt must be a string, an array of token ids, or a list holding one of those");
    let ids = |a: &[Value]| -> Option<Vec<u32>> { a.iter().map(|x| x.as_u64().filter(|&i| i < 1 << 32).map(|i| i as u32)).collect() };
    match req.get("prompt") {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => ids(a).map(Prompt::Ids).ok_or_else(bad),
        // One prompt in a list (OpenAI allows several: one answer each; n = 1 here).
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            Value::Array(inner) if !inner.is_empty() => ids(inner).map(Prompt::Ids).ok_or_else(bad),
            _ => Err(bad()),
        },
        Some(Value::Array(a)) if a.len() > 1 && !a.iter().all(Value::is_number) => {
            Err(ApiError::bad("prompt", "one prompt per request (a list of several prompts is not supported)"))
        }
        _ => Err(bad()),
    }
}

/// Check every field of a request and build what the engine runs.
pub fn parse(body: &Value, chat: bool, facts: &ModelFacts) -> Result<Parsed, ApiError> {
    let Value::Object(req) = body else { return Err(ApiError::bad("body", "the request body must be a JSON object")) };
    let prompt = if chat { Prompt::Chat(chat_request(req)?) } else { completion_prompt(req)? };
    // Fields this engine cannot honour are refused, not ignored.
    if int(req, "n", 1, 1).is_err() {
        return Err(ApiError::bad("n", "n must be 1 (one choice per request)"));
    }
    if int(req, "best_of", 1, 1).is_err() {
        return Err(ApiError::bad("best_of", "best_of must be 1"));
    }
    if boolean(req, "echo")? == Some(true) {
        return Err(ApiError::bad("echo", "echo is not supported"));
    }
    if req.get("logit_bias").is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty()) && !b.is_null()) {
        return Err(ApiError::bad("logit_bias", "logit_bias is not supported"));
    }
    // What the output must be: response_format (and our regex / grammar
    // extensions), tool calls forced or checked. Compiled on the model's
    // thread before the answer starts, so a schema that does not compile is a 400.
    let tools = match &prompt {
        Prompt::Chat(c) => c.tools.as_deref(),
        _ => None,
    };
    let constraint = tramontane::constrain::openai::request_constraint(req, tools).map_err(|b| ApiError::bad(b.field, b.message))?;
    let d = &facts.defaults;
    let max_tokens = match int(req, "max_completion_tokens", 1, u32::MAX as u64)? {
        Some(n) => Some(n),
        None => int(req, "max_tokens", 1, u32::MAX as u64)?,
    };
    let temperature = num(req, "temperature", |x| x >= 0.0, "must be a number >= 0")?.map(|x| x as f32).or(d.temperature).unwrap_or(1.0);
    let top_p = num(req, "top_p", |x| x > 0.0 && x <= 1.0, "must be a number in (0, 1]")?.map(|x| x as f32).or(d.top_p).unwrap_or(1.0);
    let top_k = int(req, "top_k", 0, u32::MAX as u64)?.map(|x| x as u32).or(d.top_k).unwrap_or(0);
    let repetition_penalty =
        num(req, "repetition_penalty", |x| x > 0.0, "must be a number > 0")?.map(|x| x as f32).or(d.repetition_penalty).unwrap_or(1.0);
    let frequency_penalty = num(req, "frequency_penalty", |_| true, "must be a finite number")?.unwrap_or(0.0) as f32;
    let presence_penalty = num(req, "presence_penalty", |_| true, "must be a finite number")?.unwrap_or(0.0) as f32;
    let seed = match req.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ApiError::bad("seed", "seed must be an integer >= 0"))?),
    };
    let stop = match req.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
        Some(_) => return Err(ApiError::bad("stop", "stop must be a string or an array of strings")),
    };
    let ignore_eos = boolean(req, "ignore_eos")?.unwrap_or(false);
    let stream = boolean(req, "stream")?.unwrap_or(false);
    let include_usage = match req.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => boolean(o, "include_usage").map_err(|_| ApiError::bad("stream_options", "stream_options.include_usage must be true or false"))?.unwrap_or(false),
        Some(_) => return Err(ApiError::bad("stream_options", "stream_options must be an object")),
    };
    // Chat: `logprobs: true` with `top_logprobs` (0..20); completions: `logprobs: N`.
    let (logprobs, top) = if chat {
        let on = boolean(req, "logprobs")?.unwrap_or(false);
        let top = int(req, "top_logprobs", 0, 20)?.unwrap_or(0) as u32;
        (if on { Logprobs::Chat } else { Logprobs::None }, top)
    } else {
        match int(req, "logprobs", 0, 20)? {
            Some(n) => (Logprobs::Legacy, n as u32),
            None => (Logprobs::None, 0),
        }
    };
    let sampling = SamplingParams {
        temperature,
        top_p,
        top_k,
        repetition_penalty,
        frequency_penalty,
        presence_penalty,
        seed: seed.unwrap_or_else(random_seed),
    };
    sampling.validate()?;
    let tools = matches!(&prompt, Prompt::Chat(c) if c.tools.is_some());
    let gen = GenerateRequest {
        sampling,
        max_tokens: max_tokens.map(|n| n as usize).unwrap_or(DEFAULT_MAX_TOKENS),
        stop,
        ignore_eos,
        top_logits: 0,
        logprobs: (logprobs != Logprobs::None).then_some(top),
        tools: if tools { Some(facts.tool_format) } else { None },
        constraint,
    };
    Ok(Parsed { prompt, gen, stream, include_usage, logprobs })
}

/// As the JS API: a request that gives no `max_tokens` gets this many.
pub const DEFAULT_MAX_TOKENS: usize = 256;

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// One response's identity, shared by its chunks.
pub struct Head {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub chat: bool,
}

impl Head {
    pub fn new(chat: bool, model: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{created:x}{n:x}", if chat { "chatcmpl" } else { "cmpl" });
        Head { id, created, model: model.to_string(), chat }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("object".into(), self.object(chunk).into());
        m.insert("created".into(), self.created.into());
        m.insert("model".into(), self.model.clone().into());
        m.insert("choices".into(), choices);
        m
    }

    /// A stream chunk carrying a piece of text (and its log-probability).
    pub fn piece(&self, piece: &str, first: bool, lp: Option<&Logprob>, mode: Logprobs, offset: usize) -> Value {
        let logprobs = lp.map(|l| logprobs_json(std::slice::from_ref(l), mode, offset)).unwrap_or(Value::Null);
        let choice = if self.chat {
            let delta = if first { json!({"role": "assistant", "content": piece}) } else { json!({"content": piece}) };
            json!({"index": 0, "delta": delta, "finish_reason": null, "logprobs": logprobs})
        } else {
            json!({"index": 0, "text": piece, "finish_reason": null, "logprobs": logprobs})
        };
        Value::Object(self.wrap(true, json!([choice])))
    }

    /// The closing chunks: tool calls (if any), the finish reason, usage.
    pub fn finish_chunks(&self, g: &Generation, first: bool, usage: Option<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        if !g.tool_calls.is_empty() {
            let calls: Vec<Value> = g
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = c.to_openai();
                    if let Value::Object(o) = &mut v {
                        o.insert("index".into(), i.into());
                    }
                    v
                })
                .collect();
            let mut delta = json!({"tool_calls": calls});
            if first {
                delta["role"] = "assistant".into();
            }
            out.push(Value::Object(self.wrap(true, json!([{"index": 0, "delta": delta, "finish_reason": null, "logprobs": null}]))));
        }
        let last = if self.chat {
            json!({"index": 0, "delta": {}, "finish_reason": g.finish.as_str(), "logprobs": null})
        } else {
            json!({"index": 0, "text": "", "finish_reason": g.finish.as_str(), "logprobs": null})
        };
        out.push(Value::Object(self.wrap(true, json!([last]))));
        if let Some(u) = usage {
            let mut m = self.wrap(true, json!([]));
            m.insert("usage".into(), u);
            out.push(Value::Object(m));
        }
        out
    }

    /// The whole response of a request that did not stream.
    pub fn complete(&self, g: &Generation, lps: &[Logprob], mode: Logprobs, usage: Value) -> Value {
        let logprobs = if mode == Logprobs::None { Value::Null } else { logprobs_json(lps, mode, 0) };
        let choice = if self.chat {
            let message = if g.tool_calls.is_empty() {
                json!({"role": "assistant", "content": g.text})
            } else {
                let calls: Vec<Value> = g.tool_calls.iter().map(|c| c.to_openai()).collect();
                json!({"role": "assistant", "content": if g.text.is_empty() { Value::Null } else { g.text.clone().into() }, "tool_calls": calls})
            };
            json!({"index": 0, "message": message, "finish_reason": g.finish.as_str(), "logprobs": logprobs})
        } else {
            json!({"index": 0, "text": g.text, "finish_reason": g.finish.as_str(), "logprobs": logprobs})
        };
        let mut m = self.wrap(false, json!([choice]));
        m.insert("usage".into(), usage);
        // Ours: the generated ids (the JS API's `token_ids`).
        m.insert("token_ids".into(), json!(g.generated));
        Value::Object(m)
    }
}

/// Usage as the JS API reports it (OpenAI's three counts, then ours in `extra`).
pub fn usage(g: &Generation, ttft: f64, e2e: f64) -> Value {
    let mut u = json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.generated.len(),
        "total_tokens": g.prompt_tokens + g.generated.len(),
        "extra": {
            "prefilled_tokens": g.prefilled_tokens,
            "prefill_tokens_per_s": g.prefill_tokens_per_s(),
            "decode_tokens_per_s": g.decode_tokens_per_s(),
            "time_to_first_token_s": ttft,
            "e2e_latency_s": e2e,
        },
    });
    // The constraint's costs: compiling it (or the cache) and masks per token.
    if let Some(c) = &g.constraint {
        u["extra"]["constraint"] = c.to_json();
    }
    u
}

fn logprobs_json(lps: &[Logprob], mode: Logprobs, offset: usize) -> Value {
    match mode {
        Logprobs::None => Value::Null,
        Logprobs::Chat => {
            let entry = |t: &str, lp: f32| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()});
            let content: Vec<Value> = lps
                .iter()
                .map(|l| {
                    let mut e = entry(&l.token, l.logprob);
                    e["top_logprobs"] = l.top.iter().map(|(t, v)| entry(t, *v)).collect();
                    e
                })
                .collect();
            json!({"content": content})
        }
        Logprobs::Legacy => {
            let mut at = offset;
            let mut offsets = Vec::new();
            for l in lps {
                offsets.push(at);
                at += l.token.len();
            }
            json!({
                "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
                "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, v)| (t.clone(), json!(v))).collect::<Map<_, _>>()).collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }
}
