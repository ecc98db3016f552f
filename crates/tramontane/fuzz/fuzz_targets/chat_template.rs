//! A chat template rendered with a request (input: the template, a NUL, the
//! request JSON), under the template fuel limit.
//! See `tramontane::fuzzing::chat_template`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::chat_template(data));
