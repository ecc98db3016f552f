//! llama.cpp's `mmproj` GGUF: the image side of a vision model in a file of
//! its own, beside the text model's GGUF (`general.architecture` `clip`,
//! `clip.projector_type` `pixtral` for both Pixtral 12B and Mistral Small
//! 3.x). Its metadata becomes a [`VisionConfig`] and its tensors join the
//! text model's table under the names transformers gives them, so the
//! planner and the encoder serve both formats alike.
//!
//! What the file does not say is taken where transformers takes it: the image
//! token from the text model's vocabulary (`[IMG]`), the projector's RMSNorm
//! epsilon from the text model, the longest image side from the encoder's
//! `image_size` (what the published processors use). The converter permutes
//! the encoder's q/k rows as it does the text model's (adjacent RoPE pairs):
//! the encoder rotates that layout (`rope_interleaved`).

use super::gguf::{GgufHeader, MetaValue};
use super::TensorTable;
use crate::error::{Error, Result};
use crate::vision::preprocess::Processor;
use crate::vision::{config, Act, Projector, VisionConfig};

/// Pixtral's encoder normalizes with this epsilon (hard-coded in
/// transformers; the encoder's kernels use it).
const ENCODER_EPS: f64 = 1e-5;

/// The `[IMG_BREAK]` row of the text model's embeddings, copied into the file
/// for llama.cpp's own use: the text model's embedding serves here.
const IMG_BREAK_ROW: &str = "v.token_embd.img_break";

