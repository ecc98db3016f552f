//! Images in the prompt (Mistral Small 3.x, Pixtral): the checkpoint's image
//! side (`config`), pixels as its processor makes them (`preprocess`), where
//! the image rows go among the tokens (`layout`), and, natively, decoding
//! image files (`decode`; the browser decodes with its own decoder).

pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod decode;
pub mod layout;
pub mod preprocess;

pub use config::{Act, Projector, VisionConfig};
pub use layout::ImageTokens;
pub use preprocess::{Picture, Pixels, Processor};

/// Whether a tensor (by its canonical name, parse/hf.rs) belongs to the image
/// side: the encoder or the projector.
pub fn is_image_side(name: &str) -> bool {
    name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.")
}
