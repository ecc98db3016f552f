//! `config.json` of a Hugging Face model folder, reduced to what the engine needs.
//! Both the older layout (top-level `rope_theta`, `torch_dtype`) and the one
//! transformers 5 writes (`rope_parameters`, `dtype`, `head_dim: null`) are read.

use serde_json::Value;

use crate::vision::VisionConfig;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
    /// Qwen2 without the q/k/v bias (unless `attention_bias`), with an explicit
    /// head_dim and an RMSNorm over each q and k head before RoPE.
    Qwen3,
    /// Qwen3 attention with a sparse MoE in every layer.
    Qwen3Moe,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.x frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: f64 },
    /// Position interpolation: positions divided by `factor`.
    Linear { factor: f64 },
    /// YaRN: interpolation blended with extrapolation by a ramp over the
    /// frequencies, and cos/sin scaled by `attention_factor`.
    Yarn { factor: f64, original_max_position: f64, beta_fast: f64, beta_slow: f64, attention_factor: f64, truncate: bool },
    /// Dynamic NTK: past `max_position`, the base grows with the sequence
    /// length (transformers recomputes it for every longer sequence).
    Dynamic { factor: f64, max_position: f64 },
    /// Per-frequency divisors (GGUF `rope_freqs.weight`, llama.cpp's
    /// freq_factors: how Llama 3.1+ GGUFs carry their llama3 scaling).
    Factors(Vec<f32>),
}

impl RopeScaling {
    /// YaRN's default attention factor for a scale (transformers' get_mscale).
    pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * mscale * scale.ln() + 1.0
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub top_k: usize,
    /// Renormalize the chosen experts' weights to sum to 1 (Mixtral does;
    /// Qwen3-MoE when `norm_topk_prob`).
    pub norm_topk: bool,
}

impl MoeConfig {
    fn new(n_experts: usize, top_k: usize, norm_topk: bool, file: &str) -> Result<Self> {
        // The router kernel keeps one row's probabilities in a fixed array.
        if n_experts > 128 || top_k > n_experts {
            return Err(Error::Unsupported(format!(
                "{file}: {n_experts} experts, top {top_k} (at most 128 experts)"
            )));
        }
        Ok(MoeConfig { n_experts, top_k, norm_topk })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// true: rotate adjacent pairs (GGUF llama layout); false: rotate-half (HF).
    pub rope_interleaved: bool,
    pub max_position: usize,
    /// The largest attention window of any layer (`None`: every layer attends
    /// to the whole context).
    pub sliding_window: Option<usize>,
    /// Each layer's window (`None`: full attention), one per layer.
    pub layer_windows: Vec<Option<usize>>,
    pub tie_embeddings: bool,
    /// Biases on q/k/v (Qwen2; Llama's `attention_bias`).
    pub attn_bias: bool,
    /// A bias on the attention output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases on gate, up and down (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// An RMSNorm over each q and each k head (weights of head_dim shared by
    /// the heads, eps `rms_eps`) between the projection and RoPE (Qwen3).
    pub qk_norm: bool,
    pub moe: Option<MoeConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The image side of an image-taking checkpoint (Mistral 3, Pixtral).
    pub vision: Option<VisionConfig>,
}

/// Bounds on what a config may claim. Far above any published model (the
/// largest have 126 layers, a 262k vocabulary, 16k-wide hidden states and
/// 53k-wide feed-forwards), and low enough that per-layer tables and every size
/// derived from them stay small and cannot overflow, even in wasm32's `usize`.
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1024;

fn cfg_err(file: &str, msg: impl Into<String>) -> Error {
    Error::format(file, msg)
}

fn get_usize(v: &Value, key: &str, file: &str) -> Result<usize> {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|&x| x > 0 && x < (1 << 40))
            .map(|x| x as usize)
            .ok_or_else(|| cfg_err(file, format!("`{key}` must be a positive integer, got {n}"))),
        Some(other) => Err(cfg_err(file, format!("`{key}` must be a positive integer, got {other}"))),
        None => Err(cfg_err(file, format!("`{key}` is missing"))),
    }
}

fn opt_usize(v: &Value, key: &str, file: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => get_usize(v, key, file).map(Some),
    }
}

