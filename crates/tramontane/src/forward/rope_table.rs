//! cos/sin of every (position, frequency) pair, computed on the host at load.
//! A table is exact (GPU sin/cos lose accuracy on large angles) and carries any
//! RoPE scaling without shader variants.

use crate::parse::{ModelConfig, RopeScaling};

/// Inverse frequencies as transformers computes them (in f32), with scaling.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let mut f: Vec<f32> = (0..d / 2)
        .map(|i| 1.0f32 / base.powf((2 * i) as f32 / d as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            for x in &mut f {
                *x /= factor as f32;
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
    }
    f
}

/// `[positions][head_dim / 2][cos, sin]`, f32.
pub fn table(cfg: &ModelConfig, positions: usize) -> Vec<f32> {
    let f = inv_freq(cfg);
    let mut out = Vec::with_capacity(positions * f.len() * 2);
    for p in 0..positions {
        for &w in &f {
            // The angle is rounded to f32 as transformers does (pos * inv_freq in
            // f32), then cos/sin are taken exactly.
            let angle = (p as f32 * w) as f64;
            out.push(angle.cos() as f32);
            out.push(angle.sin() as f32);
        }
    }
    out
}
