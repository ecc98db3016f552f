//! Pixels as the model's processor makes them (`PixtralImageProcessor`): RGB
//! (transparency composited on white), resized so the longest edge fits and
//! each side is a multiple of the patch, rescaled and normalized, channels
//! first.
//!
//! The resize is Pillow's bicubic resampling reproduced step for step
//! (Pillow's `Resample.c`: coefficients in f64, normalized to 22-bit fixed
//! point, a horizontal pass into 8-bit pixels, then a vertical one), because
//! the published processors resize through Pillow: a textbook bicubic differs
//! by a level here and there, and those differences reach the logits.

use crate::error::{Error, Result};

/// A decoded picture: 8 bits per channel, rows top to bottom, `channels` 3
/// (RGB) or 4 (RGBA, straight alpha).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

impl Picture {
    /// `pixels` checked against the size: a short or long buffer is an
    /// INVALID_REQUEST naming `what`.
    pub fn new(width: u32, height: u32, channels: u8, pixels: Vec<u8>, what: &str) -> Result<Picture> {
        let want = (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(channels as usize));
        if width == 0 || height == 0 {
            return Err(Error::InvalidRequest(format!("{what}: the image is empty ({width}x{height})")));
        }
        if !matches!(channels, 3 | 4) || want != Some(pixels.len()) {
            return Err(Error::InvalidRequest(format!(
                "{what}: {} bytes of pixels for {width}x{height} with {channels} channels",
                pixels.len()
            )));
        }
        Ok(Picture { width, height, channels, pixels })
    }

    /// RGB, 3 bytes a pixel: transparency composited onto white as the
    /// processor does (Pillow's `alpha_composite` over an opaque white
    /// background, in its integer arithmetic).
    pub fn to_rgb(&self) -> Vec<u8> {
        if self.channels == 3 {
            return self.pixels.clone();
        }
        let mut out = Vec::with_capacity(self.pixels.len() / 4 * 3);
        for p in self.pixels.chunks_exact(4) {
            let a = p[3] as u32;
            if a == 255 {
                out.extend_from_slice(&p[..3]);
                continue;
            }
            if a == 0 {
                out.extend_from_slice(&[255, 255, 255]);
                continue;
            }
            // Pillow's AlphaComposite.c with the destination opaque white.
            const BITS: u32 = 7;
            let blend = 255 * (255 - a);
            let outa255 = a * 255 + blend;
            let coef1 = a * 255 * 255 * (1 << BITS) / outa255;
            let coef2 = 255 * (1 << BITS) - coef1;
            let div255 = |v: u32| ((v >> 8) + v) >> 8;
            for &c in &p[..3] {
                let tmp = c as u32 * coef1 + 255 * coef2 + (0x80 << BITS);
                out.push((div255(tmp) >> BITS) as u8);
            }
        }
        out
    }
}

