//! Helpers shared by the suite's tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tramontane::source::DirSource;
use tramontane::{Gpu, KernelShape, LoadOptions, Model};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The device every test of the suite shares (its tests run as threads of
/// one process). Engines on one device share its pipeline cache,
/// so a kernel that twenty tests use is compiled once, not twenty times: a
/// pipeline takes lavapipe 0.1-0.3 s, most of the native suite's time.
/// A lost device is replaced. Tests that need a device of their own (mutated
/// shaders, injected faults) call `Gpu::new` themselves.
/// Inside [`in_gpu_shapes`] it is a second shared device whose kernels take
/// their GPU shapes (lavapipe gets the CPU ones by default).
pub fn gpu() -> Arc<Gpu> {
    static SHARED: Mutex<[Option<Arc<Gpu>>; 2]> = Mutex::new([None, None]);
    let shape = SHAPE.get();
    let slot = usize::from(shape == KernelShape::Gpu);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = shared[slot].as_ref().filter(|g| !g.is_lost()) {
        return g.clone();
    }
    let g = Arc::new(pollster::block_on(Gpu::new()).expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)"));
    g.set_kernel_shape(shape);
    shared[slot] = Some(g.clone());
    g
}

thread_local! {
    /// The kernel shapes this test thread's [`gpu`] has.
    static SHAPE: Cell<KernelShape> = const { Cell::new(KernelShape::Auto) };
}

/// Run `f` with the kernels in their GPU shapes (tiled matmuls, workgroup
/// reductions with subgroup sums, weights in buffers: what a real GPU
/// runs), on whatever device this is. Each test runs on its own thread, so
/// this changes nothing for the others.
pub fn in_gpu_shapes(f: impl FnOnce()) {
    SHAPE.set(KernelShape::Gpu);
    f();
    SHAPE.set(KernelShape::Auto);
}

pub fn load(name: &str, opts: LoadOptions) -> Model {
    let src = DirSource::new(fixtures().join(name));
    pollster::block_on(Model::load(gpu(), &src, &opts, &mut |_| {})).expect("model loads")
}

pub fn reference(name: &str) -> serde_json::Value {
    let p = fixtures().join(name).join("reference.json");
    serde_json::from_slice(&std::fs::read(&p).expect("reference.json")).expect("valid JSON")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Index of the largest value (ties to the lower index, like torch.argmax).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        assert!(!v.is_nan(), "NaN logit at {i}");
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Deterministic pseudo-random floats in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Normalized mean squared error sum((a-b)^2) / sum(b^2), as llama.cpp's
/// test-backend-ops compares backends; any NaN fails.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "NaN in GPU output at {i}");
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    num / den.max(1e-30)
}

/// |logit - reference| bound for float32 weights (transformers float32 and a
/// float64 numpy pass agree to ~1e-5). Measured on lavapipe (2026-12-01) over
/// every fixture checked with it: 1.16e-5 (mixtral_tiny), 1.14e-5
/// (head_dim_nemo), the others 2.9e-6..7.9e-6.
pub const LOGIT_TOL: f32 = 1e-4;

pub fn greedy(max_tokens: usize) -> tramontane::GenerateRequest {
    tramontane::GenerateRequest { sampling: tramontane::SamplingParams::greedy(), max_tokens, ignore_eos: true, ..Default::default() }
}

/// Every prompt of a reference.json (the shared fixtures' schema): argmax at
/// every position, the top-20 and first 64 logits at the last one within
/// `tol`, and the greedy continuation (prefill, then single-token decodes).
/// Returns the largest logit difference (top-20 and ids 0..63).
pub fn check_reference(model: &mut Model, r: &serde_json::Value, name: &str, tol: f32) -> f32 {
    let vocab = model.config().vocab;
    let mut worst = 0f32;
    for p in r["prompts"].as_array().expect("prompts") {
        let pname = p["name"].as_str().unwrap_or("?");
        let input = ids(&p["input_ids"]);
        let logits = pollster::block_on(model.logits_all(&input)).expect("forward");
        assert_eq!(logits.len(), input.len() * vocab);
        let want_argmax = ids(&p["argmax_per_position"]);
        assert_eq!(want_argmax.len(), input.len(), "{name} {pname}: an argmax per position");
        for (pos, want) in want_argmax.iter().enumerate() {
            let got = argmax(&logits[pos * vocab..(pos + 1) * vocab]);
            assert_eq!(got, *want, "{name} {pname}: argmax at position {pos}");
        }
        let last = &logits[(input.len() - 1) * vocab..];
        for pair in p["last_position"]["top20"].as_array().expect("top20") {
            let id = pair[0].as_u64().expect("id") as usize;
            let want = pair[1].as_f64().expect("logit") as f32;
            let d = (last[id] - want).abs();
            worst = worst.max(d);
            assert!(d <= tol, "{name} {pname}: logit of {id} is {} want {want}", last[id]);
        }
        for (id, want) in p["last_position"]["logits_ids_0_63"].as_array().expect("0..63").iter().enumerate() {
            let want = want.as_f64().expect("logit") as f32;
            let d = (last[id] - want).abs();
            worst = worst.max(d);
            assert!(d <= tol, "{name} {pname}: logit of {id} is {} want {want}", last[id]);
        }
        model.reset();
        let want = ids(&p["greedy"]["new_ids"]);
        let g = pollster::block_on(model.generate(&input, &greedy(want.len()), &mut |_, _, _| true)).expect("generate");
        assert_eq!(g.generated, want, "{name} {pname}: greedy continuation");
    }
    worst
}

/// A tiny checkpoint of `tests/fixtures/variants` (scripts/fixtures/make_*_variants.py).
pub fn variant(name: &str, opts: LoadOptions) -> Model {
    let src = DirSource::new(fixtures().join("variants").join(name));
    pollster::block_on(Model::load(gpu(), &src, &opts, &mut |_| {})).expect("loads")
}

pub fn variant_reference(name: &str) -> serde_json::Value {
    let p = fixtures().join("variants").join(name).join("reference.json");
    serde_json::from_slice(&std::fs::read(p).expect("reference.json")).expect("json")
}

/// Load a variant and check it against transformers' reference.
pub fn check_variant(name: &str, opts: LoadOptions) -> Model {
    let chunk = opts.chunk;
    let mut model = variant(name, opts);
    let worst = check_reference(&mut model, &variant_reference(name), name, LOGIT_TOL);
    eprintln!("{name} (chunk {chunk}): max |logit - reference| over top-20 = {worst:.2e}");
    model
}

/// The environment variable that lets a test skip what this device cannot run.
pub const ALLOW_SKIP: &str = "TRAMONTANE_ALLOW_SKIP";

/// A check this device cannot run (`why`, e.g. no `shader-f16`): prints
/// `SKIPPED: <why>` and fails the test, unless TRAMONTANE_ALLOW_SKIP=1
/// allows skipping (then the caller leaves that check out).
pub fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    assert!(
        std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1"),
        "SKIPPED: {why} (set {ALLOW_SKIP}=1 to allow skipping on this device)"
    );
}

/// Whether the device has `shader-f16`; without it, [`skip`]s `what`.
pub fn has_f16(has: bool, what: &str) -> bool {
    if !has {
        skip(&format!("no shader-f16 on this device: {what} not checked"));
    }
    has
}
