//! One error type for the whole engine. Every variant says what was wrong and
//! where (file, tensor, URL), and maps to a stable code the JS API exposes.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A file the model needs is absent (`what` says why it was wanted).
    MissingFile { file: String, what: String },
    /// Reading a file failed (I/O or transport).
    Io { file: String, msg: String },
    /// A network request failed with an HTTP status (0 = no response).
    Network { url: String, status: u16, msg: String },
    /// A file is malformed: bad JSON, bad header, a length that lies.
    Format { file: String, msg: String },
    /// A tensor is missing, mis-shaped, mis-typed or out of the file's range.
    Tensor { file: String, tensor: String, msg: String },
    /// The model or a request asks for something this engine does not do.
    Unsupported(String),
    /// The prompt (with what the request would generate) does not fit the context.
    ContextOverflow { tokens: usize, context: usize },
    Tokenizer(String),
    Template(String),
    /// The GPU reported an error (validation, shader compilation, ...).
    Gpu(String),
    OutOfMemory(String),
    DeviceLost(String),
    Aborted,
    /// A request's parameters are invalid.
    InvalidRequest(String),
    /// An invariant of the engine itself failed (a bug, not bad input): the
    /// message says which, for a bug report.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable machine-readable code (the JS `Error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingFile { .. } | Error::Format { .. } | Error::Tensor { .. } => {
                "MODEL_FORMAT"
            }
            Error::Io { .. } | Error::Network { .. } => "NETWORK",
            Error::Unsupported(_) => "UNSUPPORTED",
            Error::ContextOverflow { .. } => "CONTEXT_OVERFLOW",
            Error::Tokenizer(_) | Error::Template(_) => "MODEL_FORMAT",
            Error::Gpu(_) => "GPU",
            Error::OutOfMemory(_) => "OUT_OF_MEMORY",
            Error::DeviceLost(_) => "DEVICE_LOST",
            Error::Aborted => "ABORTED",
            Error::InvalidRequest(_) => "INVALID_REQUEST",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub(crate) fn format(file: &str, msg: impl Into<String>) -> Self {
        Error::Format { file: file.to_string(), msg: msg.into() }
    }

    pub(crate) fn tensor(file: &str, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor { file: file.to_string(), tensor: tensor.to_string(), msg: msg.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingFile { file, what } => write!(f, "{file}: file not found ({what})"),
            Error::Io { file, msg } => write!(f, "{file}: {msg}"),
            Error::Network { url, status, msg } => {
                if *status == 0 {
                    write!(f, "{url}: {msg}")
                } else {
                    write!(f, "{url}: HTTP {status} {msg}")
                }
            }
            Error::Format { file, msg } => write!(f, "{file}: {msg}"),
            Error::Tensor { file, tensor, msg } => write!(f, "{file}: tensor `{tensor}`: {msg}"),
            Error::Unsupported(msg) => write!(f, "unsupported: {msg}"),
            Error::ContextOverflow { tokens, context } => write!(
                f,
                "{tokens} tokens do not fit the context window of {context} tokens"
            ),
            Error::Tokenizer(msg) => write!(f, "tokenizer: {msg}"),
            Error::Template(msg) => write!(f, "chat template: {msg}"),
            Error::Gpu(msg) => write!(f, "GPU error: {msg}"),
            Error::OutOfMemory(msg) => write!(f, "out of GPU memory: {msg}"),
            Error::DeviceLost(msg) => write!(f, "GPU device lost: {msg}"),
            Error::Aborted => write!(f, "aborted"),
            Error::InvalidRequest(msg) => write!(f, "invalid request: {msg}"),
            Error::Internal(msg) => write!(f, "internal error (please report it): {msg}"),
        }
    }
}

impl std::error::Error for Error {}