fn opt_f64(v: &Value, key: &str, file: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| cfg_err(file, format!("`{key}` must be a finite number"))),
        Some(other) => Err(cfg_err(file, format!("`{key}` must be a number, got {other}"))),
    }
}

fn opt_bool(v: &Value, key: &str, file: &str) -> Result<Option<bool>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(cfg_err(file, format!("`{key}` must be true or false, got {other}"))),
    }
}

/// An id or a list of ids (`eos_token_id` may be either).
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

/// Each layer's attention window, as transformers decides it:
/// - `layer_types` ("sliding_attention" / "full_attention") where the config
///   has them (Ministral, and what transformers 5 saves for Qwen2);
/// - Qwen2 without them: layers from `max_window_layers` on slide, when
///   `use_sliding_window` is set;
/// - else `sliding_window` for every layer; a list there gives one per layer.
fn layer_windows(v: &Value, arch: Arch, n_layers: usize, file: &str) -> Result<Vec<Option<usize>>> {
    if let Some(Value::Array(list)) = v.get("sliding_window") {
        if list.len() != n_layers {
            return Err(cfg_err(file, format!("`sliding_window` lists {} layers, the model has {n_layers}", list.len())));
        }
        return list
            .iter()
            .map(|w| match w {
                Value::Null => Ok(None),
                w => w.as_u64().filter(|&x| x > 0).map(|x| Some(x as usize)).ok_or_else(|| cfg_err(file, format!("`sliding_window` entry {w} is not a positive integer"))),
            })
            .collect();
    }
    let mut window = opt_usize(v, "sliding_window", file)?;
    if arch == Arch::Qwen2 && !opt_bool(v, "use_sliding_window", file)?.unwrap_or(false) {
        window = None;
    }
    let Some(w) = window else { return Ok(vec![None; n_layers]) };
    match v.get("layer_types") {
        Some(Value::Array(types)) => {
            if types.len() != n_layers {
                return Err(cfg_err(file, format!("`layer_types` lists {} layers, the model has {n_layers}", types.len())));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(Some(w)),
                    Some("full_attention") => Ok(None),
                    _ => Err(Error::Unsupported(format!("{file}: layer type {t}"))),
                })
                .collect()
        }
        _ if arch == Arch::Qwen2 => {
            let first = opt_usize(v, "max_window_layers", file)?.unwrap_or(28);
            Ok((0..n_layers).map(|i| (i >= first).then_some(w)).collect())
        }
        _ => Ok(vec![Some(w); n_layers]),
    }
}

