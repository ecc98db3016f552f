//! The safetensors header reader on arbitrary bytes: length prefix, JSON table,
//! and the single-file path of `TensorTable::read`.
//! See `tramontane::fuzzing::safetensors_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::safetensors_header(data));
