//! Where model bytes come from. The engine never assumes blocking I/O: it asks a
//! [`ModelSource`] for byte ranges of named files and awaits them. The native
//! [`DirSource`] reads a folder; the browser runtime implements the same trait
//! over `fetch` (HTTP Range or streamed bodies), and the CLI over a blocking
//! HTTP client; [`http`] holds the rules those two share.

use crate::error::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
mod dir;
pub mod http;
#[cfg(not(target_arch = "wasm32"))]
pub use dir::DirSource;

/// A read-only set of named files (a model folder, a repo, a GGUF and its parts).
#[allow(async_fn_in_trait)]
pub trait ModelSource {
    /// Size in bytes of `name`, or `None` if it does not exist.
    async fn size(&self, name: &str) -> Result<Option<u64>>;
    /// Exactly `len` bytes of `name` starting at `offset`. A short file is an
    /// error (the caller has checked ranges against [`ModelSource::size`]).
    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// How to name `name` in messages (a path or a URL).
    fn describe(&self, name: &str) -> String {
        name.to_string()
    }

    /// The whole of a small file (configs, tokenizer), or `None` if absent.
    ///
    /// A size over `max_len` is checked against the bytes before the file is
    /// called too big: a server that claims 8 GB for a small file is a NETWORK
    /// error (its body ends early), not a malformed model. The bytes read to
    /// tell are dropped as they come, in pieces of [`http::PROBE`] (one byte
    /// over the limit is read, no more).
    async fn read_all(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        let Some(size) = self.size(name).await? else { return Ok(None) };
        if size > max_len {
            let stop = max_len.saturating_add(1);
            let mut at = 0;
            while at < stop {
                let n = (stop - at).min(http::PROBE);
                self.read(name, at, n).await?;
                at += n;
            }
            return Err(Error::format(
                &self.describe(name),
                format!("file is more than the {max_len} bytes expected of it (its size is given as {size})"),
            ));
        }
        Ok(Some(self.read(name, 0, size).await?))
    }
}
