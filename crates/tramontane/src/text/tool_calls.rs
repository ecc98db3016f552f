//! Tool calls in generated text, turned back into OpenAI's `tool_calls`.
//! Each model family writes calls its own way; the format is read off the
//! chat template (the template that renders calls for the model is what
//! taught it to write them):
//! - Mistral: `[TOOL_CALLS]` (a control token) then either a JSON list
//!   `[{"name", "arguments", "id"?}]` (v3 / Nemo) or `name[ARGS]{...}`
//!   repeated (Small 3.2, Devstral, Ministral);
//! - Hermes / Qwen: `<tool_call>{"name", "arguments"}</tool_call>`, after
//!   optional content;
//! - Llama 3.1+: the whole message is `{"name", "parameters"}` (optionally
//!   after `<|python_tag|>`, several separated by `;`).
//!
//! While a call might be starting, streamed text is held back, so a client
//! never sees half a call as content.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolFormat {
    Mistral,
    Hermes,
    Llama3,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

impl ToolCall {
    /// OpenAI's shape: `{id, type: "function", function: {name, arguments}}`.
    pub fn to_openai(&self) -> Value {
        serde_json::json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}})
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_MARK: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const LLAMA_TAG: &str = "<|python_tag|>";

impl ToolFormat {
    /// The format a chat template renders tool calls in, if it renders any.
    pub fn detect(template_source: &str) -> Option<ToolFormat> {
        if template_source.contains(MISTRAL_MARK) {
            Some(ToolFormat::Mistral)
        } else if template_source.contains(HERMES_OPEN) {
            Some(ToolFormat::Hermes)
        } else if template_source.contains("<|start_header_id|>") && template_source.contains("\"parameters\"") {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }
}

/// Follows a generation token by token: `raw` is the text with special
/// tokens kept, `visible` the text a client sees.
#[derive(Debug)]
pub struct ToolCallStream {
    format: ToolFormat,
    /// Byte offset in the visible text where a call began (content ends there).
    call_at: Option<usize>,
    seed: u64,
}

impl ToolCallStream {
    pub fn new(format: ToolFormat, seed: u64) -> Self {
        ToolCallStream { format, call_at: None, seed }
    }

    /// Look at the texts after a new token.
    pub fn observe(&mut self, raw: &str, visible: &str) {
        if self.call_at.is_some() {
            return;
        }
        self.call_at = match self.format {
            // The marker is a control token: it shows in the raw text only, and
            // the call starts where the visible text stood when it came.
            ToolFormat::Mistral => raw.contains(MISTRAL_MARK).then_some(visible.len()),
            ToolFormat::Hermes => visible.find(HERMES_OPEN),
            ToolFormat::Llama3 => {
                let t = raw.trim_start();
                (t.starts_with(LLAMA_TAG) || t.starts_with('{')).then_some(0)
            }
        };
    }

    /// How much of `visible` may be streamed now: not a call, nor the start
    /// of what could become one.
    pub fn safe_len(&self, visible: &str) -> usize {
        if let Some(at) = self.call_at {
            // Content before a call is trimmed (see `finish`).
            return visible[..at.min(visible.len())].trim_end().len();
        }
        match self.format {
            ToolFormat::Mistral => visible.len(),
            // Trailing whitespace too: content before a call is trimmed.
            ToolFormat::Hermes => visible[..visible.len() - partial_suffix(visible, HERMES_OPEN)].trim_end().len(),
            // Until the first visible character shows it is not JSON.
            ToolFormat::Llama3 => {
                if visible.trim_start().is_empty() {
                    0
                } else {
                    visible.len()
                }
            }
        }
    }

    /// Split a finished generation into content and calls. Text that looked
    /// like a call but does not parse stays content, so nothing is lost.
    pub fn finish(&self, raw: &str, visible: &str) -> (String, Vec<ToolCall>) {
        let Some(at) = self.call_at else { return (visible.to_string(), Vec::new()) };
        let content = visible[..at.min(visible.len())].to_string();
        let calls = match self.format {
            ToolFormat::Mistral => raw.find(MISTRAL_MARK).map(|i| parse_mistral(&raw[i..])).unwrap_or_default(),
            ToolFormat::Hermes => parse_hermes(&visible[at.min(visible.len())..]),
            ToolFormat::Llama3 => parse_llama3(raw.trim_start()),
        };
        match calls {
            Some(c) if !c.is_empty() => (content.trim_end().to_string(), self.with_ids(c)),
            _ => (visible.to_string(), Vec::new()),
        }
    }

