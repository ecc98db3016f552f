//! `config.json` of a Hugging Face folder, parsed and checked as the loader
//! does (and the RoPE table computed from it).
//! See `tramontane::fuzzing::config_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::config_json(data));
