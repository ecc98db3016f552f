//! A request's fields checked one by one (each error names its field first),
//! its missing ones taken from the model's
//! defaults, and turned into what the engine runs.

use serde_json::{Map, Value};
use web_time::{SystemTime, UNIX_EPOCH};

use super::error::ApiError;
use crate::text::{GenerationDefaults, ToolFormat};
use crate::{ChatRequest, GenerateRequest, SamplingParams};

/// What to generate from.
pub enum Prompt {
    Chat(ChatRequest),
    /// Text: the tokenizer's own BOS/EOS rule applies.
    Text(String),
    /// Token ids, used as given.
    Ids(Vec<u32>),
}

/// What the protocol needs to know of the model.
#[derive(Clone)]
pub struct ModelFacts {
    /// The model's recommended sampling (a request's missing fields).
    pub defaults: GenerationDefaults,
    /// The format tool calls are parsed in (the template's, else Hermes).
    pub tool_format: ToolFormat,
    /// The context window, in tokens.
    pub context: usize,
    /// The model takes images (content parts of type `image_url`).
    pub images: bool,
}

/// An image part of a chat request: its URL (`data:`, `http(s):`, or what
/// the transport understands) and where it was, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    pub url: String,
    pub message: usize,
    pub part: usize,
}

impl ImageRef {
    /// `messages[i].content[j]`, as errors name it.
    pub fn what(&self) -> String {
        format!("messages[{}].content[{}]", self.message, self.part)
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
    /// `stream_options.include_usage`, where the request says (the
    /// transport decides otherwise: [`super::Answer::new`]).
    pub include_usage: Option<bool>,
    pub logprobs: Logprobs,
    /// The chat's image parts in order (the transport turns them into
    /// pictures: [`crate::Model::prompt_images`]).
    pub images: Vec<ImageRef>,
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

/// A message's content as the template sees it: a string, or the text parts
/// of a list joined; where the list has images, the parts in order as
/// `{"type": "text", "text"}` and `{"type": "image"}` (the published
/// templates write an image token for each), the images' URLs going to
/// `images`. Other parts, and images for a model that takes none
/// (`takes_images`), are refused by index.
fn content(c: &Value, i: usize, takes_images: bool, images: &mut Vec<ImageRef>) -> Result<Value, ApiError> {
    let bad = |msg: String| ApiError::bad("messages", msg);
    match c {
        Value::Null | Value::String(_) => Ok(c.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            let mut out = Vec::with_capacity(parts.len());
            let first_image = images.len();
            for (j, p) in parts.iter().enumerate() {
                let text = match p {
                    Value::String(t) => t,
                    Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                        Some("text") => match o.get("text") {
                            Some(Value::String(t)) => t,
                            _ => return Err(bad(format!("messages[{i}].content[{j}].text must be a string"))),
                        },
                        Some("image_url") => {
                            if !takes_images {
                                return Err(bad(format!("messages[{i}].content[{j}]: this model takes no images (it has no vision encoder)")));
                            }
                            // `{"url": ...}` as OpenAI sends it, or the bare string.
                            let url = match o.get("image_url") {
                                Some(Value::String(u)) => u,
                                Some(Value::Object(u)) => match u.get("url") {
                                    Some(Value::String(u)) => u,
                                    _ => return Err(bad(format!("messages[{i}].content[{j}].image_url.url must be a string"))),
                                },
                                _ => return Err(bad(format!("messages[{i}].content[{j}].image_url must be an object with a url"))),
                            };
                            if images.len() >= crate::vision::MAX_IMAGES {
                                return Err(bad(format!("messages[{i}].content[{j}]: more than {} images in one request", crate::vision::MAX_IMAGES)));
                            }
                            images.push(ImageRef { url: url.clone(), message: i, part: j });
                            out.push(serde_json::json!({"type": "image"}));
                            continue;
                        }
                        other => {
                            return Err(bad(format!(
                                "messages[{i}].content[{j}]: content of type {} is not supported (text{})",
                                other.unwrap_or("?"),
                                if takes_images { " and image_url" } else { " only" }
                            )))
                        }
                    },
                    _ => return Err(bad(format!("messages[{i}].content[{j}] must be a string or an object"))),
                };
                s.push_str(text);
                out.push(serde_json::json!({"type": "text", "text": text}));
            }
            Ok(if images.len() > first_image { Value::Array(out) } else { Value::String(s) })
        }
        _ => Err(bad(format!("messages[{i}].content must be a string, null or an array of parts"))),
    }
}

/// What the chat template renders for a chat request `body`: the messages
/// with their content flattened, the tools `tool_choice` leaves (none: no
/// tools; a named one: only it), `documents` and `chat_template_kwargs`.
pub fn chat_request(body: &Value) -> Result<ChatRequest, ApiError> {
    let Value::Object(req) = body else { return Err(ApiError::bad("body", "the request must be a JSON object")) };
    Ok(chat_fields(req, true)?.0)
}

/// The opening of conversations to come, to run into the KV cache ahead of
/// them (the `prefill` load option): a chat request's `messages` (none, or
/// a system prompt, or a few turns ending before a user's), `tools`,
/// `tool_choice`, `documents` and `chat_template_kwargs`, checked as a
/// request's are; any other field, or an image, is INVALID_REQUEST naming
/// it under `prefill`.
pub fn conversation_start(body: &Value) -> Result<ChatRequest, ApiError> {
    let in_prefill = |e: ApiError| ApiError { param: e.param.map(|p| format!("prefill.{p}")), ..e };
    let Value::Object(req) = body else { return Err(ApiError::bad("prefill", "prefill must be an object ({messages, tools, ...})")) };
    const FIELDS: [&str; 5] = ["messages", "tools", "tool_choice", "documents", "chat_template_kwargs"];
    if let Some(k) = req.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad(&format!("prefill.{k}"), format!("prefill takes {} only, not {k:?}", FIELDS.join(", "))));
    }
    let mut req = req.clone();
    // No messages: the template's own opening (a default system prompt).
    let none = Value::Array(Vec::new());
    let messages = req.get("messages").unwrap_or(&none).clone();
    let Value::Array(mut messages) = messages else { return Err(ApiError::bad("prefill.messages", "prefill.messages must be an array")) };
    // A user's turn stands in for the one to come, so that every check
    // applies; it is taken off again.
    messages.push(serde_json::json!({"role": "user", "content": ""}));
    req.insert("messages".into(), Value::Array(messages));
    let (mut chat, _) = chat_fields(&req, false).map_err(in_prefill)?;
    chat.messages.pop();
    Ok(chat)
}