    fn with_ids(&self, calls: Vec<(Option<String>, String, Value)>) -> Vec<ToolCall> {
        calls
            .into_iter()
            .enumerate()
            .map(|(i, (id, name, args))| ToolCall {
                id: id.unwrap_or_else(|| call_id(self.seed, i as u64)),
                name,
                arguments: args.to_string(),
            })
            .collect()
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

/// A 9-character alphanumeric id: the form Mistral's templates require (and
/// any other template accepts).
fn call_id(seed: u64, i: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seed ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..9)
        .map(|_| {
            // splitmix64 steps: ids differ between calls and requests.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ALPHABET[((z ^ (z >> 31)) % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

type Parsed = Option<Vec<(Option<String>, String, Value)>>;

/// `{"name": ..., "arguments"|"parameters": {...}}` (arguments may also be a
/// JSON string holding an object).
fn call_object(v: &Value) -> Option<(Option<String>, String, Value)> {
    let o = v.as_object()?;
    let name = o.get("name")?.as_str()?.to_string();
    let args = match o.get("arguments").or_else(|| o.get("parameters")) {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(v) => v.clone(),
        None => Value::Object(Map::new()),
    };
    Some((o.get("id").and_then(Value::as_str).map(String::from), name, args))
}

/// JSON values one after another (`{..}{..}`, `{..}; {..}`): each parsed in turn.
fn json_values(mut s: &str, sep: char) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start().trim_start_matches(sep).trim_start();
        if s.is_empty() {
            return Some(out);
        }
        let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
        let v = it.next()?.ok()?;
        out.push(v);
        s = &s[it.byte_offset()..];
    }
}

fn parse_mistral(raw: &str) -> Parsed {
    let mut calls = Vec::new();
    for part in raw.split(MISTRAL_MARK).map(str::trim).filter(|p| !p.is_empty()) {
        let part = strip_end_tokens(part);
        if part.starts_with('[') || part.starts_with('{') {
            for v in json_values(part, ',')? {
                match v {
                    Value::Array(a) => calls.extend(a.iter().map(call_object).collect::<Option<Vec<_>>>()?),
                    v => calls.push(call_object(&v)?),
                }
            }
        } else {
            // name[ARGS]{json}, possibly several in one part.
            let mut rest = part;
            while let Some(i) = rest.find(MISTRAL_ARGS) {
                let name = rest[..i].trim().to_string();
                let after = &rest[i + MISTRAL_ARGS.len()..];
                let mut it = serde_json::Deserializer::from_str(after).into_iter::<Value>();
                let args = it.next()?.ok()?;
                calls.push((None, name, args));
                rest = after[it.byte_offset()..].trim_start();
            }
            if !rest.trim().is_empty() {
                return None;
            }
        }
    }
    Some(calls)
}

fn parse_hermes(text: &str) -> Parsed {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(HERMES_OPEN) {
        let body = &rest[i + HERMES_OPEN.len()..];
        let (inner, next) = match body.find(HERMES_CLOSE) {
            Some(j) => (&body[..j], &body[j + HERMES_CLOSE.len()..]),
            None => (body, ""),
        };
        // One call, or (SmolLM2's training format) a list of them.
        match serde_json::from_str::<Value>(inner.trim()).ok()? {
            Value::Array(a) => calls.extend(a.iter().map(call_object).collect::<Option<Vec<_>>>()?),
            v => calls.push(call_object(&v)?),
        }
        rest = next;
    }
    Some(calls)
}

fn parse_llama3(raw: &str) -> Parsed {
    let body = strip_end_tokens(raw.strip_prefix(LLAMA_TAG).unwrap_or(raw));
    json_values(body, ';')?.iter().map(call_object).collect()
}

/// Control tokens that may close a message in the raw text.
fn strip_end_tokens(s: &str) -> &str {
    let mut s = s.trim();
    for end in ["</s>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>"] {
        s = s.strip_suffix(end).unwrap_or(s).trim_end();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: ToolFormat, raw_pieces: &[&str], visible_pieces: &[&str]) -> (String, Vec<ToolCall>, String) {
        let mut s = ToolCallStream::new(format, 7);
        let (mut raw, mut vis, mut streamed) = (String::new(), String::new(), 0usize);
        for (r, v) in raw_pieces.iter().zip(visible_pieces) {
            raw.push_str(r);
            vis.push_str(v);
            s.observe(&raw, &vis);
            streamed = streamed.max(s.safe_len(&vis));
        }
        let (content, calls) = s.finish(&raw, &vis);
        (content, calls, vis[..streamed].to_string())
    }

    #[test]
    fn mistral_json_list() {
        let raw = ["[TOOL_CALLS]", "[{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Paris\"}}]", "</s>"];
        let vis = ["", "[{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Paris\"}}]", ""];
        let (content, calls, streamed) = run(ToolFormat::Mistral, &raw, &vis);
        assert_eq!(content, "");
        assert_eq!(streamed, "");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[0].id.len(), 9);
        assert!(calls[0].id.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn mistral_args_form_two_calls() {
        let raw = ["[TOOL_CALLS]", "add[ARGS]{\"a\": 1, \"b\": 2}", "[TOOL_CALLS]", "mul[ARGS]{\"a\": 3}"];
        let vis = ["", "add{\"a\": 1, \"b\": 2}", "", "mul{\"a\": 3}"];
        let (_, calls, _) = run(ToolFormat::Mistral, &raw, &vis);
        let names: Vec<_> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["add", "mul"]);
        assert_eq!(calls[1].arguments, r#"{"a":3}"#);
        assert_ne!(calls[0].id, calls[1].id);
    }

    #[test]
    fn hermes_after_content_and_held_back() {
        let pieces = ["Let me check.", "\n<tool", "_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"é\"}}\n</tool_call>"];
        let (content, calls, streamed) = run(ToolFormat::Hermes, &pieces, &pieces);
        assert_eq!(content, "Let me check.");
        assert_eq!(streamed, "Let me check.");
        assert_eq!(calls[0].name, "f");
        assert_eq!(calls[0].arguments, r#"{"x":"é"}"#);
    }

    #[test]
    fn llama3_json_and_plain_text() {
        let pieces = ["{\"name\": \"search\", \"parameters\": {\"q\": \"rust\"}}"];
        let (content, calls, streamed) = run(ToolFormat::Llama3, &pieces, &pieces);
        assert_eq!((content.as_str(), streamed.as_str()), ("", ""));
        assert_eq!(calls[0].arguments, r#"{"q":"rust"}"#);
        // Text that starts like JSON but is not a call stays content.
        let pieces = ["{not json", " at all"];
        let (content, calls, _) = run(ToolFormat::Llama3, &pieces, &pieces);
        assert_eq!(content, "{not json at all");
        assert!(calls.is_empty());
        // Ordinary answers stream at once.
        let pieces = ["Hello", " there"];
        let (content, calls, streamed) = run(ToolFormat::Llama3, &pieces, &pieces);
        assert_eq!((content.as_str(), streamed.as_str(), calls.len()), ("Hello there", "Hello there", 0));
    }

    #[test]
    fn hermes_list_inside_one_tag() {
        let pieces = ["<tool_call>[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": \"{\\\"k\\\": 1}\"}]</tool_call>"];
        let (content, calls, _) = run(ToolFormat::Hermes, &pieces, &pieces);
        assert_eq!(content, "");
        assert_eq!(calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(calls[1].arguments, r#"{"k":1}"#);
    }

    #[test]
    fn hermes_broken_call_stays_content() {
        let pieces = ["<tool_call>{\"name\": oops</tool_call>"];
        let (content, calls, _) = run(ToolFormat::Hermes, &pieces, &pieces);
        assert!(calls.is_empty());
        assert_eq!(content, pieces[0]);
    }

    #[test]
    fn formats_from_templates() {
        assert_eq!(ToolFormat::detect("{{ '[TOOL_CALLS]' }}"), Some(ToolFormat::Mistral));
        assert_eq!(ToolFormat::detect("<tool_call>\n{{ tool_call | tojson }}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::detect("<|start_header_id|> {\"name\": , \"parameters\": }"), Some(ToolFormat::Llama3));
        assert_eq!(ToolFormat::detect("{{ messages }}"), None);
    }
}
