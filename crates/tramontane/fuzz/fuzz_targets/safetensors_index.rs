//! `model.safetensors.index.json` and the shards it names, read through
//! `TensorTable::read` (input: the index, a NUL, the shard bytes).
//! See `tramontane::fuzzing::safetensors_index`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tramontane::fuzzing::safetensors_index(data));
