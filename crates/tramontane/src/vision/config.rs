//! What a vision checkpoint says about its image side: the Pixtral encoder
//! (`vision_config`), the projector in front of the text model, the image
//! token, and the processor's settings (`preprocessor_config.json`,
//! `processor_config.json`).
//!
//! Two classes: `Mistral3ForConditionalGeneration` (Mistral Small 3.x: a
//! patch merger and an RMSNorm in the projector) and Pixtral 12B's
//! `LlavaForConditionalGeneration` (a two-layer projector, no merger).

use serde_json::Value;

use super::preprocess::Processor;
use crate::error::{Error, Result};

/// The activation of an MLP: transformers' `gelu` (exact, with erf) or `silu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Gelu,
    Silu,
}

impl Act {
    fn parse(name: &str, file: &str, key: &str) -> Result<Act> {
        match name {
            "gelu" => Ok(Act::Gelu),
            "silu" | "swish" => Ok(Act::Silu),
            other => Err(Error::Unsupported(format!("{file}: {key} `{other}` (gelu or silu)"))),
        }
    }
}

/// Which projector sits between the encoder and the text model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projector {
    /// Mistral 3: RMSNorm, a patch merger over `merge` x `merge` patches,
    /// then linear, activation, linear.
    Mistral3 { merge: usize },
    /// LLaVA (Pixtral 12B): linear, activation, linear.
    Llava,
}

/// The image side of a vision checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    /// The encoder layers whose output is the image features
    /// (`vision_feature_layer`: -1, the default of Mistral 3 and Pixtral 12B,
    /// is all of them; LLaVA's class default -2 leaves out the last). The
    /// layers after them are neither uploaded nor run.
    pub feature_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub channels: usize,
    pub patch: usize,
    /// The largest image side the encoder's RoPE covers (`image_size`).
    pub image_size: usize,
    pub rope_theta: f64,
    /// q/k rows rotate adjacent pairs (llama.cpp's converter permutes them so)
    /// instead of transformers' halves.
    pub rope_interleaved: bool,
    pub act: Act,
    pub projector: Projector,
    pub projector_act: Act,
    pub projector_bias: bool,
    /// The projector's RMSNorm epsilon (Mistral 3: the text model's).
    pub projector_eps: f32,
    /// The token the chat template writes per image, and the id the
    /// processor repeats per merged patch.
    pub image_token_id: u32,
    /// The processor's resize and normalization.
    pub processor: Processor,
    /// The processor's own `longest_edge`, where the device's binding limit
    /// made the encoder take smaller images (forward/vision.rs's
    /// `fit_to_binding`).
    pub fitted_from: Option<u32>,
}

/// Bounds no published encoder comes near (Pixtral: 1024 wide, 24 layers,
/// patches of 14 or 16, images up to 1540).
pub(crate) const MAX_WIDTH: usize = 1 << 16;
pub(crate) const MAX_LAYERS: usize = 256;
pub(crate) const MAX_PATCH: usize = 64;
pub(crate) const MAX_IMAGE: usize = 1 << 14;

/// CLIP's mean and std as transformers spells them: the Pixtral processor's
/// defaults.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

fn err(file: &str, msg: impl Into<String>) -> Error {
    Error::format(file, msg)
}

fn size(v: &Value, key: &str, file: &str, default: Option<usize>, max: usize) -> Result<usize> {
    match v.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| err(file, format!("`vision_config.{key}` is missing"))),
        Some(x) => x
            .as_u64()
            .filter(|&n| n > 0 && n as usize <= max)
            .map(|n| n as usize)
            .ok_or_else(|| err(file, format!("`vision_config.{key}` must be an integer from 1 to {max}, got {x}"))),
    }
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// A side from `{"height": h, "width": w}`, `{"longest_edge": n}` or a plain
/// number (the forms processor configs use).
fn side(v: Option<&Value>, keys: &[&str]) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::Object(o) => keys.iter().find_map(|k| o.get(*k).and_then(Value::as_u64)),
        _ => None,
    }
}

impl VisionConfig {
    /// Whether `config.json` (`v`) is one of the image-taking classes.
    pub fn is_vision(v: &Value) -> bool {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = v.get("architectures").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
        matches!(model_type, "mistral3" | "llava")
            || matches!(arch, "Mistral3ForConditionalGeneration" | "LlavaForConditionalGeneration")
    }