fn chat_fields(req: &Map<String, Value>, takes_images: bool) -> Result<(ChatRequest, Vec<ImageRef>), ApiError> {
    let messages = match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(ApiError::bad("messages", "messages must be a non-empty array")),
    };
    let mut out = Vec::with_capacity(messages.len());
    let mut images = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(o) = m else { return Err(ApiError::bad("messages", format!("messages[{i}] must be an object"))) };
        let mut o = o.clone();
        if let Some(c) = o.get("content") {
            let c = content(c, i, takes_images, &mut images)?;
            o.insert("content".into(), c);
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
    let add_generation_prompt = boolean(req, "add_generation_prompt")?.unwrap_or(true);
    let chat = ChatRequest { messages: out, tools, documents, add_generation_prompt, extra };
    chat.validate()?;
    Ok((chat, images))
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
    let (prompt, images) = if chat {
        let (c, images) = chat_fields(req, facts.images)?;
        (Prompt::Chat(c), images)
    } else {
        (completion_prompt(req)?, Vec::new())
    };
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
    let constraint = super::constraint::request_constraint(req, tools).map_err(|b| ApiError::bad(b.field, b.message))?;
    let d = &facts.defaults;
    // Both checked; OpenAI's newer name wins where both are given.
    let max_tokens = int(req, "max_tokens", 1, u32::MAX as u64)?;
    let max_tokens = int(req, "max_completion_tokens", 1, u32::MAX as u64)?.or(max_tokens);
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
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => boolean(o, "include_usage").map_err(|_| ApiError::bad("stream_options", "stream_options.include_usage must be true or false"))?,
        Some(_) => return Err(ApiError::bad("stream_options", "stream_options must be an object")),
    };
    // `logprobs: true` with `top_logprobs` (0..20): the chat form (in
    // completions too, as the JS API has it); completions' `logprobs: N`:
    // OpenAI's legacy form with N alternatives.
    let (logprobs, top) = match req.get("logprobs") {
        Some(Value::Number(_)) if !chat => match int(req, "logprobs", 0, 20)? {
            Some(n) => (Logprobs::Legacy, n as u32),
            None => (Logprobs::None, 0),
        },
        _ => {
            let on = boolean(req, "logprobs").map_err(|e| if chat { e } else { ApiError::bad("logprobs", "logprobs must be true, false or an integer from 0 to 20") })?;
            let top = int(req, "top_logprobs", 0, 20)?.unwrap_or(0) as u32;
            (if on == Some(true) { Logprobs::Chat } else { Logprobs::None }, top)
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
        images: Vec::new(),
    };
    Ok(Parsed { prompt, gen, stream, include_usage, logprobs, images })
}

