//! A tokenizer built from GGUF metadata (a GGUF file, or a compact description
//! of the `tokenizer.ggml.*` keys), then used to encode and decode.
//! See `tramontane::fuzzing::gguf_tokenizer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::gguf_tokenizer(data));
