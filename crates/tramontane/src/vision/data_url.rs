//! `data:` URLs, the way OpenAI's clients send images inline:
//! `data:[<media type>][;base64],<data>`.

use base64::Engine;

use crate::error::{Error, Result};

/// The bytes of `url` if it is a `data:` URL (`None` otherwise); a data URL
/// that is not base64, or whose base64 is broken, is INVALID_REQUEST naming
/// `what`. Only the size of the decoded bytes is allocated.
pub fn data_url(url: &str, what: &str) -> Option<Result<Vec<u8>>> {
    let rest = url.strip_prefix("data:").or_else(|| url.strip_prefix("DATA:"))?;
    let Some((meta, data)) = rest.split_once(',') else {
        return Some(Err(Error::InvalidRequest(format!("{what}: a data: URL without a comma"))));
    };
    if !meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
        return Some(Err(Error::InvalidRequest(format!("{what}: a data: URL that is not base64 (`;base64,` is needed for images)"))));
    }
    // Whitespace some encoders wrap lines with is not part of the data.
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| Error::InvalidRequest(format!("{what}: the data: URL's base64 is broken ({e})"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_decode_or_say_why_not() {
        assert_eq!(data_url("data:image/png;base64,aGVsbG8=", "x").unwrap().unwrap(), b"hello");
        assert_eq!(data_url("data:;base64,aGVs\nbG8=", "x").unwrap().unwrap(), b"hello");
        assert!(data_url("https://example.com/a.png", "x").is_none());
        assert!(data_url("data:image/png,hello", "x").unwrap().is_err());
        assert!(data_url("data:image/png;base64,a!b", "x").unwrap().is_err());
        assert!(data_url("data:image/png;base64", "x").unwrap().is_err());
    }
}