/// The transformers name of an mmproj tensor (as parse/hf.rs keys them), or
/// `None` for a name the Pixtral encoder does not have.
pub fn canonical_name(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let mapped = match stem {
        "v.patch_embd" => "vision_tower.patch_conv".to_string(),
        "v.pre_ln" => "vision_tower.ln_pre".to_string(),
        "mm.input_norm" => "multi_modal_projector.norm".to_string(),
        "mm.patch_merger" => "multi_modal_projector.patch_merger.merging_layer".to_string(),
        "mm.1" => "multi_modal_projector.linear_1".to_string(),
        "mm.2" => "multi_modal_projector.linear_2".to_string(),
        _ => {
            let rest = stem.strip_prefix("v.blk.")?;
            let (layer, what) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let what = match what {
                "attn_q" => "attention.q_proj",
                "attn_k" => "attention.k_proj",
                "attn_v" => "attention.v_proj",
                "attn_out" => "attention.o_proj",
                "ln1" => "attention_norm",
                "ln2" => "ffn_norm",
                "ffn_gate" => "feed_forward.gate_proj",
                "ffn_up" => "feed_forward.up_proj",
                "ffn_down" => "feed_forward.down_proj",
                _ => return None,
            };
            format!("vision_tower.transformer.layers.{layer}.{what}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

/// The text model's facts an mmproj needs.
pub struct TextSide {
    /// The text model's width (the projector's output).
    pub hidden: usize,
    /// The text model's RMSNorm epsilon (Mistral 3's projector norm uses it).
    pub rms_eps: f32,
    /// `[IMG]` in the text model's vocabulary.
    pub image_token_id: Option<u32>,
}

/// vision/config.rs's bounds, for GGUF's u64 metadata.
const MAX_WIDTH: u64 = config::MAX_WIDTH as u64;
const MAX_LAYERS: u64 = config::MAX_LAYERS as u64;
const MAX_PATCH: u64 = config::MAX_PATCH as u64;
const MAX_IMAGE: u64 = config::MAX_IMAGE as u64;

/// The image side described by an mmproj's header `h` (read from `file`).
pub fn vision_config(h: &GgufHeader, file: &str, text: &TextSide) -> Result<VisionConfig> {
    let fmt = |msg: String| Error::format(file, msg);
    match h.get("general.architecture").and_then(MetaValue::as_str) {
        Some("clip") => {}
        Some(other) => return Err(fmt(format!("general.architecture is `{other}`: not an mmproj file (`clip`)"))),
        None => return Err(fmt("no general.architecture: not an mmproj file".into())),
    }
    if h.get("clip.has_vision_encoder").and_then(MetaValue::as_bool) == Some(false) {
        return Err(Error::Unsupported(format!("{file}: an mmproj without a vision encoder (audio only)")));
    }
    match h.get("clip.projector_type").or_else(|| h.get("clip.vision.projector_type")).and_then(MetaValue::as_str) {
        Some("pixtral") => {}
        Some(other) => return Err(Error::Unsupported(format!("{file}: mmproj projector `{other}` (only Pixtral's: Pixtral 12B, Mistral Small 3.x)"))),
        None => return Err(fmt("no clip.projector_type".into())),
    }
    let num = |key: &str, max: u64| -> Result<usize> {
        h.get(key)
            .and_then(MetaValue::as_u64)
            .filter(|&v| v > 0 && v <= max)
            .map(|v| v as usize)
            .ok_or_else(|| fmt(format!("`{key}` is missing or not an integer from 1 to {max}")))
    };
    let hidden = num("clip.vision.embedding_length", MAX_WIDTH)?;
    let n_heads = num("clip.vision.attention.head_count", MAX_WIDTH)?;
    if hidden % n_heads != 0 {
        return Err(fmt("clip.vision.embedding_length is not a multiple of its heads".into()));
    }
    let head_dim = hidden / n_heads;
    if head_dim % 4 != 0 || head_dim > 256 {
        return Err(Error::Unsupported(format!("{file}: vision head_dim {head_dim} (a multiple of 4, at most 256)")));
    }
    let projection = num("clip.vision.projection_dim", MAX_WIDTH)?;
    if projection != text.hidden {
        return Err(Error::InvalidRequest(format!(
            "{file} projects images to width {projection}, the text model is {} wide: not this model's mmproj",
            text.hidden
        )));
    }
    if let Some(eps) = h.get("clip.vision.attention.layer_norm_epsilon").and_then(MetaValue::as_f64) {
        if (eps - ENCODER_EPS).abs() > 1e-9 {
            return Err(Error::Unsupported(format!("{file}: encoder norm epsilon {eps} (Pixtral's is 1e-5)")));
        }
    }
    let act = match (h.get("clip.use_silu").and_then(MetaValue::as_bool), h.get("clip.use_gelu").and_then(MetaValue::as_bool)) {
        (Some(true), _) => Act::Silu,
        (_, Some(true)) => Act::Gelu,
        // clip.cpp's default for a pixtral projector without either flag.
        _ => Act::Gelu,
    };
    let has = |name: &str| h.tensors.iter().any(|t| t.name == name);
    let projector = if has("mm.patch_merger.weight") {
        let merge = num("clip.vision.spatial_merge_size", 8)?;
        Projector::Mistral3 { merge }
    } else {
        Projector::Llava
    };
    let patch = num("clip.vision.patch_size", MAX_PATCH)?;
    let image_size = num("clip.vision.image_size", MAX_IMAGE)?;
    let merge = match projector {
        Projector::Mistral3 { merge } => merge,
        Projector::Llava => 1,
    };
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match h.get(key).and_then(MetaValue::as_array) {
            None => Ok(default),
            Some(a) if a.len() == 3 && a.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
            }
            Some(_) => Err(fmt(format!("`{key}` must be three finite numbers"))),
        }
    };
    let (mean, std) = (triple("clip.vision.image_mean", config::CLIP_MEAN)?, triple("clip.vision.image_std", config::CLIP_STD)?);
    if std.contains(&0.0) {
        return Err(fmt("clip.vision.image_std has a zero entry".into()));
    }
    let image_token_id = text
        .image_token_id
        .ok_or_else(|| Error::Unsupported(format!("{file}: the text model's vocabulary has no [IMG] token for images")))?;
    let rope_theta = ["clip.vision.rope.freq_base", "clip.rope.freq_base"]
        .iter()
        .find_map(|k| h.get(k).and_then(MetaValue::as_f64))
        .filter(|t| t.is_finite() && *t > 0.0)
        .unwrap_or(10000.0);
    let n_layers = num("clip.vision.block_count", MAX_LAYERS)?;
    Ok(VisionConfig {
        hidden,
        intermediate: num("clip.vision.feed_forward_length", MAX_WIDTH)?,
        n_layers,
        // clip.cpp's pixtral graph runs every layer it is given.
        feature_layers: n_layers,
        n_heads,
        head_dim,
        channels: 3,
        patch,
        image_size,
        rope_theta,
        rope_interleaved: true,
        act,
        projector,
        // clip.cpp's pixtral projector: GELU between the two linears.
        projector_act: Act::Gelu,
        projector_bias: has("mm.1.bias"),
        projector_eps: text.rms_eps,
        image_token_id,
        processor: Processor {
            longest_edge: image_size as u32,
            multiple: (patch * merge) as u32,
            rescale: 1.0 / 255.0,
            mean,
            std,
        },
        fitted_from: None,
    })
}

impl TensorTable {
    /// Add an mmproj's tensors (every part of it) under transformers' names.
    /// A name the encoder does not have keeps its own and is refused by the
    /// planner as unused; the `[IMG_BREAK]` copy is left out.
    pub fn add_mmproj(&mut self, parts: &[GgufHeader]) -> Result<()> {
        for p in parts {
            for t in p.tensors.iter().filter(|t| t.name != IMG_BREAK_ROW) {
                let key = canonical_name(&t.name).unwrap_or_else(|| t.name.clone());
                if self.tensors.insert(key, t.clone()).is_some() {
                    return Err(Error::tensor(&t.file, &t.name, "appears twice among the model's and the mmproj's tensors"));
                }
            }
            if let Some(t) = p.tensors.first() {
                self.files.push((t.file.clone(), 0));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_transformers_gives_them() {
        assert_eq!(canonical_name("v.patch_embd.weight").as_deref(), Some("vision_tower.patch_conv.weight"));
        assert_eq!(canonical_name("v.blk.11.attn_out.weight").as_deref(), Some("vision_tower.transformer.layers.11.attention.o_proj.weight"));
        assert_eq!(canonical_name("v.blk.0.ln2.weight").as_deref(), Some("vision_tower.transformer.layers.0.ffn_norm.weight"));
        assert_eq!(canonical_name("mm.2.bias").as_deref(), Some("multi_modal_projector.linear_2.bias"));
        assert_eq!(canonical_name("mm.patch_merger.weight").as_deref(), Some("multi_modal_projector.patch_merger.merging_layer.weight"));
        for other in ["v.blk.x.attn_q.weight", "v.blk.0.attn_qkv.weight", "v.post_ln.weight", "mm.1.scale", "token_embd.weight"] {
            assert_eq!(canonical_name(other), None, "{other}");
        }
    }
}
