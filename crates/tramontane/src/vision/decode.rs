//! Image files to pixels, natively (PNG, JPEG, WebP) with the `image` crate.
//! The size is read from the header and checked before anything is decoded;
//! a corrupt or truncated file is an INVALID_REQUEST naming `what`.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits};

use super::preprocess::Picture;
use crate::error::{Error, Result};

/// `bytes` decoded, refused before decoding if it has more than `max_pixels`
/// pixels. Transparency is kept (RGBA) for the processor to composite.
pub fn decode(bytes: &[u8], max_pixels: u64, what: &str) -> Result<Picture> {
    let bad = |msg: String| Error::InvalidRequest(format!("{what}: {msg}"));
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(format!("unreadable: {e}")))?;
    if reader.format().is_none() {
        return Err(bad("not a PNG, JPEG or WebP image".into()));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| bad(format!("not a readable image: {e}")))?;
    if w as u64 * h as u64 > max_pixels {
        return Err(bad(format!("{w}x{h} is over the limit of {max_pixels} pixels")));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(format!("unreadable: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(w as u64 * h as u64 * 16 + (1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(format!("not a readable image: {e}")))?;
    let (channels, pixels) = if img.color().has_alpha() {
        (4, DynamicImage::into_rgba8(img).into_raw())
    } else {
        (3, DynamicImage::into_rgb8(img).into_raw())
    };
    Picture::new(w, h, channels, pixels, what)
}
