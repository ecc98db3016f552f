use std::sync::OnceLock;

use crate::error::{Error, Result};

/// A tokenizer plus what the model says about its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same vocabulary with special (control) tokens not recognized in
    /// text, built on first use: `parse_special = false` encodes "<s>" as the
    /// characters `<`, `s`, `>` as llama.cpp's and mistral-common's plain
    /// encoding does.
    plain: OnceLock<std::result::Result<tokenizers::Tokenizer, String>>,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub bos_text: Option<String>,
    pub eos_text: Option<String>,
    /// The tokenizer's own rule for text prompts: prepend BOS / append EOS
    /// (GGUF `tokenizer.ggml.add_bos_token`, HF `tokenizer_config.json` /
    /// post-processor). Chat prompts never use these: the template writes them.
    pub add_bos: bool,
    pub add_eos: bool,
    /// Things the loader guessed (e.g. a GGUF without `tokenizer.ggml.pre`).
    pub warnings: Vec<String>,
}

impl Tokenizer {
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::format(file, format!("cannot build the tokenizer: {e}")))?;
        Ok(Self::from_tokenizer(inner))
    }

    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer {
            inner,
            plain: OnceLock::new(),
            bos: None,
            eos: Vec::new(),
            bos_text: None,
            eos_text: None,
            add_bos: false,
            add_eos: false,
            warnings: Vec::new(),
        }
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, special tokens recognized, nothing added: what
    /// a rendered chat template is encoded with (the template wrote BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false, true)
    }

    /// A text prompt: the tokenizer's own BOS/EOS rule, special-token texts
    /// recognized (HF `tokenizer(text)`, llama.cpp's prompt tokenization).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true, true)
    }

    /// `add_special`: apply the tokenizer's BOS/EOS rule. `parse_special`:
    /// special-token texts become their ids (else they are plain text).
    pub fn encode_with(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let tok = if parse_special { &self.inner } else { self.plain()? };
        let enc = tok.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos.first().copied());
        }
        Ok(ids)
    }

    fn plain(&self) -> Result<&tokenizers::Tokenizer> {
        self.plain
            .get_or_init(|| {
                // Rebuild from the serialized form with special added tokens
                // dropped (non-special added tokens still split, as in llama.cpp).
                let mut v: serde_json::Value = serde_json::from_str(&self.inner.to_string(false).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                if let Some(a) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
                    a.retain(|t| t.get("special").and_then(|s| s.as_bool()) != Some(true));
                }
                if let Some(p) = v.get_mut("post_processor") {
                    *p = serde_json::Value::Null;
                }
                let bytes = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
                tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Tokenizer(format!("cannot build the plain-text tokenizer: {e}")))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes that do not
/// yet form a whole character (a multi-byte character split over tokens).
#[derive(Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
    /// Keep special tokens' texts (to find tool-call markers such as
    /// Mistral's `[TOOL_CALLS]`, a control token).
    keep_special: bool,
}

impl StreamDecoder {
    pub fn keeping_special() -> Self {
        StreamDecoder { keep_special: true, ..Default::default() }
    }

    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, !self.keep_special)?;
        if text.ends_with('\u{fffd}') {
            return Ok(String::new());
        }
        let piece = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len().max(self.emitted);
        Ok(piece)
    }

    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids, !self.keep_special)
    }
}
