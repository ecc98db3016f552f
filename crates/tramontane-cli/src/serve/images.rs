//! A chat request's image parts into pictures, off the model's thread:
//! `data:` URLs decoded, `http(s)` URLs fetched (like model files, at most
//! [`MAX_IMAGE_BYTES`] each), then decoded with the size checked from the
//! header first. Every failure is INVALID_REQUEST naming the message and
//! part.

use std::io::Read;
use std::time::Duration;

use tramontane::openai::ImageRef;
use tramontane::vision::{data_url, decode::decode, Picture, MAX_PIXELS};
use tramontane::Error;

/// Most bytes of one image file.
pub const MAX_IMAGE_BYTES: u64 = 32 << 20;

fn fetch(url: &str, what: &str) -> Result<Vec<u8>, Error> {
    let bad = |msg: String| Error::InvalidRequest(format!("{what}: {msg}"));
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into();
    let mut resp = agent.get(url).call().map_err(|e| bad(format!("fetching {url}: {e}")))?;
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("reading {url}: {e}")))?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(bad(format!("{url} is over {MAX_IMAGE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The pictures of `refs`, in order.
pub fn pictures(refs: &[ImageRef]) -> Result<Vec<Picture>, Error> {
    refs.iter()
        .map(|r| {
            let what = r.what();
            let bytes = match data_url(&r.url, &what) {
                Some(b) => b?,
                None if r.url.starts_with("http://") || r.url.starts_with("https://") => fetch(&r.url, &what)?,
                None => return Err(Error::InvalidRequest(format!("{what}: the image URL must be a data: or http(s): URL"))),
            };
            if bytes.len() as u64 > MAX_IMAGE_BYTES {
                return Err(Error::InvalidRequest(format!("{what}: the image is over {MAX_IMAGE_BYTES} bytes")));
            }
            decode(&bytes, MAX_PIXELS, &what)
        })
        .collect()
}
