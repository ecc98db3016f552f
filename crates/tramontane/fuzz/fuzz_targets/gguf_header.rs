//! The GGUF header parser on arbitrary bytes: it must return a header, ask for
//! more bytes, or give an error; never panic, loop or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tramontane::parse::gguf::{parse, Parse};

fuzz_target!(|data: &[u8]| {
    // Whole file, and the same bytes as a prefix of a (claimed) larger file.
    let _ = parse(data, "fuzz.gguf", data.len() as u64);
    if let Ok(Parse::NeedMore(n)) = parse(data, "fuzz.gguf", data.len() as u64 + 4096) {
        assert!(n > data.len() as u64);
    }
});
