//! OpenAI's protocol, once for every front end (`tramontane serve`, and the
//! npm package's engines through the wasm crate): a request's fields checked
//! one by one, defaults from the model, then turned into a
//! [`GenerateRequest`]; the answer ([`Answer`]) shaped as `chat.completion` /
//! `text_completion` objects or their stream chunks as tokens come; errors in
//! OpenAI's `{"error": {message, type, param, code}}` shape with their HTTP
//! status. No transport here: the caller sends what these build.

mod answer;
mod constraint;
mod error;
mod request;
mod response;

pub use answer::Answer;
pub use constraint::{request_constraint, tool_choice, BadField};
pub use error::{status, ApiError};
pub use request::{chat_request, conversation_start, parse, ImageRef, Logprobs, ModelFacts, Parsed, Prompt, DEFAULT_MAX_TOKENS};
pub use response::{usage, Head, Logprob};
