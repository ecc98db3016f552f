//! GGUF (v2, v3) reader: metadata of every value type, tensor infos, alignment,
//! and split files (`name-00001-of-00003.gguf`).
//!
//! The header is parsed from a prefix of the file that grows on demand (read by
//! range through the [`ModelSource`]), so a browser fetches only the header and
//! then each tensor's bytes. Every count and length is checked against the file
//! size before anything is allocated: a lying header gives an error, never a
//! panic or a huge allocation.

use std::collections::BTreeMap;

use super::{DType, TensorInfo};
use crate::error::{Error, Result};
use crate::source::ModelSource;

pub const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: u32 = 4;
/// Headers larger than this are refused, like safetensors' cap. Real ones are
/// at most a few MB (a 262k-token vocabulary with scores and types is ~7 MB).
pub const MAX_HEADER: u64 = 64 << 20;
/// Metadata array elements in all, over every key. Each costs a `MetaValue`
/// (32 bytes) however small it is in the file, so the byte cap alone would let
/// 64 MiB of u8s become 2 GiB; the largest real vocabularies need under 1M.
pub const MAX_ARRAY_ELEMENTS: u64 = 4 << 20;
/// What a `Vec` is given up front for a count read from the file: more grows
/// with the bytes actually parsed, never with what a header claims.
const PREALLOC: u64 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MetaValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors with absolute file offsets, shapes in row-major order
    /// (GGUF lists dimensions fastest first; these are reversed).
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
}

/// Why parsing stopped early.
#[derive(Debug)]
pub enum Parse {
    Done(GgufHeader),
    /// The header continues past the bytes given: call again with at least this many.
    NeedMore(u64),
}

enum Stop {
    More(u64),
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fail(e)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: u64,
    /// The file size, or the header cap if that is smaller: nothing is read past it.
    file_size: u64,
    file: &'a str,
    /// Array elements parsed so far (bounded by [`MAX_ARRAY_ELEMENTS`]).
    elements: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], Stop> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.file_size).ok_or_else(|| {
            Stop::Fail(Error::format(
                self.file,
                format!("{what} ({n} bytes at offset {}) runs past {}", self.pos, self.limit_name()),
            ))
        })?;
        if end > self.buf.len() as u64 {
            return Err(Stop::More(end));
        }
        let s = &self.buf[self.pos as usize..end as usize];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1, "a value")?[0])
    }
    fn u16(&mut self) -> Result<u16, Stop> {
        let b = self.take(2, "a value")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Stop> {
        let b = self.take(4, "a value")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Stop> {
        let b = self.take(8, "a value")?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn remaining(&self) -> u64 {
        self.file_size - self.pos
    }
    fn rest_name(&self) -> String {
        if self.file_size == MAX_HEADER {
            format!("the {} MiB limit on a GGUF header", MAX_HEADER >> 20)
        } else {
            "the rest of the file".into()
        }
    }
    fn limit_name(&self) -> String {
        if self.file_size == MAX_HEADER {
            format!("the {} MiB limit on a GGUF header", MAX_HEADER >> 20)
        } else {
            format!("the end of the file ({} bytes)", self.file_size)
        }
    }
    fn string(&mut self, what: &str) -> Result<String, Stop> {
        let n = self.u64()?;
        if n > self.remaining() {
            return Err(Stop::Fail(Error::format(
                self.file,
                format!("{what}: string length {n} exceeds {}", self.rest_name()),
            )));
        }
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, Stop> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8()?),
            1 => MetaValue::I8(self.u8()? as i8),
            2 => MetaValue::U16(self.u16()?),
            3 => MetaValue::I16(self.u16()? as i16),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(self.u32()? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32()?)),
            7 => MetaValue::Bool(self.u8()? != 0),
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(Stop::Fail(Error::format(self.file, format!("`{key}`: arrays nested too deep"))));
                }
                let ety = self.u32()?;
                let n = self.u64()?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => 1,
                };
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(Stop::Fail(Error::format(
                        self.file,
                        format!("`{key}`: array of {n} elements exceeds {}", self.rest_name()),
                    )));
                }
                self.elements = self.elements.saturating_add(n);
                if self.elements > MAX_ARRAY_ELEMENTS {
                    return Err(Stop::Fail(Error::format(
                        self.file,
                        format!("`{key}`: metadata arrays hold more than {MAX_ARRAY_ELEMENTS} elements in all"),
                    )));
                }
                let mut v = Vec::with_capacity(n.min(PREALLOC) as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(self.u64()? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64()?)),
            other => {
                return Err(Stop::Fail(Error::format(self.file, format!("`{key}`: unknown metadata value type {other}"))))
            }
        })
    }
}

/// Parse a GGUF header from `buf`, a prefix of a file of `file_size` bytes.
pub fn parse(buf: &[u8], file: &str, file_size: u64) -> Result<Parse> {
    match parse_inner(buf, file, file_size) {
        Ok(h) => Ok(Parse::Done(h)),
        Err(Stop::More(n)) => Ok(Parse::NeedMore(n)),
        Err(Stop::Fail(e)) => Err(e),
    }
}

/// A tensor type the engine cannot read: UNSUPPORTED, naming the type as ggml
/// does (a user can then pick another quantization of the model). An id ggml
/// never had is a malformed file instead.
fn unsupported_type(file: &str, tensor: &str, ty: u32) -> Error {
    match super::ggml_type_name(ty) {
        Some(name) => {
            let readable: Vec<&str> = super::SUPPORTED.iter().filter_map(|d| super::ggml_type_name(d.ggml_type())).collect();
            Error::Unsupported(format!(
                "{file}: tensor `{tensor}` is {name} (GGML type {ty}); the types this engine reads are {}",
                readable.join(", ")
            ))
        }
        None => Error::tensor(file, tensor, format!("GGML type {ty} is not a ggml type")),
    }
}

