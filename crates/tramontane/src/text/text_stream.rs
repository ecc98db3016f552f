//! A generation's text as it streams: tokens decoded to text (whole
//! characters only), cut at the first stop string, and held back while it
//! could still become a stop string or a tool call, so that every piece sent
//! is final. `Model::generate` feeds it; the protocol (openai/) shapes what
//! comes out.

use super::tokenizer::{StreamDecoder, Tokenizer};
use super::tool_calls::{ToolCall, ToolCallStream, ToolFormat};
use crate::error::Result;

pub struct TextStream {
    decoder: StreamDecoder,
    /// The text so far (cut at a stop string).
    text: String,
    /// Bytes of `text` already given out.
    emitted: usize,
    stop: Vec<String>,
    /// Bytes at the end of the text a stop string could still claim.
    hold: usize,
    /// With tools: the call parser, and the raw text (control tokens kept)
    /// that shows where a call starts.
    tools: Option<(ToolCallStream, StreamDecoder, String)>,
}

/// A finished stream: its text (content only, when calls were made), the
/// tool calls, and the held-back text that turned out not to be a call (it
/// goes out last).
pub struct Finished {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub late_piece: Option<String>,
}

impl TextStream {
    /// A stream cut at any of `stop`; with `tools`, tool calls in that format
    /// are parsed out (their ids drawn from `seed`).
    pub fn new(stop: &[String], tools: Option<ToolFormat>, seed: u64) -> TextStream {
        TextStream {
            decoder: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            stop: stop.to_vec(),
            hold: stop.iter().map(String::len).max().unwrap_or(0),
            tools: tools.map(|f| (ToolCallStream::new(f, seed), StreamDecoder::keeping_special(), String::new())),
        }
    }

    /// Add a generated token; true when a stop string ended the text (it is
    /// cut there, the stop string excluded).
    pub fn push(&mut self, tok: &Tokenizer, token: u32) -> Result<bool> {
        self.text.push_str(&self.decoder.push(tok, token)?);
        if let Some((stream, raw_dec, raw)) = self.tools.as_mut() {
            raw.push_str(&raw_dec.push(tok, token)?);
            stream.observe(raw, &self.text);
        }
        match self.stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            Some(cut) => {
                self.text.truncate(cut);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The text that may go out now (empty while held back). `done`: no
    /// token follows, so only what may be a tool call is still held (at the
    /// end, [`TextStream::finish`] decides).
    pub fn next_piece(&mut self, done: bool) -> &str {
        let text = &self.text;
        let mut safe = if done { text.len() } else { text.len().saturating_sub(self.hold.saturating_sub(1)) };
        if let Some((stream, _, _)) = &self.tools {
            safe = safe.min(stream.safe_len(text));
        }
        while !text.is_char_boundary(safe) {
            safe -= 1;
        }
        let from = self.emitted;
        self.emitted = safe.max(from);
        &self.text[from..self.emitted]
    }

    /// The text and the tool calls the stream ends with.
    pub fn finish(self) -> Finished {
        let Some((stream, _, raw)) = &self.tools else {
            return Finished { text: self.text, tool_calls: Vec::new(), late_piece: None };
        };
        let (content, tool_calls) = stream.finish(raw, &self.text);
        // Held-back text that turned out not to be a call goes out now.
        let late_piece = (content.len() > self.emitted && content.starts_with(&self.text[..self.emitted]))
            .then(|| content[self.emitted..].to_string());
        Finished { text: content, tool_calls, late_piece }
    }
}
