//! The fuzz corpora as ordinary tests: every file under
//! `crates/tramontane/fuzz/corpus/<target>/` (seeds, entries the fuzzers
//! added, and under `regression/` each crash a fuzzer found) goes through the
//! same `tramontane::fuzzing` function as the fuzz target, so `cargo test`
//! keeps every input that ever broke something, without a fuzzer.
//!
//! A counting allocator bounds memory: no input may make the library hold
//! more than 256 MiB at once (a count in a header must not size an
//! allocation the bytes received cannot back). A request past the bound is
//! refused, which aborts the test binary with the file's name on stderr.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tramontane::fuzzing::TARGETS;

/// The most one input may make the library hold at once.
const LIMIT: usize = 256 << 20;

/// Counts the bytes each thread holds (each target's replay runs on its own
/// test thread; the library runs the input on the calling thread).
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    /// The corpus file being replayed on this thread (its path's bytes),
    /// null when none: only then is the limit enforced.
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Records `size` more bytes on this thread; false if that would pass the
/// limit while a corpus file is replayed (the allocation is then refused).
fn grow(size: usize) -> bool {
    let live = LIVE.try_with(Cell::get).unwrap_or(0);
    let (ptr, len) = CURRENT.try_with(Cell::get).unwrap_or((std::ptr::null(), 0));
    if !ptr.is_null() && live.saturating_add(size) > LIMIT {
        // No allocation here: the message is formatted on the stack.
        let mut buf = [0u8; 512];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        // SAFETY: `replay` keeps the path alive while CURRENT points to it.
        let file = unsafe { std::slice::from_raw_parts(ptr, len) };
        let _ = write!(w, "fuzz_corpora: refused {size} bytes ({live} held) replaying ");
        let _ = w.write_all(file);
        let _ = w.write_all(b"\n");
        let n = w.position() as usize;
        let _ = std::io::stderr().write_all(&buf[..n]);
        return false;
    }
    let _ = LIVE.try_with(|l| l.set(live + size));
    let _ = PEAK.try_with(|p| p.set(p.get().max(live + size)));
    true
}

fn shrink(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !grow(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > layout.size() {
                shrink(new_size - layout.size());
            }
        } else if new_size < layout.size() {
            shrink(layout.size() - new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus")
}

/// Files of `dir`, and of its `regression/` folder, sorted.
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in [dir.to_path_buf(), dir.join("regression")] {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.expect("corpus entry").path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

struct Replayed {
    files: usize,
    peak: usize,
    slowest: (Duration, PathBuf),
}

/// Every corpus file of `target` through its function, each under the memory
/// bound; the corpus must not be empty.
fn replay(target: &str) -> Replayed {
    let f = TARGETS.iter().find(|(name, _)| *name == target).map(|(_, f)| *f).expect("a target");
    let files = corpus_files(&corpus_root().join(target));
    assert!(!files.is_empty(), "the corpus of `{target}` is empty: nothing would be tested");
    let mut out = Replayed { files: files.len(), peak: 0, slowest: (Duration::ZERO, PathBuf::new()) };
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        let name = path.display().to_string();
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        CURRENT.with(|c| c.set((name.as_ptr(), name.len())));
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(|| f(&data));
        let took = t0.elapsed();
        CURRENT.with(|c| c.set((std::ptr::null(), 0)));
        if let Err(e) = result {
            std::panic::resume_unwind(Box::new(format!("{target}: {name} panicked: {:?}", e.downcast_ref::<String>().map(String::as_str).or(e.downcast_ref::<&str>().copied()))));
        }
        let peak = PEAK.with(Cell::get).saturating_sub(base);
        assert!(peak < LIMIT, "{target}: {name} held {peak} bytes at once");
        out.peak = out.peak.max(peak);
        if took > out.slowest.0 {
            out.slowest = (took, path.clone());
        }
    }
    println!(
        "{target}: {} files, peak {} KiB, slowest {:?} ({})",
        out.files,
        out.peak >> 10,
        out.slowest.0,
        out.slowest.1.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    out
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(fuzz.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no fuzz target `{name}`");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "`{name}` is not in fuzz/Cargo.toml");
        assert!(!corpus_files(&corpus_root().join(name)).is_empty(), "no corpus for `{name}`");
    }
    // No corpus left behind by a renamed or removed target.
    for e in std::fs::read_dir(corpus_root()).expect("corpus folder") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "corpus `{name}` belongs to no target");
    }
}

#[test]
fn gguf_header() {
    replay("gguf_header");
}

#[test]
fn safetensors_header() {
    replay("safetensors_header");
}

#[test]
fn config_json() {
    replay("config_json");
}

#[test]
fn gguf_tokenizer() {
    replay("gguf_tokenizer");
}

#[test]
fn safetensors_index() {
    replay("safetensors_index");
}

#[test]
fn chat_template() {
    replay("chat_template");
}

#[test]
fn lying_size_headers() {
    replay("lying_size_headers");
}
