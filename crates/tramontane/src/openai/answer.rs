//! One request's answer, shaped as the tokens come: the chunks a stream sends
//! at each token and at the end, or the single response of a request that
//! does not stream, with its usage and timings. `tramontane serve` and the
//! npm package (through the wasm crate) both answer with it, so the two send
//! the same objects.

use serde_json::Value;
use web_time::Instant;

use super::request::{Logprobs, Parsed};
use super::response::{usage, Head, Logprob};
use crate::Generation;

pub struct Answer {
    head: Head,
    mode: Logprobs,
    stream: bool,
    /// Whether the stream's closing chunks end with the usage.
    include_usage: bool,
    /// No chunk has been sent yet (the first carries the role).
    first: bool,
    /// Bytes of text so far (the completions' `text_offset`).
    offset: usize,
    /// Kept for the response of a request that does not stream.
    logprobs: Vec<Logprob>,
    started: Instant,
    first_token: Option<Instant>,
}

impl Answer {
    /// The answer to `p`, whose handling began at `started` (the time to
    /// the first token counts from there). A stream whose request does not
    /// say `stream_options.include_usage` ends with the usage where
    /// `usage_by_default` (the npm package's rule; OpenAI's server: not).
    pub fn new(head: Head, p: &Parsed, usage_by_default: bool, started: Instant) -> Answer {
        Answer {
            head,
            mode: p.logprobs,
            stream: p.stream,
            include_usage: p.include_usage.unwrap_or(usage_by_default),
            first: true,
            offset: 0,
            logprobs: Vec::new(),
            started,
            first_token: None,
        }
    }

    /// A generated piece of text (empty while a stop string or a tool call
    /// is held back) and its log-probability, if asked for: the chunk to send
    /// now when streaming and there is something to say.
    pub fn token(&mut self, piece: &str, logprob: Option<Logprob>) -> Option<Value> {
        self.first_token.get_or_insert_with(Instant::now);
        if !self.stream {
            self.logprobs.extend(logprob);
            return None;
        }
        if piece.is_empty() && logprob.is_none() {
            return None;
        }
        let chunk = self.head.piece(piece, self.first, logprob.as_ref(), self.mode, self.offset);
        self.offset += piece.len();
        self.first = false;
        Some(chunk)
    }

    fn usage(&self, g: &Generation) -> Value {
        let ttft = self.first_token.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64();
        usage(g, ttft, self.started.elapsed().as_secs_f64())
    }

    /// What ends the answer: a stream's closing chunks (tool calls, the
    /// finish reason, the usage if asked for), or the whole response of a
    /// request that did not stream (one object).
    pub fn end(self, g: &Generation) -> Vec<Value> {
        if self.stream {
            let usage = self.include_usage.then(|| self.usage(g));
            self.head.finish_chunks(g, self.first, usage)
        } else {
            vec![self.head.complete(g, &self.logprobs, self.mode, self.usage(g))]
        }
    }

    pub fn streams(&self) -> bool {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse, ModelFacts};
    use crate::{FinishReason, TokenLogprob};
    use serde_json::json;

    fn facts() -> ModelFacts {
        ModelFacts { defaults: Default::default(), tool_format: crate::text::ToolFormat::Hermes, context: 64, images: false }
    }

    fn generation(text: &str) -> Generation {
        Generation {
            prompt_tokens: 2,
            prefilled_tokens: 2,
            generated: vec![5, 6],
            text: text.into(),
            tool_calls: Vec::new(),
            finish: FinishReason::Length,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            top_logits: Vec::new(),
            logprobs: Vec::new(),
            constraint: None,
        }
    }

    fn lp(id: u32) -> Logprob {
        Logprob::of(&TokenLogprob { id, logprob: -0.5, top: vec![(id, -0.5), (9, -2.0)] }, |i| format!("t{i}"))
    }

    #[test]
    fn a_stream_sends_pieces_then_the_finish_and_usage_by_the_transport_s_rule() {
        let p = parse(&json!({"prompt": [1, 2], "stream": true, "logprobs": true, "top_logprobs": 1}), false, &facts()).unwrap();
        for (by_default, chunks_at_end) in [(true, 2), (false, 1)] {
            let mut a = Answer::new(Head::new(false, "m"), &p, by_default, Instant::now());
            let c = a.token("ab", Some(lp(5))).expect("a chunk");
            assert_eq!(c["choices"][0]["text"], "ab");
            assert_eq!(c["choices"][0]["logprobs"]["content"][0]["id"], 5);
            assert_eq!(c["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "t9");
            assert!(a.token("", None).is_none(), "nothing to say: no chunk");
            let end = a.end(&generation("ab"));
            assert_eq!(end.len(), chunks_at_end);
            assert_eq!(end[0]["choices"][0]["finish_reason"], "length");
            if by_default {
                assert_eq!(end[1]["usage"]["completion_tokens"], 2);
            }
        }
        // Said explicitly, the request wins over the transport's default.
        let p = parse(&json!({"prompt": [1], "stream": true, "stream_options": {"include_usage": false}}), false, &facts()).unwrap();
        let a = Answer::new(Head::new(false, "m"), &p, true, Instant::now());
        assert_eq!(a.end(&generation("")).len(), 1);
    }

    #[test]
    fn a_plain_request_gets_one_response_with_its_logprobs() {
        let p = parse(&json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true}), true, &facts()).unwrap();
        let mut a = Answer::new(Head::new(true, "m"), &p, true, Instant::now());
        assert!(a.token("x", Some(lp(5))).is_none());
        assert!(a.token("y", Some(lp(6))).is_none());
        let end = a.end(&generation("xy"));
        assert_eq!(end.len(), 1);
        let r = &end[0];
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["choices"][0]["message"]["content"], "xy");
        assert_eq!(r["choices"][0]["logprobs"]["content"].as_array().map(Vec::len), Some(2));
        assert_eq!(r["token_ids"], json!([5, 6]));
        // Completions with `logprobs: N` keep OpenAI's legacy form.
        let p = parse(&json!({"prompt": "hi", "logprobs": 1}), false, &facts()).unwrap();
        let mut a = Answer::new(Head::new(false, "m"), &p, true, Instant::now());
        a.token("x", Some(lp(5)));
        let r = &a.end(&generation("x"))[0];
        assert_eq!(r["choices"][0]["logprobs"]["tokens"], json!(["t5"]));
    }
}