/// A request that gives no `max_tokens` gets this many.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// A request without a seed gets one drawn from the clock and a counter.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Image parts reach the template as `{"type": "image"}` among the text
    /// parts, their URLs in order with where they were; text-only content
    /// stays a string; a model without images refuses them by index.
    #[test]
    fn image_parts_become_template_parts_and_refs() {
        let facts = |images| ModelFacts { defaults: Default::default(), tool_format: ToolFormat::Hermes, context: 64, images };
        let body = json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image_url", "image_url": {"url": "data:a"}},
                                          "and", {"type": "image_url", "image_url": "https://b"}]},
        ]});
        let p = parse(&body, true, &facts(true)).unwrap();
        let Prompt::Chat(c) = &p.prompt else { panic!("a chat") };
        assert_eq!(c.messages[0]["content"], json!("Be brief."));
        assert_eq!(c.messages[1]["content"], json!([{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]));
        assert_eq!(p.images, vec![ImageRef { url: "data:a".into(), message: 1, part: 1 }, ImageRef { url: "https://b".into(), message: 1, part: 3 }]);
        let e = parse(&body, true, &facts(false)).err().expect("refused");
        assert!(e.message.contains("messages[1].content[1]") && e.message.contains("takes no images"), "{}", e.message);
        let bad = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}]});
        assert!(parse(&bad, true, &facts(true)).err().expect("refused").message.contains("image_url.url"));
    }

    /// A conversation's opening: no messages, or the first ones, with the
    /// fields a template renders; anything else, or an image, is refused
    /// under `prefill`.
    #[test]
    fn a_conversation_start_takes_the_fields_a_template_renders() {
        let c = conversation_start(&json!({})).unwrap();
        assert!(c.messages.is_empty() && c.tools.is_none());
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let c = conversation_start(&json!({"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}], "tools": tools,
                                           "chat_template_kwargs": {"enable_thinking": false}})).unwrap();
        assert_eq!(c.messages, vec![json!({"role": "system", "content": "Be brief."})]);
        assert_eq!(c.tools.as_deref(), tools.as_array().map(Vec::as_slice));
        assert_eq!(c.extra["enable_thinking"], json!(false));
        let param = |body: Value| conversation_start(&body).err().expect("refused").param;
        assert_eq!(param(json!("Be brief.")).as_deref(), Some("prefill"));
        assert_eq!(param(json!({"messages": [], "temperature": 0})).as_deref(), Some("prefill.temperature"));
        assert_eq!(param(json!({"messages": {}})).as_deref(), Some("prefill.messages"));
        assert_eq!(param(json!({"tools": 3})).as_deref(), Some("prefill.tools"));
        let image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a"}}]}]});
        assert!(conversation_start(&image).err().expect("refused").message.contains("takes no images"));
    }

    #[test]
    fn chat_requests_keep_add_generation_prompt_and_check_both_token_limits() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        assert!(chat_request(&json!({"messages": msgs})).unwrap().add_generation_prompt);
        assert!(!chat_request(&json!({"messages": msgs, "add_generation_prompt": false})).unwrap().add_generation_prompt);
        assert_eq!(chat_request(&json!({"messages": msgs, "add_generation_prompt": 1})).unwrap_err().param.as_deref(), Some("add_generation_prompt"));
        let facts = ModelFacts { defaults: Default::default(), tool_format: ToolFormat::Hermes, context: 64, images: false };
        let p = parse(&json!({"prompt": "x", "max_tokens": 5, "max_completion_tokens": 7}), false, &facts).unwrap();
        assert_eq!(p.gen.max_tokens, 7, "the newer name wins");
        let bad = parse(&json!({"prompt": "x", "max_tokens": 0, "max_completion_tokens": 7}), false, &facts).err().map(|e| e.param);
        assert_eq!(bad, Some(Some("max_tokens".into())), "both are checked");
    }
}
