//! Text in and out: tokenization (the `tokenizers` crate) and chat templates
//! (`minijinja`), with the special tokens the model declares.

mod chat;
pub(crate) mod model_text;
pub mod gguf_tokenizer;
pub mod spm_model;
pub mod tekken;
pub mod text_stream;
mod tokenizer;
pub mod tool_calls;

pub use chat::{set_local_offset_source, ChatMessage, ChatRequest, ChatTemplate};
pub use model_text::{GenerationDefaults, ModelText};
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use tool_calls::{ToolCall, ToolFormat};
