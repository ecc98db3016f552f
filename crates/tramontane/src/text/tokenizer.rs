use crate::error::{Error, Result};

/// A tokenizer plus what the model says about its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub bos_text: Option<String>,
    pub eos_text: Option<String>,
}

impl Tokenizer {
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::format(file, format!("cannot build the tokenizer: {e}")))?;
        Ok(Tokenizer { inner, bos: None, eos: Vec::new(), bos_text: None, eos_text: None })
    }

    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer { inner, bos: None, eos: Vec::new(), bos_text: None, eos_text: None }
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, special tokens recognized, nothing added (templates
    /// and callers add BOS themselves).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
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
}

impl StreamDecoder {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true)?;
        if text.ends_with('\u{fffd}') {
            return Ok(String::new());
        }
        let piece = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len().max(self.emitted);
        Ok(piece)
    }

    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids, true)
    }
}
