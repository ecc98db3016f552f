//! OpenAI's protocol, once for every front end (`tramontane serve` today):
//! a request's fields checked one by one (the same rules and messages as the
//! JS API's `samplingParams`), defaults from the model, then turned into a
//! [`GenerateRequest`]; a [`Generation`] turned into `chat.completion` /
//! `text_completion` objects and their stream chunks; errors in OpenAI's
//! `{"error": {message, type, param, code}}` shape with their HTTP status.
//! No transport here: the caller sends what these build.

mod constraint;
mod error;
mod request;
mod response;

pub use constraint::{request_constraint, tool_choice, BadField};
pub use error::{status, ApiError};
pub use request::{parse, Logprobs, ModelFacts, Parsed, Prompt, DEFAULT_MAX_TOKENS};
pub use response::{usage, Head, Logprob};