fn parse_inner(buf: &[u8], file: &str, file_size: u64) -> Result<GgufHeader, Stop> {
    // The header is read within the cap; tensor data is checked against the file.
    let mut c = Cursor { buf, pos: 0, file_size: file_size.min(MAX_HEADER), file, elements: 0 };
    let magic = c.take(4, "the GGUF magic").map_err(|e| match e {
        Stop::Fail(_) => Stop::Fail(Error::format(file, "too short to be a GGUF file")),
        m => m,
    })?;
    if magic != MAGIC {
        return Err(Stop::Fail(Error::format(file, format!("not a GGUF file (magic {magic:02x?})"))));
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        return Err(Stop::Fail(Error::Unsupported(format!("{file}: GGUF version {version} (2 and 3 are supported)"))));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    // Each key-value takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 4 + 8.
    if n_kv.checked_mul(13).is_none_or(|b| b > c.remaining()) || n_tensors.checked_mul(24).is_none_or(|b| b > c.remaining()) {
        return Err(Stop::Fail(Error::format(
            file,
            format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than {}",
                if c.file_size == MAX_HEADER { "a header may hold (64 MiB)" } else { "the file holds" }
            ),
        )));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32()?;
        let v = c.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a <= (1 << 20) && a.is_power_of_two() => a,
            _ => return Err(Stop::Fail(Error::format(file, "general.alignment is not a power of two"))),
        },
    };
    let mut raw = Vec::with_capacity(n_tensors.min(PREALLOC) as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Stop::Fail(Error::tensor(file, &name, format!("{n_dims} dimensions (1 to 4 supported)"))));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let ty = c.u32()?;
        let offset = c.u64()?;
        raw.push((name, dims, ty, offset));
    }
    let data_offset = c.pos.next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty, offset) in raw {
        let dtype = DType::from_ggml(ty).ok_or_else(|| Stop::Fail(unsupported_type(file, &name, ty)))?;
        let numel = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Stop::Fail(Error::tensor(file, &name, "shape overflows")))?;
        if dims[0] % dtype.block().0 != 0 {
            return Err(Stop::Fail(Error::tensor(file, &name, format!("row of {} is not a whole number of {} blocks", dims[0], dtype.name()))));
        }
        let nbytes = dtype.nbytes(numel).ok_or_else(|| Stop::Fail(Error::tensor(file, &name, "size overflows")))?;
        if offset % alignment != 0 {
            return Err(Stop::Fail(Error::tensor(file, &name, format!("offset {offset} is not aligned to {alignment}"))));
        }
        let start = data_offset.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(nbytes));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Stop::Fail(Error::tensor(file, &name, "offset overflows")));
        };
        if end > file_size {
            return Err(Stop::Fail(Error::tensor(
                file,
                &name,
                format!("data {start}..{end} runs past the end of the file ({file_size} bytes)"),
            )));
        }
        tensors.push(TensorInfo {
            name,
            file: file.to_string(),
            dtype,
            shape: dims.iter().rev().copied().collect(),
            offset: start,
            nbytes,
        });
    }
    Ok(GgufHeader { version, metadata, tensors, alignment, data_offset })
}

/// Read and parse the header of `name`, fetching more of the file as needed.
pub async fn read_header<S: ModelSource>(src: &S, name: &str) -> Result<GgufHeader> {
    let file = src.describe(name);
    let size = src.size(name).await?.ok_or_else(|| Error::MissingFile { file: file.clone(), what: "a GGUF file".into() })?;
    let mut buf = src.read(name, 0, size.min(1 << 20)).await?;
    loop {
        match parse(&buf, &file, size)? {
            Parse::Done(mut h) => {
                for t in &mut h.tensors {
                    t.file = name.to_string();
                }
                return Ok(h);
            }
            Parse::NeedMore(n) => {
                // Grow by doubling (few round trips), never past the header cap.
                let want = n.max(buf.len() as u64 * 2).min(size).min(MAX_HEADER);
                let have = buf.len() as u64;
                if want <= have {
                    return Err(Error::format(&file, "header parse made no progress"));
                }
                buf.extend(src.read(name, have, want - have).await?);
            }
        }
    }
}

/// The names of all parts of a split GGUF given its first part
/// (`x-00001-of-00003.gguf` → the three names), or just `name`.
pub fn split_names(name: &str, count: u64) -> Result<Vec<String>> {
    if count <= 1 {
        return Ok(vec![name.to_string()]);
    }
    let marker = format!("-of-{count:05}.gguf");
    let stem = name.strip_suffix(&marker).and_then(|s| s.strip_suffix("00001")).ok_or_else(|| {
        Error::format(name, format!("split into {count} parts, but the name does not end in -00001{marker}"))
    })?;
    Ok((1..=count).map(|i| format!("{stem}{i:05}{marker}")).collect())
}

/// The headers of a GGUF model and of every part it is split into.
pub async fn read_model<S: ModelSource>(src: &S, first: &str) -> Result<Vec<GgufHeader>> {
    let head = read_header(src, first).await?;
    let count = head.get("split.count").and_then(MetaValue::as_u64).unwrap_or(1);
    if count > 1000 {
        return Err(Error::format(&src.describe(first), format!("split.count {count} is implausible")));
    }
    let names = split_names(first, count)?;
    let mut parts = vec![head];
    for n in names.iter().skip(1) {
        if src.size(n).await?.is_none() {
            return Err(Error::MissingFile { file: src.describe(n), what: format!("part of the split model {first}") });
        }
        parts.push(read_header(src, n).await?);
    }
    Ok(parts)
}
