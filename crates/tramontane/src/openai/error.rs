//! Errors in OpenAI's `{"error": {message, type, param, code}}` shape, with
//! the HTTP status a server answers them with.

use serde_json::{json, Value};

use crate::Error;

/// HTTP statuses the protocol answers with.
pub mod status {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const NOT_FOUND: u16 = 404;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
}

/// An error with OpenAI's body and its HTTP status. `code` is the engine's
/// error code where the engine refused (CONTEXT_OVERFLOW, INVALID_REQUEST, ...).
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: status::BAD_REQUEST,
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
                (status::BAD_REQUEST, "invalid_request_error")
            }
            _ => (status::INTERNAL_SERVER_ERROR, "server_error"),
        };
        ApiError { status, message: e.to_string(), kind, param: None, code: Some(e.code().into()) }
    }
}
