//! The safetensors header reader on arbitrary bytes: length prefix, then JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tramontane::parse::safetensors::{header_len, parse_header, PREFIX};

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    if let Ok(n) = header_len(data, "fuzz.safetensors", size) {
        let end = (PREFIX + n) as usize;
        if let Some(json) = data.get(PREFIX as usize..end) {
            if let Ok(tensors) = parse_header(json, "fuzz.safetensors", size) {
                for t in tensors {
                    assert!(t.offset + t.nbytes <= size);
                }
            }
        }
    }
});
