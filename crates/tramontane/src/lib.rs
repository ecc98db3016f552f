//! tramontane: Mistral-family language models on WebGPU.
//!
//! The data path, one module per step:
//! [`source`] (bytes by range) → [`parse`] (config, tensor tables) →
//! [`upload`] (weights streamed into GPU buffers) → [`forward`] (WGSL kernels
//! from `shaders/`, recorded once) → [`sample`] (on the GPU) → [`model`]
//! (generation loop, streaming text through [`text`]).
//! Nothing here depends on the browser: the wasm crate adds a `fetch` source
//! and the JS API around the same engine.

pub mod constrain;
pub mod error;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod model;
pub mod openai;
pub mod parse;
pub mod sample;
pub mod source;
pub mod text;
pub mod upload;
pub mod vision;

pub use constrain::{Constraint, ConstraintStats, ToolChoice, ToolConstraint};
pub use error::{Error, Result};
pub use gpu::{Gpu, KernelShape};
pub use model::{FinishReason, GenerateRequest, Generation, ImageTiming, KvCache, LoadOptions, Model, ModelInfo, PromptImage, TokenLogprob, VisionInfo};
pub use sample::SamplingParams;
pub use text::{ChatMessage, ChatRequest, ChatTemplate, GenerationDefaults, ModelText, Tokenizer, ToolCall, ToolFormat};
