//! A [`Generation`] as `chat.completion` / `text_completion` objects and their
//! stream chunks, usage and log-probabilities.

use serde_json::{json, Map, Value};
use web_time::{SystemTime, UNIX_EPOCH};

use super::request::Logprobs;
use crate::{Generation, TokenLogprob};

/// A generated token's log-probability, with texts for the API (and ids:
/// ours, in the chat form's entries).
pub struct Logprob {
    pub id: u32,
    pub token: String,
    pub logprob: f32,
    /// The most likely tokens: (id, text, log-probability).
    pub top: Vec<(u32, String, f32)>,
}

impl Logprob {
    /// The engine's log-probability of token `id`, with each token's text
    /// from `text_of` (the tokenizer's decoding of that one id).
    pub fn of(l: &TokenLogprob, text_of: impl Fn(u32) -> String) -> Logprob {
        Logprob { id: l.id, token: text_of(l.id), logprob: l.logprob, top: l.top.iter().map(|&(i, v)| (i, text_of(i), v)).collect() }
    }
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
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
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
        // Ours: the generated ids.
        m.insert("token_ids".into(), json!(g.generated));
        Value::Object(m)
    }
}

/// Usage: OpenAI's three counts, then ours in `extra`.
pub fn usage(g: &Generation, ttft: f64, e2e: f64) -> Value {
    let mut u = json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.generated.len(),
        "total_tokens": g.prompt_tokens + g.generated.len(),
        // OpenAI's count of prompt tokens served from its cache: here the
        // KV cache's (an earlier turn, a `prefill` at load).
        "prompt_tokens_details": {"cached_tokens": g.prompt_tokens.saturating_sub(g.prefilled_tokens)},
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
            let entry = |id: u32, t: &str, lp: f32| json!({"token": t, "id": id, "logprob": lp, "bytes": t.as_bytes()});
            let content: Vec<Value> = lps
                .iter()
                .map(|l| {
                    let mut e = entry(l.id, &l.token, l.logprob);
                    e["top_logprobs"] = l.top.iter().map(|(i, t, v)| entry(*i, t, *v)).collect();
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
                "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(_, t, v)| (t.clone(), json!(v))).collect::<Map<_, _>>()).collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }
}
