//! The safetensors header: 8-byte little-endian length, then a JSON table of
//! tensors with byte ranges relative to the end of the header.
//!
//! The `safetensors` crate validates a header against a buffer holding the whole
//! file; we stream tensors straight to the GPU and never hold a whole shard, so
//! the header is read on its own here and every range is checked against the
//! file size instead.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{DType, TensorInfo};
use crate::error::{Error, Result};

/// Headers larger than this are refused (real ones are a few hundred KB).
pub const MAX_HEADER: u64 = 100 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Bytes of the length prefix.
pub const PREFIX: u64 = 8;

/// Validate the 8-byte prefix against the file size; returns the header length.
pub fn header_len(prefix: &[u8], file: &str, file_size: u64) -> Result<u64> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::format(file, "shorter than a safetensors header"))?;
    let n = u64::from_le_bytes(bytes);
    if n > MAX_HEADER || n > file_size.saturating_sub(PREFIX) {
        return Err(Error::format(
            file,
            format!("safetensors header length {n} is larger than the file ({file_size} bytes)"),
        ));
    }
    Ok(n)
}

/// Parse the header JSON; tensors are checked against `file_size`.
pub fn parse_header(json: &[u8], file: &str, file_size: u64) -> Result<Vec<TensorInfo>> {
    let data_start = PREFIX + json.len() as u64;
    let table: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| Error::format(file, format!("safetensors header is not valid JSON: {e}")))?;
    let mut out = Vec::with_capacity(table.len());
    for (name, value) in table {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(value)
            .map_err(|err| Error::tensor(file, &name, format!("bad header entry: {err}")))?;
        let dtype = match e.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(Error::tensor(
                    file,
                    &name,
                    format!("dtype {other} is not supported (F32, F16, BF16)"),
                ))
            }
        };
        let numel = e
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::tensor(file, &name, "shape overflows"))?;
        let (begin, end) = e.data_offsets;
        let nbytes = dtype
            .nbytes(numel)
            .ok_or_else(|| Error::tensor(file, &name, "size overflows"))?;
        if end < begin || end - begin != nbytes {
            return Err(Error::tensor(
                file,
                &name,
                format!("byte range {begin}..{end} does not hold shape {:?} of {}", e.shape, e.dtype),
            ));
        }
        let abs_end = data_start.checked_add(end);
        if abs_end.is_none_or(|x| x > file_size) {
            return Err(Error::tensor(
                file,
                &name,
                format!(
                    "data {begin}..{end} (after a {}-byte header) runs past the end of the file ({file_size} bytes)",
                    data_start
                ),
            ));
        }
        out.push(TensorInfo {
            name,
            file: file.to_string(),
            dtype,
            shape: e.shape,
            offset: data_start + begin,
            nbytes,
        });
    }
    Ok(out)
}