/// The processor's settings (`preprocessor_config.json`, with the
/// processor's patch size times the merge).
#[derive(Debug, Clone, PartialEq)]
pub struct Processor {
    /// Neither side of the resized image exceeds this (before rounding up to
    /// a multiple of `multiple`).
    pub longest_edge: u32,
    /// Sides are rounded up to a multiple of this: the patch size times the
    /// spatial merge.
    pub multiple: u32,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Pixel values, channels first: `data[(c * height + y) * width + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Processor {
    /// (height, width) the processor resizes a `width` x `height` picture to
    /// (transformers' `get_resize_output_image_size`).
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (mut h, mut w) = (height as f64, width as f64);
        let edge = self.longest_edge as f64;
        let ratio = (h / edge).max(w / edge);
        if ratio > 1.0 {
            h = (h / ratio).floor();
            w = (w / ratio).floor();
        }
        let m = self.multiple.max(1);
        let up = |v: f64| ((v as u32).max(1) - 1) / m * m + m;
        (up(h), up(w))
    }

    /// The processor's pixel values for `pic`.
    pub fn pixels(&self, pic: &Picture) -> Pixels {
        let (h, w) = self.output_size(pic.width, pic.height);
        let rgb = pic.to_rgb();
        let resized = resize_bicubic(&rgb, pic.width as usize, pic.height as usize, w as usize, h as usize);
        let (h, w) = (h as usize, w as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (i, px) in resized.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // As transformers: rescale in f64, then f32; normalize in f32.
                let v = (px[c] as f64 * self.rescale) as f32;
                data[c * h * w + i] = (v - self.mean[c]) / self.std[c];
            }
        }
        Pixels { height: h, width: w, data }
    }
}

impl Pixels {
    /// The patches of side `p` in row-major patch order, each flattened as the
    /// patch convolution's weight is (channel, row, column): the rows a
    /// matmul with the reshaped convolution weight turns into patch
    /// embeddings.
    pub fn patches(&self, p: usize) -> Vec<f32> {
        let (ph, pw) = (self.height / p, self.width / p);
        let mut out = Vec::with_capacity(ph * pw * 3 * p * p);
        for py in 0..ph {
            for px in 0..pw {
                for c in 0..3 {
                    for y in 0..p {
                        let row = (c * self.height + py * p + y) * self.width + px * p;
                        out.extend_from_slice(&self.data[row..row + p]);
                    }
                }
            }
        }
        out
    }
}

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point bits of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input pixel, and the fixed-point weights of
/// the inputs from there (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) casts: truncation toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let f = k * (1u32 << PRECISION_BITS) as f64;
                    (if k < 0.0 { -0.5 + f } else { 0.5 + f }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass of Pillow's resampling along one axis: `lines` lines of `len`
/// pixels, a pixel's channel `c` of line `l` at `at(l, i) + c`.
fn resample_pass(coeffs: &[(usize, Vec<i32>)], out: &mut [u8], out_at: impl Fn(usize, usize) -> usize, lines: usize, src: &[u8],
                 at: impl Fn(usize, usize) -> usize) {
    for l in 0..lines {
        for (o, (xmin, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate() {
                    acc = acc.wrapping_add((src[at(l, xmin + x) + c] as i32).wrapping_mul(w));
                }
                out[out_at(l, o) + c] = clip8(acc);
            }
        }
    }
}

/// `rgb` (`w` x `h`, 3 bytes a pixel) resized to `ow` x `oh` as Pillow's
/// `Image.resize(..., BICUBIC)` does: horizontally first, then vertically,
/// each pass rounding to 8 bits; a pass whose size does not change is skipped.
pub fn resize_bicubic(rgb: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let horizontal = if ow != w {
        let mut out = vec![0u8; ow * h * 3];
        resample_pass(&coefficients(w, ow), &mut out, |y, x| (y * ow + x) * 3, h, rgb, |y, x| (y * w + x) * 3);
        out
    } else {
        rgb.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    let mut out = vec![0u8; ow * oh * 3];
    resample_pass(&coefficients(h, oh), &mut out, |x, y| (y * ow + x) * 3, ow, &horizontal, |x, y| (y * ow + x) * 3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(multiple: u32) -> Processor {
        Processor { longest_edge: 64, multiple, rescale: 1.0 / 255.0, mean: [0.5; 3], std: [0.5; 3] }
    }

    /// transformers' rule: scale down to fit the longest edge (floor), then
    /// round each side up to the multiple; small pictures are not scaled up.
    #[test]
    fn output_sizes_follow_the_processor() {
        let p = processor(8);
        assert_eq!(p.output_size(37, 23), (24, 40));
        assert_eq!(p.output_size(150, 111), (48, 64), "111 * 64 / 150 = 47.36 -> 47 -> 48");
        assert_eq!(p.output_size(64, 64), (64, 64));
        assert_eq!(p.output_size(1, 1), (8, 8));
        assert_eq!(p.output_size(1000, 3), (8, 64));
    }

    /// An unchanged size is the identity, and a constant picture stays
    /// constant through both passes (the weights sum to one in fixed point).
    #[test]
    fn resize_keeps_what_it_should() {
        let rgb: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&rgb, 5, 4, 5, 4), rgb);
        let flat = vec![77u8; 13 * 9 * 3];
        assert!(resize_bicubic(&flat, 13, 9, 4, 20).iter().all(|&v| v == 77));
    }

    #[test]
    fn alpha_goes_onto_white() {
        let pic = Picture::new(3, 1, 4, vec![10, 20, 30, 255, 10, 20, 30, 0, 0, 0, 0, 128], "t").unwrap();
        let rgb = pic.to_rgb();
        assert_eq!(&rgb[..6], &[10, 20, 30, 255, 255, 255]);
        assert!((rgb[6] as i32 - 127).abs() <= 1, "half-transparent black on white is mid grey: {}", rgb[6]);
        assert!(Picture::new(2, 2, 3, vec![0; 11], "t").is_err());
        assert!(Picture::new(0, 2, 3, vec![], "t").is_err());
    }

    #[test]
    fn patches_are_in_convolution_order() {
        let px = Pixels { height: 2, width: 4, data: (0..24).map(|i| i as f32).collect() };
        let p = px.patches(2);
        // Patch 0: channel 0 rows (0,1),(4,5); channel 1 (8,9),(12,13); ...
        assert_eq!(&p[..12], &[0., 1., 4., 5., 8., 9., 12., 13., 16., 17., 20., 21.]);
        assert_eq!(&p[12..16], &[2., 3., 6., 7.]);
    }
}
