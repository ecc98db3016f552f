//! A model folder on the local file system (native builds).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ModelSource;
use crate::error::{Error, Result};

pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl AsRef<Path>) -> Self {
        DirSource { root: root.as_ref().to_path_buf() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl ModelSource for DirSource {
    async fn size(&self, name: &str) -> Result<Option<u64>> {
        match std::fs::metadata(self.path(name)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { file: self.describe(name), msg: e.to_string() }),
        }
    }

    async fn read(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let io = |e: std::io::Error| Error::Io { file: self.describe(name), msg: e.to_string() };
        let mut f = File::open(self.path(name)).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let end = offset.checked_add(len).filter(|&e| e <= size).ok_or_else(|| {
            Error::format(
                &self.describe(name),
                format!("read of {len} bytes at {offset} runs past the end ({size} bytes)"),
            )
        })?;
        let _ = end;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
