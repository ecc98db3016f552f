//! GGUF and safetensors headers from a source whose size claims up to 1 TiB
//! more than the bytes it holds.
//! See `tramontane::fuzzing::lying_size_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::lying_size_headers(data));
