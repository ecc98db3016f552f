//! Text in and out: tokenization (the `tokenizers` crate) and chat templates
//! (`minijinja`), with the special tokens the model declares.

mod chat;
pub mod gguf_tokenizer;
mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use tokenizer::{StreamDecoder, Tokenizer};
