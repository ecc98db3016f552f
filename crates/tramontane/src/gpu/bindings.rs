//! Every kernel family's bindings by name, declared once: each constant is the
//! `@binding` number of the WGSL variable of the same name, so bind groups are
//! built from names (`(matmul::Y, &buf)`), never from numbers written by
//! hand (a constant whose WGSL name is not its own says it in parentheses:
//! `STEP("step")`). Two names for one number are views of one binding that different
//! entry points read (`X` and `X4`), or bindings of different entry points
//! (`matmul_rows`' `X_TEX`, `matvec_rope`'s `ROPE_TABLE`). The test below
//! reads every shader with its preludes and fails where a name or a number
//! here and there disagree, or where either has a binding the other lacks.

macro_rules! bindings {
    ($($(#[$doc:meta])* $family:ident { $($name:ident $(($wgsl:literal))? = $index:literal),* $(,)? })*) => {
        $(
            $(#[$doc])*
            pub mod $family {
                $(pub const $name: u32 = $index;)*
                /// Every (WGSL name, binding) of this module.
                pub const ALL: &[(&str, u32)] = &[$((bindings!(@wgsl $name $($wgsl)?), $index)),*];
            }
        )*
    };
    // The WGSL name: the constant's own, or the one given in parentheses.
    (@wgsl $name:ident) => { stringify!($name) };
    (@wgsl $name:ident $wgsl:literal) => { $wgsl };
}

bindings! {
    /// common.wgsl, in every kernel: the per-pass `Step` uniform (`step` in WGSL).
    common { STEP("step") = 0 }
    /// The weights' preludes: a storage buffer of word quads
    /// (weights_in_buffer.wgsl) or a texture (weights_in_texture.wgsl).
    weights { W4 = 1, W_TEX = 1 }
    /// embed.wgsl.
    embed { IDS = 2, Y = 3, SLAB = 4 }
    /// rmsnorm.wgsl.
    rmsnorm { X = 1, WN = 2, Y = 3 }
    /// The linear-layer kernels: linear.wgsl's, the optional inputs'
    /// (linear_bias.wgsl's `B`, linear_norm.wgsl's `NORM_W`,
    /// linear_experts.wgsl's `EXPERT_IDS`) and inputs_in_texture.wgsl's
    /// `X_TEX` (`matmul_rows`). `matvec_rope` also binds [`rotary`]'s.
    matmul {
        X = 2, X4 = 2, Y = 3, B = 4, EXPERT_IDS = 5, SLAB = 6, ORDER = 7, TILES = 8, NORM_W = 9,
        X_TEX = 10,
    }
    /// rotary.wgsl: the RoPE table and the KV cache, of rope.wgsl and `matvec_rope`.
    rotary { ROPE_TABLE = 10, KC = 11, VC = 12 }
    /// rope.wgsl (`NW`: `qk_norm`'s per-head norm weights), after [`rotary`].
    rope { QKV = 1, NW = 5 }
    /// attention.wgsl (the `*4` names: vec4 views for the barrier-free entries).
    attention { QKV = 1, QKV4 = 1, KC = 2, KC4 = 2, VC = 3, VC4 = 3, PART = 4, OUT = 5 }
    /// moe.wgsl.
    moe { LOGITS = 1, IDS = 2, WTS = 3, EOUT = 4, Y = 5, ORDER = 6, TILES = 7 }
    /// sample.wgsl.
    sample { LOGITS = 1, STATE = 2, IDS = 3, OUT = 4, MASK = 5 }
    /// patch_merge.wgsl.
    patch_merge { X = 1, Y = 2, GRID = 3 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::{family_sources, Family};

    /// (name, binding) of every `@group(0) @binding(n) var<...> NAME` in `src`.
    fn declared(src: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for line in src.lines().map(str::trim_start).filter(|l| l.starts_with("@group(0) @binding(")) {
            let rest = &line["@group(0) @binding(".len()..];
            let (n, rest) = rest.split_once(')').expect("a binding number");
            let rest = rest.trim_start().strip_prefix("var").expect("a var");
            // Skip `<storage, read>`, then the name up to ':'.
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix('<') {
                Some(r) => r.split_once('>').expect("closing >").1,
                None => rest,
            };
            let name = rest.trim_start().split(':').next().expect("a name").trim();
            out.push((name.to_string(), n.parse().expect("a number")));
        }
        out.sort();
        out
    }

    fn table(parts: &[&[(&str, u32)]]) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = parts.iter().flat_map(|p| p.iter().map(|&(n, i)| (n.to_string(), i))).collect();
        out.sort();
        out
    }

    #[test]
    fn every_wgsl_binding_is_declared_here_with_its_number() {
        for (family, src) in family_sources() {
            let but = |t: &[(&'static str, u32)], not: &[&str]| -> Vec<(&'static str, u32)> {
                t.iter().copied().filter(|(n, _)| !not.contains(n)).collect()
            };
            let own: Vec<(&str, u32)> = match family {
                Family::Embed => embed::ALL.to_vec(),
                Family::RmsNorm => rmsnorm::ALL.to_vec(),
                // The matvec reads no input texture; the prefill kernels no
                // norm weights or expert ids (and only matmul_rows a texture).
                Family::Matvec => [but(matmul::ALL, &["X_TEX"]), rotary::ALL.to_vec()].concat(),
                Family::MatmulTiled => but(matmul::ALL, &["X_TEX", "NORM_W", "EXPERT_IDS"]),
                Family::MatmulRows => but(matmul::ALL, &["NORM_W", "EXPERT_IDS"]),
                Family::Rope => [rope::ALL, rotary::ALL].concat(),
                Family::Attention => attention::ALL.to_vec(),
                Family::Moe => moe::ALL.to_vec(),
                Family::Sample => sample::ALL.to_vec(),
                Family::PatchMerge => patch_merge::ALL.to_vec(),
            };
            let own = &own[..];
            let want = if family.uses_weights() { table(&[common::ALL, weights::ALL, own]) } else { table(&[common::ALL, own]) };
            assert_eq!(declared(&src), want, "{family:?}: the WGSL's bindings and gpu/bindings.rs disagree");
        }
    }

    #[test]
    fn a_binding_renumbered_on_one_side_is_caught() {
        let src = "@group(0) @binding(3) var<storage, read_write> Y: array<f32>;\n@group(0) @binding(1) var X: texture_2d<u32>;";
        assert_eq!(declared(src), vec![("X".to_string(), 1), ("Y".to_string(), 3)]);
        assert_ne!(declared(src), table(&[&[("X", 1), ("Y", 4)]]));
    }
}
