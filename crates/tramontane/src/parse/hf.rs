//! A Hugging Face model folder: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Produces the table of every tensor.

use std::collections::{BTreeMap, HashMap};

use super::{safetensors, TensorInfo};
use crate::error::{Error, Result};
use crate::source::ModelSource;

pub const INDEX: &str = "model.safetensors.index.json";
pub const SINGLE: &str = "model.safetensors";

#[derive(Debug, Default)]
pub struct TensorTable {
    pub tensors: HashMap<String, TensorInfo>,
    /// Shards with their sizes, in a stable order.
    pub files: Vec<(String, u64)>,
}

/// A name from a file that is joined to the model's folder or URL prefix:
/// plain segments only. No `.`/`..`, no percent-escapes (a server decodes
/// `%2e%2e/` into `../`), no backslashes, no query or fragment characters,
/// no control characters: the name cannot reach outside the model.
pub(crate) fn plain_relative_path(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.chars().any(|c| matches!(c, '%' | '\\' | '?' | '#' | ':') || c.is_control())
        })
}

/// Image-taking checkpoints nest the text model: transformers 5 saves
/// `model.language_model.*` and `lm_head.*`, the published ones (and older
/// transformers) `language_model.model.*` and `language_model.lm_head.*`;
/// the image side is `[model.]vision_tower.*` and
/// `[model.]multi_modal_projector.*`. The table keys every tensor by the
/// plain text model's names and `vision_tower.*` /
/// `multi_modal_projector.*`, so one naming serves all (a tensor keeps its
/// file's own name for messages).
pub fn canonical_name(name: &str) -> String {
    const PREFIXES: [(&str, &str); 5] = [
        ("model.language_model.", "model."),
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ];
    for (from, to) in PREFIXES {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    name.to_string()
}

impl TensorTable {
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Read the headers of every shard of a safetensors model.
    pub async fn read<S: ModelSource>(src: &S) -> Result<Self> {
        let shards: Vec<String> = match src.read_all(INDEX, 64 << 20).await? {
            Some(bytes) => {
                let file = src.describe(INDEX);
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::format(&file, format!("not valid JSON: {e}")))?;
                let map = v
                    .get("weight_map")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| Error::format(&file, "no `weight_map` object"))?;
                let mut set = BTreeMap::new();
                for (tensor, shard) in map {
                    let shard = shard.as_str().ok_or_else(|| {
                        Error::format(&file, format!("weight_map entry `{tensor}` is not a file name"))
                    })?;
                    if !plain_relative_path(shard) {
                        return Err(Error::format(&file, format!("shard name `{shard}` is not a plain file name inside the model's folder")));
                    }
                    set.insert(shard.to_string(), ());
                }
                set.into_keys().collect()
            }
            None => vec![SINGLE.to_string()],
        };
        let mut table = TensorTable::default();
        for shard in shards {
            let file = src.describe(&shard);
            let size = src.size(&shard).await?.ok_or_else(|| Error::MissingFile {
                file: file.clone(),
                what: if shard == SINGLE {
                    format!("the weights: neither {INDEX} nor {SINGLE} exists")
                } else {
                    format!("a shard named by {INDEX}")
                },
            })?;
            let prefix = src.read(&shard, 0, safetensors::PREFIX.min(size)).await?;
            let n = safetensors::header_len(&prefix, &file, size)?;
            let json = src.read(&shard, safetensors::PREFIX, n).await?;
            for t in safetensors::parse_header(&json, &file, size)? {
                let mut t = t;
                t.file = shard.clone();
                if table.tensors.insert(canonical_name(&t.name), t).is_some() {
                    return Err(Error::format(&file, "a tensor appears in two shards"));
                }
            }
            table.files.push((shard, size));
        }
        Ok(table)
    }
}

impl TensorTable {
    /// The tensor table of a GGUF model (all parts of a split file).
    pub fn from_gguf(parts: &[super::gguf::GgufHeader]) -> Result<Self> {
        let mut table = TensorTable::default();
        for p in parts {
            for t in &p.tensors {
                if table.tensors.insert(t.name.clone(), t.clone()).is_some() {
                    return Err(Error::tensor(&t.file, &t.name, "appears in two parts of the split model"));
                }
            }
            if let Some(t) = p.tensors.first() {
                table.files.push((t.file.clone(), 0));
            }
        }
        Ok(table)
    }
}
