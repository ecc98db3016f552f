//! The safetensors header: 8-byte little-endian length, then a JSON table of
//! tensors with byte ranges relative to the end of the header.
//!
//! The `safetensors` crate validates a header against a buffer holding the whole
//! file; we stream tensors straight to the GPU and never hold a whole shard, so
//! the header is read on its own here and every range is checked against the
//! file size instead.

use std::cell::RefCell;
use std::collections::HashSet;

use serde::Deserialize;

use super::{DType, TensorInfo};
use crate::error::{Error, Result};

/// Headers larger than this are refused (real ones are a few hundred KB).
pub const MAX_HEADER: u64 = 100 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    #[serde(deserialize_with = "shape")]
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Most dimensions a tensor may have (so a header of `[1,1,1,...]` cannot
/// turn 100 MB of JSON into 400 MB of shapes).
const MAX_DIMS: usize = 8;

fn shape<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u64>, D::Error> {
    struct Dims;
    impl<'de> serde::de::Visitor<'de> for Dims {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_DIMS} dimensions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() == MAX_DIMS {
                    return Err(serde::de::Error::custom(format!("more than {MAX_DIMS} dimensions")));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(Dims)
}

/// The header's table read straight into entries (no `serde_json::Value`
/// tree, which costs ~16× the JSON's bytes), `__metadata__` skipped unread.
/// A bad entry's name is kept for the error.
struct Table<'a> {
    bad: &'a RefCell<Option<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Table<'_> {
    type Value = Vec<(String, Entry)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Table<'_> {
    type Value = Vec<(String, Entry)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a JSON object of tensors")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            match map.next_value::<Entry>() {
                Ok(e) => out.push((name, e)),
                Err(e) => {
                    *self.bad.borrow_mut() = Some(name);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
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
    let bad = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(json);
    let table = serde::de::DeserializeSeed::deserialize(Table { bad: &bad }, &mut de)
        .and_then(|t| de.end().map(|()| t))
        .map_err(|e| match bad.borrow_mut().take() {
            Some(name) => Error::tensor(file, &name, format!("bad header entry: {e}")),
            None => Error::format(file, format!("safetensors header is not valid JSON: {e}")),
        })?;
    let mut out = Vec::with_capacity(table.len());
    let mut seen = HashSet::new();
    for (name, e) in table {
        if !seen.insert(name.clone()) {
            return Err(Error::tensor(file, &name, "listed twice in the header"));
        }
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
