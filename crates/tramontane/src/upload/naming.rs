//! Source tensor names of each logical weight, per file format.

use crate::parse::Arch;

/// Source tensor names for each logical weight (HF naming; GGUF maps its own).
pub trait Naming {
    fn embed(&self) -> String;
    fn lm_head(&self) -> String;
    fn norm(&self) -> String;
    fn layer(&self, l: usize, what: LayerTensor) -> String;
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String;
    /// All experts of a layer in one `[experts][rows][cols]` tensor, if the
    /// format stores them that way.
    fn experts_fused(&self, _l: usize, _what: ExpertTensor) -> Option<String> {
        None
    }
    /// The naming of `arch` where the format spells families differently
    /// (HF MoE blocks: Mixtral's `block_sparse_moe`, Qwen3-MoE's `mlp`).
    fn for_arch(&self, _arch: Arch) -> Option<&'static dyn Naming> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LayerTensor {
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
    Router,
    OBias,
    GateBias,
    UpBias,
    DownBias,
    QNorm,
    KNorm,
}

impl LayerTensor {
    /// (HF name after `model.layers.{l}.`, GGUF name after `blk.{l}.`).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            LayerTensor::AttnNorm => ("input_layernorm.weight", "attn_norm.weight"),
            LayerTensor::Q => ("self_attn.q_proj.weight", "attn_q.weight"),
            LayerTensor::K => ("self_attn.k_proj.weight", "attn_k.weight"),
            LayerTensor::V => ("self_attn.v_proj.weight", "attn_v.weight"),
            LayerTensor::QBias => ("self_attn.q_proj.bias", "attn_q.bias"),
            LayerTensor::KBias => ("self_attn.k_proj.bias", "attn_k.bias"),
            LayerTensor::VBias => ("self_attn.v_proj.bias", "attn_v.bias"),
            LayerTensor::O => ("self_attn.o_proj.weight", "attn_output.weight"),
            LayerTensor::FfnNorm => ("post_attention_layernorm.weight", "ffn_norm.weight"),
            LayerTensor::Gate => ("mlp.gate_proj.weight", "ffn_gate.weight"),
            LayerTensor::Up => ("mlp.up_proj.weight", "ffn_up.weight"),
            LayerTensor::Down => ("mlp.down_proj.weight", "ffn_down.weight"),
            LayerTensor::Router => ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
            LayerTensor::OBias => ("self_attn.o_proj.bias", "attn_output.bias"),
            LayerTensor::GateBias => ("mlp.gate_proj.bias", "ffn_gate.bias"),
            LayerTensor::UpBias => ("mlp.up_proj.bias", "ffn_up.bias"),
            LayerTensor::DownBias => ("mlp.down_proj.bias", "ffn_down.bias"),
            LayerTensor::QNorm => ("self_attn.q_norm.weight", "attn_q_norm.weight"),
            LayerTensor::KNorm => ("self_attn.k_norm.weight", "attn_k_norm.weight"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ExpertTensor {
    Gate,
    Up,
    Down,
}

impl ExpertTensor {
    /// (Mixtral's HF name, Qwen3-MoE's HF name, GGUF's), in each format's
    /// expert tensor names.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ExpertTensor::Gate => ("w1", "gate_proj", "ffn_gate"),
            ExpertTensor::Up => ("w3", "up_proj", "ffn_up"),
            ExpertTensor::Down => ("w2", "down_proj", "ffn_down"),
        }
    }
}

pub struct HfNaming;

impl Naming for HfNaming {
    fn embed(&self) -> String {
        "model.embed_tokens.weight".into()
    }
    fn lm_head(&self) -> String {
        "lm_head.weight".into()
    }
    fn norm(&self) -> String {
        "model.norm.weight".into()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        format!("model.layers.{l}.{}", what.names().0)
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        format!("model.layers.{l}.block_sparse_moe.experts.{e}.{}.weight", what.names().0)
    }
    fn for_arch(&self, arch: Arch) -> Option<&'static dyn Naming> {
        match arch {
            Arch::Qwen3Moe => Some(&HfQwenMoeNaming),
            _ => None,
        }
    }
}

/// HF names of Qwen3-MoE: the MoE block is `mlp`, its router `mlp.gate`, and
/// experts keep the dense MLP's names (transformers 5 saves them per expert).
pub struct HfQwenMoeNaming;

impl Naming for HfQwenMoeNaming {
    fn embed(&self) -> String {
        HfNaming.embed()
    }
    fn lm_head(&self) -> String {
        HfNaming.lm_head()
    }
    fn norm(&self) -> String {
        HfNaming.norm()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        match what {
            LayerTensor::Router => format!("model.layers.{l}.mlp.gate.weight"),
            _ => HfNaming.layer(l, what),
        }
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        format!("model.layers.{l}.mlp.experts.{e}.{}.weight", what.names().1)
    }
}

/// GGUF tensor names (llama.cpp's converter).
pub struct GgufNaming;

impl Naming for GgufNaming {
    fn embed(&self) -> String {
        "token_embd.weight".into()
    }
    fn lm_head(&self) -> String {
        "output.weight".into()
    }
    fn norm(&self) -> String {
        "output_norm.weight".into()
    }
    fn layer(&self, l: usize, what: LayerTensor) -> String {
        format!("blk.{l}.{}", what.names().1)
    }
    fn expert(&self, l: usize, e: usize, what: ExpertTensor) -> String {
        format!("blk.{l}.{}.{e}.weight", what.names().2)
    }
    fn experts_fused(&self, l: usize, what: ExpertTensor) -> Option<String> {
        Some(format!("blk.{l}.{}_exps.weight", what.names().2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_format() {
        assert_eq!(HfNaming.layer(3, LayerTensor::FfnNorm), "model.layers.3.post_attention_layernorm.weight");
        assert_eq!(HfNaming.expert(1, 7, ExpertTensor::Up), "model.layers.1.block_sparse_moe.experts.7.w3.weight");
        assert_eq!(HfQwenMoeNaming.layer(2, LayerTensor::Router), "model.layers.2.mlp.gate.weight");
        assert_eq!(HfQwenMoeNaming.layer(2, LayerTensor::QNorm), "model.layers.2.self_attn.q_norm.weight");
        assert_eq!(HfQwenMoeNaming.expert(0, 5, ExpertTensor::Down), "model.layers.0.mlp.experts.5.down_proj.weight");
        assert_eq!(GgufNaming.layer(4, LayerTensor::O), "blk.4.attn_output.weight");
        assert_eq!(GgufNaming.expert(4, 2, ExpertTensor::Gate), "blk.4.ffn_gate.2.weight");
        assert_eq!(GgufNaming.experts_fused(4, ExpertTensor::Down).as_deref(), Some("blk.4.ffn_down_exps.weight"));
        assert!(HfNaming.experts_fused(0, ExpertTensor::Gate).is_none());
    }
}
