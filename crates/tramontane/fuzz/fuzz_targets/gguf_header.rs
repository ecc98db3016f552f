//! The GGUF header parser on arbitrary bytes (whole file, prefix of a larger one,
//! the async reader): a header, a request for more bytes or an error; never a
//! panic, a loop or an allocation without bound.
//! See `tramontane::fuzzing::gguf_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::gguf_header(data));