    /// The image side of `config.json` (`v`, read from `file`), with the
    /// text model's RMSNorm epsilon `text_eps`; the processor's settings are
    /// the Pixtral processor's defaults until [`VisionConfig::set_processor`].
    pub fn from_json(v: &Value, file: &str, text_eps: f32) -> Result<VisionConfig> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = v.get("architectures").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
        let mistral3 = model_type == "mistral3" || arch == "Mistral3ForConditionalGeneration";
        let vc = match v.get("vision_config") {
            Some(c @ Value::Object(_)) => c,
            _ => return Err(err(file, "`vision_config` is missing")),
        };
        let vt = vc.get("model_type").and_then(Value::as_str).unwrap_or("pixtral");
        if vt != "pixtral" {
            return Err(Error::Unsupported(format!("{file}: vision encoder `{vt}` (only Pixtral's)")));
        }
        let hidden = size(vc, "hidden_size", file, Some(1024), MAX_WIDTH)?;
        let n_heads = size(vc, "num_attention_heads", file, Some(16), MAX_WIDTH)?;
        if hidden % n_heads != 0 {
            return Err(err(file, "`vision_config.hidden_size` is not a multiple of its heads"));
        }
        // transformers derives it (and ignores a stored `head_dim`).
        let head_dim = hidden / n_heads;
        if head_dim % 4 != 0 || head_dim > 256 {
            return Err(Error::Unsupported(format!("{file}: vision head_dim {head_dim} (a multiple of 4, at most 256)")));
        }
        let channels = size(vc, "num_channels", file, Some(3), 3)?;
        if channels != 3 {
            return Err(Error::Unsupported(format!("{file}: {channels} image channels (RGB only)")));
        }
        let rope_theta = number(vc, "rope_theta")
            .or_else(|| vc.get("rope_parameters").and_then(|r| number(r, "rope_theta")))
            .unwrap_or(10000.0);
        let act = Act::parse(vc.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"), file, "vision hidden_act")?;
        let projector_act = Act::parse(v.get("projector_hidden_act").and_then(Value::as_str).unwrap_or("gelu"), file, "projector_hidden_act")?;
        let n_layers = size(vc, "num_hidden_layers", file, Some(24), MAX_LAYERS)?;
        // The classes' defaults differ: Mistral 3's is -1, LLaVA's -2 (Pixtral
        // 12B says -1). An index into the encoder's hidden states: 0 is the
        // input of the first layer, -1 (or n) the last layer's output.
        let feature_layer = match v.get("vision_feature_layer") {
            None | Some(Value::Null) => if mistral3 { -1 } else { -2 },
            Some(x) => x.as_i64().ok_or_else(|| {
                Error::Unsupported(format!("{file}: vision_feature_layer {x} (one layer's index: features from several layers are not supported)"))
            })?,
        };
        let feature_layers = if feature_layer < 0 { n_layers as i64 + 1 + feature_layer } else { feature_layer };
        if !(0..=n_layers as i64).contains(&feature_layers) {
            return Err(err(file, format!("vision_feature_layer {feature_layer} is outside the encoder's {n_layers} layers")));
        }
        let projector = if mistral3 {
            let merge = match v.get("spatial_merge_size") {
                None | Some(Value::Null) => 2,
                Some(x) => x.as_u64().filter(|&m| (1..=8).contains(&m)).ok_or_else(|| err(file, format!("`spatial_merge_size` {x}")))? as usize,
            };
            Projector::Mistral3 { merge }
        } else {
            match v.get("vision_feature_select_strategy").and_then(Value::as_str).unwrap_or("default") {
                "full" => {}
                s => return Err(Error::Unsupported(format!("{file}: vision_feature_select_strategy `{s}` with a Pixtral encoder (it has no CLS patch: only `full`)"))),
            }
            Projector::Llava
        };
        let image_token_id = v
            .get("image_token_index")
            .or_else(|| v.get("image_token_id"))
            .and_then(Value::as_u64)
            .filter(|&i| i < u32::MAX as u64)
            .map(|i| i as u32)
            // The classes' defaults (Mistral 3: 10, LLaVA: 32000).
            .unwrap_or(if mistral3 { 10 } else { 32000 });
        let patch = size(vc, "patch_size", file, Some(16), MAX_PATCH)?;
        let image_size = size(vc, "image_size", file, Some(1024), MAX_IMAGE)?;
        let merge = match projector {
            Projector::Mistral3 { merge } => merge,
            Projector::Llava => 1,
        };
        let processor = processor_settings(None, None, patch, merge, image_size, file)?;
        Ok(VisionConfig {
            hidden,
            intermediate: size(vc, "intermediate_size", file, Some(4096), MAX_WIDTH)?,
            n_layers,
            feature_layers: feature_layers as usize,
            n_heads,
            head_dim,
            channels,
            patch,
            image_size,
            rope_theta,
            rope_interleaved: false,
            act,
            projector,
            projector_act,
            projector_bias: match v.get("multimodal_projector_bias").and_then(Value::as_bool) {
                Some(b) => b,
                None => !mistral3,
            },
            projector_eps: text_eps,
            image_token_id,
            processor,
            fitted_from: None,
        })
    }

    /// The processor's settings from the model's `preprocessor_config.json`
    /// and `processor_config.json` (either may be absent), read from `file`.
    pub fn set_processor(&mut self, preprocessor: Option<&Value>, processor: Option<&Value>, file: &str) -> Result<()> {
        self.processor = processor_settings(preprocessor, processor, self.patch, self.merge(), self.image_size, file)?;
        Ok(())
    }

    /// Patches along each side merged into one image token (1: none).
    pub fn merge(&self) -> usize {
        match self.projector {
            Projector::Mistral3 { merge } => merge,
            Projector::Llava => 1,
        }
    }

