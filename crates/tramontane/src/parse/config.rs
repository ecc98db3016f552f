//! `config.json` of a Hugging Face model folder, reduced to what the engine needs.
//! Both the older layout (top-level `rope_theta`, `torch_dtype`) and the one
//! transformers 5 writes (`rope_parameters`, `dtype`, `head_dim: null`) are read.

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.x frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: f64 },
    /// Position interpolation: positions divided by `factor`.
    Linear { factor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub top_k: usize,
    /// Renormalize the chosen experts' weights to sum to 1 (Mixtral does).
    pub norm_topk: bool,
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
    pub sliding_window: Option<usize>,
    pub tie_embeddings: bool,
    pub attn_bias: bool,
    pub moe: Option<MoeConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

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

impl ModelConfig {
    /// Parse `config.json`. `file` names it in error messages.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| cfg_err(file, format!("not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(cfg_err(file, "expected a JSON object"));
        }
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
            ("mixtral", _) | (_, "MixtralForCausalLM") => Arch::Mixtral,
            ("qwen2", _) | (_, "Qwen2ForCausalLM") => Arch::Qwen2,
            ("", "") => {
                return Err(cfg_err(file, "neither `model_type` nor `architectures` is given"))
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "{file}: architecture `{}` (model_type `{model_type}`); supported: llama, mistral, mixtral, qwen2",
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
                    other => {
                        return Err(Error::Unsupported(format!("{file}: rope type `{other}`")))
                    }
                }
            }
        };
        let sliding_window = match arch {
            Arch::Qwen2 => {
                if opt_bool(&v, "use_sliding_window", file)?.unwrap_or(false) {
                    return Err(Error::Unsupported(format!(
                        "{file}: Qwen2 per-layer sliding window (use_sliding_window)"
                    )));
                }
                None
            }
            _ => opt_usize(&v, "sliding_window", file)?,
        };
        let moe = match arch {
            Arch::Mixtral => {
                let n_experts = get_usize(&v, "num_local_experts", file)?;
                let top_k = get_usize(&v, "num_experts_per_tok", file)?;
                if n_experts > 128 || top_k > n_experts {
                    return Err(Error::Unsupported(format!(
                        "{file}: {n_experts} experts, top {top_k} (at most 128 experts)"
                    )));
                }
                Some(MoeConfig { n_experts, top_k, norm_topk: true })
            }
            _ => None,
        };
        let intermediate = get_usize(&v, "intermediate_size", file)?;
        let tie_default = false;
        Ok(ModelConfig {
            arch,
            vocab: get_usize(&v, "vocab_size", file)?,
            hidden,
            intermediate,
            n_layers: get_usize(&v, "num_hidden_layers", file)?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: opt_f64(&v, "rms_norm_eps", file)?.unwrap_or(1e-6) as f32,
            rope_theta,
            rope_scaling,
            rope_interleaved: false,
            max_position: opt_usize(&v, "max_position_embeddings", file)?.unwrap_or(4096),
            sliding_window,
            tie_embeddings: opt_bool(&v, "tie_word_embeddings", file)?.unwrap_or(tie_default),
            attn_bias: arch == Arch::Qwen2 || opt_bool(&v, "attention_bias", file)?.unwrap_or(false),
            moe,
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
        })
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
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::Unsupported(format!(
                    "{file}: GGUF architecture `{other}` (supported: llama, mistral, qwen2, and llama-style MoE)"
                )))
            }
        };
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
            Some(other) => return Err(Error::Unsupported(format!("{file}: RoPE scaling `{other}`"))),
        };
        let moe = if n_experts > 0 {
            let top_k = num("expert_used_count")?;
            if n_experts > 128 || top_k > n_experts {
                return Err(Error::Unsupported(format!("{file}: {n_experts} experts, top {top_k} (at most 128 experts)")));
            }
            Some(MoeConfig { n_experts, top_k, norm_topk: true })
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
        Ok(ModelConfig {
            arch,
            vocab,
            hidden,
            intermediate,
            n_layers: num("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: h.get(&key("attention.layer_norm_rms_epsilon")).and_then(MetaValue::as_f64).unwrap_or(1e-5) as f32,
            rope_theta: h.get(&key("rope.freq_base")).and_then(MetaValue::as_f64).unwrap_or(10000.0),
            rope_scaling,
            // llama.cpp's converter permutes q/k of llama-type models so that RoPE
            // rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM); qwen2 is not permuted
            // and uses rotate-half (NEOX).
            rope_interleaved: arch != Arch::Qwen2,
            max_position: opt_num("context_length").unwrap_or(4096),
            sliding_window: opt_num("attention.sliding_window"),
            tie_embeddings: !h.tensors.iter().any(|t| t.name == "output.weight"),
            attn_bias: h.tensors.iter().any(|t| t.name == "blk.0.attn_q.bias"),
            moe,
            bos_token_id: tok("tokenizer.ggml.bos_token_id"),
            eos_token_ids: eos,
        })
    }
}
