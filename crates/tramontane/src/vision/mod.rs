//! Images in the prompt (Mistral Small 3.x, Pixtral): the checkpoint's image
//! side (`config`), pixels as its processor makes them (`preprocess`), where
//! the image rows go among the tokens (`layout`), and, natively, decoding
//! image files (`decode`; the browser decodes with its own decoder).

pub mod config;
mod data_url;
#[cfg(not(target_arch = "wasm32"))]
pub mod decode;
pub mod layout;
pub mod preprocess;

pub use config::{Act, Projector, VisionConfig};
pub use data_url::data_url;
pub use layout::ImageTokens;
pub use preprocess::{Picture, Pixels, Processor};


/// Most images one request may carry.
pub const MAX_IMAGES: usize = 16;
/// Most pixels of one image, checked from its header before it is decoded
/// (a decoded image takes 4 bytes a pixel: 64 MiB at this limit).
pub const MAX_PIXELS: u64 = 4096 * 4096;
