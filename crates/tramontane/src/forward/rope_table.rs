//! cos/sin of every (position, frequency) pair, computed on the host at load.
//! A table is exact (GPU sin/cos lose accuracy on large angles) and carries any
//! RoPE scaling without shader variants: linear, llama3, YaRN (with its
//! attention factor folded into cos/sin), dynamic NTK (a base per position)
//! and GGUF per-frequency factors.

use crate::parse::{ModelConfig, RopeScaling};

/// transformers' default inverse frequencies, in f32 (`1 / base ** (2i / d)`).
pub(crate) fn default_inv_freq(base: f32, d: usize) -> Vec<f32> {
    (0..d / 2).map(|i| 1.0f32 / base.powf((2 * i) as f32 / d as f32)).collect()
}

/// Inverse frequencies as transformers computes them (in f32), with scaling,
/// for a sequence of `seq_len` tokens (only dynamic NTK depends on it).
pub fn inv_freq_at(cfg: &ModelConfig, seq_len: usize) -> Vec<f32> {
    let d = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut f = default_inv_freq(base, d);
    match &cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            for x in &mut f {
                *x /= *factor as f32;
            }
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            let low_wavelen = original_max_position / low_freq_factor;
            let high_wavelen = original_max_position / high_freq_factor;
            for x in &mut f {
                let wavelen = 2.0 * std::f64::consts::PI / *x as f64;
                if wavelen > low_wavelen {
                    *x = (*x as f64 / factor) as f32;
                } else if wavelen >= high_wavelen {
                    let smooth = (original_max_position / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    *x = ((1.0 - smooth) * (*x as f64) / factor + smooth * (*x as f64)) as f32;
                }
            }
        }
        RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, truncate, .. } => {
            // transformers' _compute_yarn_parameters: which dimensions rotate
            // fewer than beta_slow / more than beta_fast times over the original
            // context, and a linear ramp between.
            let base64 = cfg.rope_theta;
            let dim = d as f64;
            let corr = |rot: f64| (dim * (original_max_position / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base64.ln());
            let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0) as f32, high.min(dim - 1.0) as f32);
            if low == high {
                high += 0.001;
            }
            for (i, x) in f.iter_mut().enumerate() {
                let pos_freq = base.powf((2 * i) as f32 / d as f32);
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (*factor as f32 * pos_freq);
                let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                *x = interpolation * (1.0 - keep) + extrapolation * keep;
            }
        }
        RopeScaling::Dynamic { factor, max_position } => {
            let seq = (seq_len as f64).max(*max_position);
            let base = cfg.rope_theta * ((factor * seq / max_position) - (factor - 1.0)).powf(d as f64 / (d as f64 - 2.0));
            f = default_inv_freq(base as f32, d);
        }
        RopeScaling::Factors(k) => {
            for (x, k) in f.iter_mut().zip(k) {
                *x /= *k;
            }
        }
    }
    f
}

/// Inverse frequencies at load (what every position uses but under dynamic NTK).
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    inv_freq_at(cfg, 0)
}

/// `[positions][head_dim / 2][cos, sin]`, f32.
pub fn table(cfg: &ModelConfig, positions: usize) -> Vec<f32> {
    let fixed = inv_freq(cfg);
    let scale = match cfg.rope_scaling {
        RopeScaling::Yarn { attention_factor, .. } => attention_factor as f32,
        _ => 1.0,
    };
    let mut out = Vec::with_capacity(positions * fixed.len() * 2);
    for p in 0..positions {
        // Dynamic NTK: a token at position p was rotated, as transformers
        // decodes it, with the frequencies of a p + 1 token sequence.
        let dynamic = match cfg.rope_scaling {
            RopeScaling::Dynamic { max_position, .. } if (p + 1) as f64 > max_position => Some(inv_freq_at(cfg, p + 1)),
            _ => None,
        };
        for &w in dynamic.as_ref().unwrap_or(&fixed) {
            // The angle is rounded to f32 as transformers does (pos * inv_freq in
            // f32), then cos/sin are taken exactly.
            let angle = (p as f32 * w) as f64;
            out.push(angle.cos() as f32 * scale);
            out.push(angle.sin() as f32 * scale);
        }
    }
    out
}
