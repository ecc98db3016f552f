//! SentencePiece's `tokenizer.model` (a protobuf `ModelProto`) as a
//! `tokenizers` tokenizer, for Hugging Face folders that ship no
//! tokenizer.json. Only BPE models: they become exactly the tokenizer the GGUF
//! `llama` path builds (`gguf_tokenizer::spm_json`). Checked against the
//! sentencepiece library (tests/suite/tokenizers.rs).
//!
//! A minimal protobuf reader: only the fields below are read, everything else
//! is skipped by wire type; a repeated message field merges (protobuf rules).

use super::gguf_tokenizer::{finish, spm_json, SpecialIds, SpmVocab, NORMAL};
use super::Tokenizer;
use crate::error::{Error, Result};

// Field numbers of sentencepiece_model.proto.
const MODEL_PIECES: u64 = 1;
const MODEL_TRAINER: u64 = 2;
const MODEL_NORMALIZER: u64 = 3;
const PIECE_TEXT: u64 = 1;
const PIECE_SCORE: u64 = 2;
const PIECE_TYPE: u64 = 3;
const TRAINER_MODEL_TYPE: u64 = 3;
const TRAINER_SUFFIX_SPACE: u64 = 24;
const TRAINER_UNK: u64 = 40;
const TRAINER_BOS: u64 = 41;
const TRAINER_EOS: u64 = 42;
const NORM_NAME: u64 = 1;
const NORM_CHARSMAP: u64 = 2;
const NORM_DUMMY_PREFIX: u64 = 3;
const NORM_EXTRA_SPACES: u64 = 4;
const NORM_ESCAPE_SPACES: u64 = 5;

/// TrainerSpec.ModelType.
const UNIGRAM: u64 = 1;
const BPE: u64 = 2;

/// What we read of a ModelProto, with the proto's defaults.
struct Model {
    tokens: Vec<String>,
    scores: Vec<f64>,
    types: Vec<u64>,
    model_type: u64,
    suffix_space: bool,
    unk: i64,
    bos: i64,
    eos: i64,
    normalizer: String,
    charsmap: bool,
    dummy_prefix: bool,
    extra_spaces: bool,
    escape_spaces: bool,
}

pub fn from_sentencepiece_model(bytes: &[u8], file: &str) -> Result<Tokenizer> {
    let m = read_model(bytes).map_err(|e| Error::format(file, format!("not a SentencePiece model: {e}")))?;
    if m.tokens.is_empty() {
        return Err(Error::format(file, "the SentencePiece model has no pieces"));
    }
    match m.model_type {
        BPE => {}
        UNIGRAM => return Err(Error::Unsupported(format!("{file}: SentencePiece Unigram model (only BPE is supported)"))),
        t => return Err(Error::Unsupported(format!("{file}: SentencePiece model type {t} (only BPE is supported)"))),
    }
    // Settings that change tokenization and that the shared SentencePiece
    // tokenizer does not reproduce: refuse rather than tokenize differently.
    if m.charsmap && m.normalizer != "identity" {
        return Err(Error::Unsupported(format!("{file}: SentencePiece normalizer `{}`", m.normalizer)));
    }
    if m.suffix_space || !m.escape_spaces {
        return Err(Error::Unsupported(format!("{file}: SentencePiece without a leading `▁` per word")));
    }
    // A negative id (`-1`) means the model has no such token.
    let n = m.tokens.len();
    let id = |v: i64| u32::try_from(v).ok().filter(|&i| (i as usize) < n);
    // SentencePiece's (and llama.cpp's) rule: BOS before a text prompt.
    let ids = SpecialIds { bos: id(m.bos), eos: id(m.eos), add_bos: true, add_eos: false };
    let v = SpmVocab {
        add_space_prefix: m.dummy_prefix,
        remove_extra_whitespaces: m.extra_spaces,
        unk: id(m.unk),
        tokens: m.tokens,
        scores: m.scores,
        types: m.types,
    };
    finish(&spm_json(&v), file, &v.tokens, ids)
}

fn read_model(bytes: &[u8]) -> std::result::Result<Model, String> {
    let mut m = Model {
        tokens: Vec::new(),
        scores: Vec::new(),
        types: Vec::new(),
        model_type: UNIGRAM,
        suffix_space: false,
        unk: 0,
        bos: 1,
        eos: 2,
        normalizer: String::new(),
        charsmap: false,
        dummy_prefix: true,
        extra_spaces: true,
        escape_spaces: true,
    };
    let mut r = Reader { buf: bytes };
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (MODEL_PIECES, Value::Bytes(b)) => read_piece(b, &mut m)?,
            (MODEL_TRAINER, Value::Bytes(b)) => read_trainer(b, &mut m)?,
            (MODEL_NORMALIZER, Value::Bytes(b)) => read_normalizer(b, &mut m)?,
            (MODEL_PIECES | MODEL_TRAINER | MODEL_NORMALIZER, _) => return Err(format!("field {field} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(m)
}

fn read_piece(b: &[u8], m: &mut Model) -> std::result::Result<(), String> {
    let (mut text, mut score, mut ty) = (None, 0.0f32, NORMAL);
    let mut r = Reader { buf: b };
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (PIECE_TEXT, Value::Bytes(s)) => {
                text = Some(String::from_utf8(s.to_vec()).map_err(|_| "a piece is not UTF-8".to_string())?)
            }
            (PIECE_SCORE, Value::Fixed32(v)) => score = f32::from_bits(v),
            (PIECE_TYPE, Value::Varint(v)) => ty = v,
            (PIECE_TEXT | PIECE_SCORE | PIECE_TYPE, _) => return Err(format!("piece field {field} has the wrong wire type")),
            _ => {}
        }
    }
    m.tokens.push(text.ok_or_else(|| format!("piece {} has no text", m.tokens.len()))?);
    m.scores.push(f64::from(score));
    m.types.push(ty);
    Ok(())
}

fn read_trainer(b: &[u8], m: &mut Model) -> std::result::Result<(), String> {
    let mut r = Reader { buf: b };
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (TRAINER_MODEL_TYPE, Value::Varint(v)) => m.model_type = v,
            (TRAINER_SUFFIX_SPACE, Value::Varint(v)) => m.suffix_space = v != 0,
            // int32 on the wire: negative values are 64-bit two's complement.
            (TRAINER_UNK, Value::Varint(v)) => m.unk = v as i64,
            (TRAINER_BOS, Value::Varint(v)) => m.bos = v as i64,
            (TRAINER_EOS, Value::Varint(v)) => m.eos = v as i64,
            _ => {}
        }
    }
    Ok(())
}

fn read_normalizer(b: &[u8], m: &mut Model) -> std::result::Result<(), String> {
    let mut r = Reader { buf: b };
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (NORM_NAME, Value::Bytes(s)) => m.normalizer = String::from_utf8_lossy(s).into_owned(),
            (NORM_CHARSMAP, Value::Bytes(s)) => m.charsmap = !s.is_empty(),
            (NORM_DUMMY_PREFIX, Value::Varint(v)) => m.dummy_prefix = v != 0,
            (NORM_EXTRA_SPACES, Value::Varint(v)) => m.extra_spaces = v != 0,
            (NORM_ESCAPE_SPACES, Value::Varint(v)) => m.escape_spaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Protobuf wire format: (field number, value) pairs until the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large".to_string())?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("field {field}: unsupported wire type {w}")),
        };
        Ok(Some((field, value)))
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("a field claims {n} bytes, {} remain", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}
