//! Where model bytes come from. The engine never assumes blocking I/O: it asks a
//! [`ModelSource`] for byte ranges of named files and awaits them. The native
//! [`DirSource`] reads a folder; the browser runtime implements the same trait
//! over `fetch` (HTTP Range or streamed bodies).

use crate::error::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
mod dir;
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
    async fn read_all(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        match self.size(name).await? {
            None => Ok(None),
            Some(n) if n > max_len => Err(Error::format(
                &self.describe(name),
                format!("file is {n} bytes, more than the {max_len} expected of it"),
            )),
            Some(n) => Ok(Some(self.read(name, 0, n).await?)),
        }
    }
}
