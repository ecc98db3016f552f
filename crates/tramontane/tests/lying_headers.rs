//! Headers that lie about counts and sizes (a small file whose server claims
//! 8 GB, a GGUF claiming 2^40 tensors, arrays of billions of elements) end in
//! a typed error with memory bounded by the bytes actually there: a counting
//! allocator measures the peak of each case. The tests here take turns (a
//! lock), so no other test in this binary allocates at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tramontane::parse::gguf::{self, Parse};
use tramontane::fuzzing::MemSource;
use tramontane::Result;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`; return what it gave and the most memory it held at once beyond
/// what was live before.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst) - before)
}

/// The worst a header can cost: 64 MiB of bytes read, plus 4M metadata array
/// elements at 32 bytes each (128 MiB) — far below the 1 GiB a tab can spare.
const LIMIT: usize = 256 << 20;
const EIGHT_GB: u64 = 8_000_000_000;

fn gguf_start(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn key(b: &mut Vec<u8>, k: &str, ty: u32) {
    b.extend((k.len() as u64).to_le_bytes());
    b.extend(k.as_bytes());
    b.extend(ty.to_le_bytes());
}

/// Through a source of which only `data` exists, said to be `claimed` bytes:
/// reads past the data fail as a dropped connection would.
fn read_header(data: Vec<u8>, claimed: u64) -> Result<gguf::GgufHeader> {
    let src = MemSource::default().with("lying.gguf", &data, claimed);
    pollster::block_on(gguf::read_header(&src, "lying.gguf"))
}

#[test]
fn lying_gguf_headers_fail_in_bounded_memory() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("2^40 tensors", gguf_start(1 << 40, 0), "tensors"));
    // Plausible counts whose bytes never come.
    cases.push(("1M tensors, no bytes", gguf_start(1_000_000, 0), ""));
    cases.push(("1M keys, no bytes", gguf_start(0, 1_000_000), ""));
    let mut b = gguf_start(0, 1);
    key(&mut b, "tokenizer.ggml.tokens", 9);
    b.extend(0u32.to_le_bytes());
    b.extend((1u64 << 34).to_le_bytes());
    cases.push(("an array of 2^34 u8s", b, "elements"));
    let mut b = gguf_start(0, 1);
    key(&mut b, "tokenizer.ggml.tokens", 9);
    b.extend(8u32.to_le_bytes());
    b.extend(3_000_000u64.to_le_bytes());
    cases.push(("3M strings, no bytes", b, ""));
    let mut b = gguf_start(0, 2);
    for k in ["a", "b"] {
        key(&mut b, k, 9);
        b.extend(0u32.to_le_bytes());
        b.extend(3_000_000u64.to_le_bytes());
        if k == "a" {
            b.extend(vec![7u8; 3_000_000]);
        }
    }
    cases.push(("two arrays of 3M elements", b, "elements in all"));
    let mut b = gguf_start(0, 1);
    key(&mut b, "general.name", 8);
    b.extend((1u64 << 33).to_le_bytes());
    cases.push(("an 8 GiB string", b, "MiB limit"));
    let mut b = gguf_start(0, 1);
    b.extend((1u64 << 62).to_le_bytes());
    cases.push(("a 2^62-byte key", b, "MiB limit"));

    // `says` empty: a plausible prefix of a larger header (more is asked for).
    for (what, data, says) in cases {
        // Through a source: the claimed size is never allocated, and the
        // bytes that never come end the read in a typed error.
        let (r, peak) = peak_of(|| read_header(data.clone(), EIGHT_GB));
        let e = r.expect_err(what);
        assert!(matches!(e.code(), "MODEL_FORMAT" | "NETWORK"), "{what}: {e}");
        assert!(peak < LIMIT, "{what}: {peak} bytes at the peak");
        // The parser on the bytes there, in a file claimed to be 8 GB.
        let (r, peak) = peak_of(|| gguf::parse(&data, "lying.gguf", EIGHT_GB));
        match r {
            Ok(Parse::NeedMore(n)) => {
                assert!(says.is_empty(), "{what}: asks for more instead of saying {says:?}");
                assert!(n > data.len() as u64 && n <= gguf::MAX_HEADER, "{what}: asks for {n} bytes");
            }
            Err(e) => {
                assert_eq!(e.code(), "MODEL_FORMAT", "{what}: {e}");
                assert!(!says.is_empty() && e.to_string().contains(says), "{what}: `{e}` should say {says:?}");
            }
            Ok(Parse::Done(_)) => panic!("{what}: parsed"),
        }
        assert!(peak < LIMIT, "{what}: {peak} bytes at the peak (8 GB claimed)");
        // The same bytes claiming to be the whole file.
        let (r, peak) = peak_of(|| gguf::parse(&data, "lying.gguf", data.len() as u64));
        assert!(r.is_err(), "{what}: parsed as a whole file");
        assert!(peak < LIMIT, "{what}: {peak} bytes at the peak (whole file)");
    }

    // A prefix asks for more, within the header cap, never past it.
    let data = gguf_start(1_000_000, 0);
    match gguf::parse(&data, "lying.gguf", EIGHT_GB) {
        Ok(Parse::NeedMore(n)) => assert!(n > data.len() as u64 && n <= gguf::MAX_HEADER),
        other => panic!("a valid prefix: {other:?}"),
    }
}

#[test]
fn safetensors_headers_cost_about_their_bytes() {
    use tramontane::parse::safetensors::parse_header;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 10_000_000;
    // Ten million dimensions: refused at the ninth, the JSON never becomes a tree.
    let shape = format!(r#"{{"t":{{"dtype":"F32","shape":[{}1],"data_offsets":[0,4]}}}}"#, "1,".repeat(n));
    let (r, peak) = peak_of(|| parse_header(shape.as_bytes(), "x.safetensors", EIGHT_GB));
    let e = r.expect_err("too many dimensions");
    assert!(e.to_string().contains("`t`") && e.to_string().contains("dimensions"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes at the peak for a {}-byte header", shape.len());
    // Metadata is skipped unread, however large.
    let meta = format!(r#"{{"__metadata__":{{"a":[{}0]}},"t":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#, "0,".repeat(n));
    let (r, peak) = peak_of(|| parse_header(meta.as_bytes(), "x.safetensors", EIGHT_GB));
    assert_eq!(r.expect("valid").len(), 1);
    assert!(peak < 1 << 20, "{peak} bytes at the peak for metadata of {} bytes", meta.len());
}