    /// Image tokens (rows, columns) of a picture `width` x `height`: the
    /// resized size in merged patches.
    pub fn grid(&self, width: u32, height: u32) -> (usize, usize) {
        let (h, w) = self.processor.output_size(width, height);
        let unit = (self.patch * self.merge()) as u32;
        ((h / unit) as usize, (w / unit) as usize)
    }
}

/// The processor's resize and normalization: `preprocessor_config.json`
/// where given, else PixtralImageProcessor's defaults; sides rounded to the
/// patch times the merge, as the processor passes them.
fn processor_settings(pre: Option<&Value>, proc: Option<&Value>, patch: usize, merge: usize, image_size: usize, file: &str) -> Result<Processor> {
    let empty = Value::Null;
    let pre = pre.unwrap_or(&empty);
    let proc = proc.unwrap_or(&empty);
    if let Some(r) = pre.get("resample").and_then(Value::as_u64) {
        if r != 3 {
            return Err(Error::Unsupported(format!("{file}: image resampling {r} (only bicubic, 3)")));
        }
    }
    // The processor's own patch size (processor_config.json) decides the
    // rounding; the encoder's is the fallback.
    let proc_patch = side(proc.get("patch_size"), &["height"]).map(|p| p as usize).unwrap_or(patch);
    let proc_merge = proc.get("spatial_merge_size").and_then(Value::as_u64).map(|m| m as usize).unwrap_or(merge);
    if proc_patch != patch || proc_merge != merge {
        return Err(err(file, format!(
            "the processor's patch {proc_patch} x merge {proc_merge} differ from the model's {patch} x {merge}"
        )));
    }
    let longest_edge = side(pre.get("size"), &["longest_edge", "height"]).unwrap_or(image_size as u64);
    if longest_edge == 0 || longest_edge as usize > MAX_IMAGE {
        return Err(err(file, format!("image size {longest_edge} is out of range")));
    }
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match pre.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Array(a)) if a.len() == 3 && a.iter().all(|x| x.as_f64().is_some()) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
            }
            Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
            Some(x) => Err(err(file, format!("`{key}` must be three numbers, got {x}"))),
        }
    };
    let std = triple("image_std", CLIP_STD)?;
    if std.iter().any(|&s| !(s.is_finite() && s != 0.0)) {
        return Err(err(file, "`image_std` has a zero or non-finite entry"));
    }
    Ok(Processor {
        longest_edge: longest_edge as u32,
        multiple: (patch * merge) as u32,
        rescale: if pre.get("do_rescale").and_then(Value::as_bool) == Some(false) {
            1.0
        } else {
            number(pre, "rescale_factor").unwrap_or(1.0 / 255.0)
        },
        mean: if pre.get("do_normalize").and_then(Value::as_bool) == Some(false) { [0.0; 3] } else { triple("image_mean", CLIP_MEAN)? },
        std: if pre.get("do_normalize").and_then(Value::as_bool) == Some(false) { [1.0; 3] } else { std },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(model_type: &str, extra: Value) -> Value {
        let mut v = json!({"model_type": model_type, "vision_config": {"model_type": "pixtral", "hidden_size": 64, "num_attention_heads": 4}});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }

    /// Missing keys take each class's own defaults: Mistral 3's image token 10
    /// and last layer; LLaVA's second-to-last layer and 32000.
    #[test]
    fn each_class_has_its_defaults() {
        let m = VisionConfig::from_json(&config("mistral3", json!({})), "c", 1e-5).unwrap();
        assert_eq!((m.image_token_id, m.merge(), m.projector_bias), (10, 2, false));
        assert_eq!((m.n_layers, m.feature_layers), (24, 24));
        let l = VisionConfig::from_json(&config("llava", json!({"vision_feature_select_strategy": "full"})), "c", 1e-5).unwrap();
        assert_eq!((l.feature_layers, l.image_token_id, l.merge(), l.projector_bias), (23, 32000, 1, true));
        let l = VisionConfig::from_json(&config("llava", json!({"vision_feature_select_strategy": "full", "vision_feature_layer": -1})), "c", 1e-5).unwrap();
        assert_eq!(l.feature_layers, 24);
        let l = VisionConfig::from_json(&config("llava", json!({"vision_feature_select_strategy": "full", "vision_feature_layer": 3})), "c", 1e-5).unwrap();
        assert_eq!(l.feature_layers, 3);
        for bad in [json!(-26), json!(25), json!([-1, -2])] {
            let e = VisionConfig::from_json(&config("llava", json!({"vision_feature_select_strategy": "full", "vision_feature_layer": bad})), "c", 1e-5).unwrap_err();
            assert!(e.to_string().contains("vision_feature_layer"), "{e}");
        }
        let e = VisionConfig::from_json(&config("llava", json!({"vision_feature_layer": -1})), "c", 1e-5).unwrap_err();
        assert!(e.to_string().contains("vision_feature_select_strategy"), "{e}");
        let e = VisionConfig::from_json(&config("mistral3", json!({"projector_hidden_act": "relu"})), "c", 1e-5).unwrap_err();
        assert_eq!(e.code(), "UNSUPPORTED");
    }
}