impl ModelConfig {
    /// One layer's attention window (`None`: full attention).
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.layer_windows.get(layer).copied().flatten()
    }

    /// Parse `config.json`. `file` names it in error messages.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| cfg_err(file, format!("not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(cfg_err(file, "expected a JSON object"));
        }
        if VisionConfig::is_vision(&v) {
            // An image-taking checkpoint: the text model is `text_config`,
            // the image side the rest (vision/config.rs).
            let text = match v.get("text_config") {
                Some(t @ Value::Object(_)) => t,
                _ => return Err(cfg_err(file, "`text_config` is missing")),
            };
            let mut cfg = Self::from_value(text, file)?;
            if text.get("tie_word_embeddings").is_none() {
                cfg.tie_embeddings = opt_bool(&v, "tie_word_embeddings", file)?.unwrap_or(cfg.tie_embeddings);
            }
            cfg.vision = Some(VisionConfig::from_json(&v, file, cfg.rms_eps)?);
            return Ok(cfg);
        }
        Self::from_value(&v, file)
    }

    /// A text model's `config.json` object.
    fn from_value(v: &Value, file: &str) -> Result<Self> {
        let v = v.clone();
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let first_arch = v
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("");
        let arch = match (model_type, first_arch) {
            ("llama", _) | (_, "LlamaForCausalLM") => Arch::Llama,
            ("mistral", _) | (_, "MistralForCausalLM") => Arch::Mistral,
            // Ministral: Mistral's layers with per-layer attention windows.
            ("ministral", _) | (_, "MinistralForCausalLM") => Arch::Mistral,
            ("mixtral", _) | (_, "MixtralForCausalLM") => Arch::Mixtral,
            ("qwen2", _) | (_, "Qwen2ForCausalLM") => Arch::Qwen2,
            ("qwen3", _) | (_, "Qwen3ForCausalLM") => Arch::Qwen3,
            ("qwen3_moe", _) | (_, "Qwen3MoeForCausalLM") => Arch::Qwen3Moe,
            ("", "") => {
                return Err(cfg_err(file, "neither `model_type` nor `architectures` is given"))
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "{file}: architecture `{}` (model_type `{model_type}`); supported: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe",
                    if first_arch.is_empty() { model_type } else { first_arch }
                )))
            }
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" && act != "swish" {
                return Err(Error::Unsupported(format!("{file}: hidden_act `{act}` (only silu)")));
            }
        }
        let hidden = get_usize(&v, "hidden_size", file)?;
        let n_heads = get_usize(&v, "num_attention_heads", file)?;
        let n_kv_heads = opt_usize(&v, "num_key_value_heads", file)?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(cfg_err(
                file,
                format!("num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}"),
            ));
        }
        let head_dim = match opt_usize(&v, "head_dim", file)? {
            Some(d) => d,
            None => {
                if hidden % n_heads != 0 {
                    return Err(cfg_err(file, "hidden_size is not a multiple of num_attention_heads"));
                }
                hidden / n_heads
            }
        };
        if head_dim % 2 != 0 || head_dim > 256 {
            return Err(Error::Unsupported(format!("{file}: head_dim {head_dim} (even, at most 256)")));
        }
        let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling"));
        let rope_theta = opt_f64(&v, "rope_theta", file)?
            .or(match rope {
                Some(r) => opt_f64(r, "rope_theta", file)?,
                None => None,
            })
            .unwrap_or(10000.0);
        let rope_scaling = match rope.filter(|r| r.is_object()) {
            None => RopeScaling::None,
            Some(r) => {
                let ty = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match ty {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: opt_f64(r, "factor", file)?.unwrap_or(1.0),
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: opt_f64(r, "factor", file)?.unwrap_or(8.0),
                        low_freq_factor: opt_f64(r, "low_freq_factor", file)?.unwrap_or(1.0),
                        high_freq_factor: opt_f64(r, "high_freq_factor", file)?.unwrap_or(4.0),
                        original_max_position: opt_f64(r, "original_max_position_embeddings", file)?
                            .unwrap_or(8192.0),
                    },
                    "yarn" => {
                        let max_pos = opt_f64(&v, "max_position_embeddings", file)?.unwrap_or(4096.0);
                        let original = opt_f64(r, "original_max_position_embeddings", file)?.unwrap_or(max_pos);
                        let factor = opt_f64(r, "factor", file)?.unwrap_or(max_pos / original);
                        let attention_factor = match opt_f64(r, "attention_factor", file)? {
                            Some(a) => a,
                            None => match (opt_f64(r, "mscale", file)?, opt_f64(r, "mscale_all_dim", file)?) {
                                (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                                    RopeScaling::yarn_mscale(factor, m) / RopeScaling::yarn_mscale(factor, all)
                                }
                                _ => RopeScaling::yarn_mscale(factor, 1.0),
                            },
                        };
                        // `x or default` in transformers: 0 means the default too.
                        let or = |x: Option<f64>, d: f64| x.filter(|&b| b != 0.0).unwrap_or(d);
                        RopeScaling::Yarn {
                            factor,
                            original_max_position: original,
                            beta_fast: or(opt_f64(r, "beta_fast", file)?, 32.0),
                            beta_slow: or(opt_f64(r, "beta_slow", file)?, 1.0),
                            attention_factor,
                            truncate: opt_bool(r, "truncate", file)?.unwrap_or(true),
                        }
                    }
                    "dynamic" => RopeScaling::Dynamic {
                        factor: opt_f64(r, "factor", file)?.unwrap_or(1.0),
                        max_position: opt_f64(&v, "max_position_embeddings", file)?.unwrap_or(4096.0),
                    },
                    other => {
                        return Err(Error::Unsupported(format!("{file}: rope type `{other}`")))
                    }
                }
            }
        };
        if let Some(p) = rope.and_then(|r| r.get("partial_rotary_factor")).and_then(Value::as_f64).filter(|&p| p != 1.0) {
            return Err(Error::Unsupported(format!("{file}: partial rotary embedding (partial_rotary_factor {p})")));
        }
        let n_layers = get_usize(&v, "num_hidden_layers", file)?;
        if n_layers > MAX_LAYERS {
            // Checked here: the per-layer window table below has this length.
            return Err(cfg_err(file, format!("layers {n_layers} is out of range (1 to {MAX_LAYERS})")));
        }
        let layer_windows = if matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe) {
            // Like Qwen2, `sliding_window` is in force only with
            // `use_sliding_window` (Qwen3 configs carry a window they don't use).
            if opt_bool(&v, "use_sliding_window", file)?.unwrap_or(false) {
                return Err(Error::Unsupported(format!("{file}: Qwen3 sliding-window attention (use_sliding_window)")));
            }
            vec![None; n_layers]
        } else {
            layer_windows(&v, arch, n_layers, file)?
        };
        let sliding_window = layer_windows.iter().flatten().copied().max();
        let moe = match arch {
            // transformers' Mixtral router always renormalizes (it reads no
            // `norm_topk_prob`), so neither does this.
            Arch::Mixtral => Some(MoeConfig::new(
                get_usize(&v, "num_local_experts", file)?,
                get_usize(&v, "num_experts_per_tok", file)?,
                true,
                file,
            )?),
            Arch::Qwen3Moe => {
                // Published configs say `num_experts`; transformers 5 saves it
                // as `num_local_experts` (its attribute map).
                let n_experts = match opt_usize(&v, "num_experts", file)? {
                    Some(n) => n,
                    None => get_usize(&v, "num_local_experts", file)?,
                };
                // Dense MLP layers (`mlp_only_layers`, a `decoder_sparse_step`
                // other than 1) would need a per-layer FFN kind.
                let step = opt_usize(&v, "decoder_sparse_step", file)?.unwrap_or(1);
                let dense = v.get("mlp_only_layers").and_then(Value::as_array).map_or(0, |a| a.len());
                if step != 1 || dense > 0 {
                    return Err(Error::Unsupported(format!(
                        "{file}: Qwen3-MoE with dense layers (decoder_sparse_step {step}, mlp_only_layers of {dense}); only every layer MoE"
                    )));
                }
                // transformers' default is false; published Qwen3-MoE configs say true.
                let norm = opt_bool(&v, "norm_topk_prob", file)?.unwrap_or(false);
                Some(MoeConfig::new(n_experts, get_usize(&v, "num_experts_per_tok", file)?, norm, file)?)
            }
            _ => None,
        };
        let intermediate = match arch {
            // Every layer is MoE: the experts' width is the only one used.
            Arch::Qwen3Moe => get_usize(&v, "moe_intermediate_size", file)?,
            _ => get_usize(&v, "intermediate_size", file)?,
        };
        let tie_default = false;
        ModelConfig {
            arch,
            vocab: get_usize(&v, "vocab_size", file)?,
            hidden,
            intermediate,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: opt_f64(&v, "rms_norm_eps", file)?.unwrap_or(1e-6) as f32,
            rope_theta,
            rope_scaling,
            rope_interleaved: false,
            max_position: opt_usize(&v, "max_position_embeddings", file)?.unwrap_or(4096),
            sliding_window,
            layer_windows,
            tie_embeddings: opt_bool(&v, "tie_word_embeddings", file)?.unwrap_or(tie_default),
            attn_bias: arch == Arch::Qwen2 || opt_bool(&v, "attention_bias", file)?.unwrap_or(false),
            // Qwen2's bias is on q/k/v only; Llama's `attention_bias` covers o too.
            o_bias: arch != Arch::Qwen2 && opt_bool(&v, "attention_bias", file)?.unwrap_or(false),
            mlp_bias: opt_bool(&v, "mlp_bias", file)?.unwrap_or(false),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe),
            moe,
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            vision: None,
        }
        .check_limits(file)
    }

    /// Refuse a config whose sizes no real model has (see [`MAX_LAYERS`]):
    /// every later size is derived from these, so this bounds them all.
    fn check_limits(self, file: &str) -> Result<Self> {
        for (what, n, max) in [
            ("layers", self.n_layers, MAX_LAYERS),
            ("vocabulary size", self.vocab, MAX_VOCAB),
            ("hidden size", self.hidden, MAX_WIDTH),
            ("intermediate size", self.intermediate, MAX_WIDTH),
            ("attention heads", self.n_heads, MAX_HEADS),
            ("KV heads", self.n_kv_heads, MAX_HEADS),
        ] {
            if n == 0 || n > max {
                return Err(cfg_err(file, format!("{what} {n} is out of range (1 to {max})")));
            }
        }
        if self.head_dim == 0 {
            return Err(cfg_err(file, "head dimension 0"));
        }
        Ok(self)
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

impl ModelConfig {
    /// The configuration of a GGUF model from its metadata (`general.architecture`
    /// and the `<arch>.*` keys llama.cpp writes).
    pub fn from_gguf(h: &super::gguf::GgufHeader, file: &str) -> Result<Self> {
        use super::gguf::MetaValue;
        let arch_name = h
            .get("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| cfg_err(file, "no general.architecture in the GGUF metadata"))?
            .to_string();
        let key = |k: &str| format!("{arch_name}.{k}");
        let num = |k: &str| -> Result<usize> {
            h.get(&key(k))
                .and_then(MetaValue::as_u64)
                .filter(|&v| v > 0 && v < (1 << 40))
                .map(|v| v as usize)
                .ok_or_else(|| cfg_err(file, format!("GGUF metadata `{}` is missing or not a positive integer", key(k))))
        };
        let opt_num = |k: &str| h.get(&key(k)).and_then(MetaValue::as_u64).map(|v| v as usize);
        let n_experts = opt_num("expert_count").unwrap_or(0);
        let arch = match arch_name.as_str() {
            "llama" | "mistral" if n_experts > 0 => Arch::Mixtral,
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            // The text model of Mistral 3 (Mistral Small 3.x) as llama.cpp's
            // converter writes it: Mistral's graph. Ministral 3's Llama 4
            // attention temperature is not implemented.
            "mistral3" if h.get(&key("attention.temperature_scale")).and_then(MetaValue::as_f64).is_some_and(|t| t != 0.0) => {
                return Err(Error::Unsupported(format!("{file}: mistral3 with attention temperature scaling (Ministral 3)")))
            }
            "mistral3" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "qwen3moe" if n_experts > 0 => Arch::Qwen3Moe,
            "qwen3moe" => return Err(cfg_err(file, "a qwen3moe GGUF without `qwen3moe.expert_count`")),
            other => {
                return Err(Error::Unsupported(format!(
                    "{file}: GGUF architecture `{other}` (supported: llama, mistral, mistral3, qwen2, qwen3, qwen3moe, and llama-style MoE)"
                )))
            }
        };
        let n_layers = num("block_count")?;
        if n_layers > MAX_LAYERS {
            // Checked here: the per-layer window table below has this length.
            return Err(cfg_err(file, format!("layers {n_layers} is out of range (1 to {MAX_LAYERS})")));
        }
        let hidden = num("embedding_length")?;
        let n_heads = num("attention.head_count")?;
        let n_kv_heads = opt_num("attention.head_count_kv").unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(cfg_err(file, format!("{n_heads} heads is not a multiple of {n_kv_heads} KV heads")));
        }
        let head_dim = match opt_num("attention.key_length") {
            Some(d) => d,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => return Err(cfg_err(file, "embedding_length is not a multiple of attention.head_count")),
        };
        if head_dim % 2 != 0 || head_dim > 256 {
            return Err(Error::Unsupported(format!("{file}: head dimension {head_dim} (even, at most 256)")));
        }
        if let Some(rot) = opt_num("rope.dimension_count") {
            if rot != head_dim {
                return Err(Error::Unsupported(format!("{file}: partial rotary embedding ({rot} of {head_dim} dims)")));
            }
        }
        let vocab = match opt_num("vocab_size") {
            Some(v) => v,
            None => h
                .get("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|a| a.len())
                .filter(|&n| n > 0)
                .ok_or_else(|| cfg_err(file, "no vocabulary size in the GGUF metadata"))?,
        };
        let rope_scaling = match h.get(&key("rope.scaling.type")).and_then(MetaValue::as_str) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: h.get(&key("rope.scaling.factor")).and_then(MetaValue::as_f64).unwrap_or(1.0),
            },
            Some("yarn") => {
                // llama.cpp's YaRN: transformers' ramp; the attention factor is
                // the file's yarn_attn_factor when given (transformers'
                // attention_factor, which replaces the default), else the
                // default mscale (with yarn_log_multiplier as mscale_all_dim),
                // times rope.scaling.attn_factor as llama.cpp applies it.
                let f = |k: &str| h.get(&key(k)).and_then(MetaValue::as_f64);
                let factor = f("rope.scaling.factor").unwrap_or(1.0);
                let original = f("rope.scaling.original_context_length")
                    .or_else(|| opt_num("context_length").map(|c| c as f64))
                    .unwrap_or(4096.0);
                let mscale = |m| RopeScaling::yarn_mscale(factor, m);
                let attention = match (f("rope.scaling.yarn_attn_factor"), f("rope.scaling.yarn_log_multiplier")) {
                    (Some(a), _) if a > 0.0 => a,
                    (_, Some(m)) if m != 0.0 => mscale(1.0) / mscale(m),
                    _ => mscale(1.0),
                } * f("rope.scaling.attn_factor").filter(|&a| a > 0.0).unwrap_or(1.0);
                RopeScaling::Yarn {
                    factor,
                    original_max_position: original,
                    beta_fast: f("rope.scaling.yarn_beta_fast").filter(|&b| b != 0.0).unwrap_or(32.0),
                    beta_slow: f("rope.scaling.yarn_beta_slow").filter(|&b| b != 0.0).unwrap_or(1.0),
                    attention_factor: attention,
                    truncate: true,
                }
            }
            Some(other) => return Err(Error::Unsupported(format!("{file}: RoPE scaling `{other}`"))),
        };
        let moe = if n_experts > 0 {
            // llama.cpp renormalizes the chosen weights of both llama-style MoE
            // and qwen3moe (its converter writes no norm_topk_prob for them);
            // families that make it optional write `expert_weights_norm`.
            let norm = h.get(&key("expert_weights_norm")).and_then(MetaValue::as_bool).unwrap_or(true);
            Some(MoeConfig::new(n_experts, num("expert_used_count")?, norm, file)?)
        } else {
            None
        };
        let intermediate = match opt_num("expert_feed_forward_length") {
            Some(i) if moe.is_some() => i,
            _ => num("feed_forward_length")?,
        };
        let tok = |k: &str| h.get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
        let mut eos: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .iter()
            .filter_map(|k| tok(k))
            .collect();
        eos.sort_unstable();
        eos.dedup();
        ModelConfig {
            arch,
            vocab,
            hidden,
            intermediate,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: h.get(&key("attention.layer_norm_rms_epsilon")).and_then(MetaValue::as_f64).unwrap_or(1e-5) as f32,
            rope_theta: h.get(&key("rope.freq_base")).and_then(MetaValue::as_f64).unwrap_or(10000.0),
            rope_scaling,
            // llama.cpp's converter permutes q/k of llama-type models so that RoPE
            // rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM); qwen2 and qwen3 are
            // not permuted and use rotate-half (NEOX).
            rope_interleaved: !matches!(arch, Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe),
            max_position: opt_num("context_length").unwrap_or(4096),
            sliding_window: opt_num("attention.sliding_window"),
            layer_windows: vec![opt_num("attention.sliding_window"); n_layers],
            tie_embeddings: !h.tensors.iter().any(|t| t.name == "output.weight"),
            attn_bias: h.tensors.iter().any(|t| t.name == "blk.0.attn_q.bias"),
            o_bias: h.tensors.iter().any(|t| t.name == "blk.0.attn_output.bias"),
            mlp_bias: h.tensors.iter().any(|t| t.name == "blk.0.ffn_up.bias"),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe),
            moe,
            bos_token_id: tok("tokenizer.ggml.bos_token_id"),
            eos_token_ids: eos,
            vision: None,
        }
        .check_limits(file)
    }
}
