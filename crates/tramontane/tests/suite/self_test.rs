//! The adapter self-test (forward/self_test.rs): what a load reports, the
//! fallback from subgroup sums that give wrong values, and UNSUPPORTED where
//! no variant of a kernel passes. Each test makes its own device, since
//! faults are injected into its kernels; outcomes are remembered per adapter
//! and fault, so each test's fault is its own.

use std::sync::Arc;

use tramontane::source::{DirSource, ModelSource};
use tramontane::{Error, Gpu, LoadOptions, Model};

use crate::common::{check_reference, fixtures, has_f16, reference, skip, LOGIT_TOL};

fn own_gpu() -> Arc<Gpu> {
    Arc::new(pollster::block_on(Gpu::new()).expect("a wgpu adapter"))
}

fn load_on(gpu: &Arc<Gpu>, name: &str) -> Result<Model, Error> {
    let src = DirSource::new(fixtures().join(name));
    pollster::block_on(Model::load(gpu.clone(), &src, &LoadOptions::default(), &mut |_| {}))
}

#[test]
fn a_load_runs_the_self_test_once() {
    let gpu = own_gpu();
    // A fault that changes nothing: a self-test no other test has run.
    gpu.kernels.inject_fault(Some(("// this text is in no kernel", "")));
    let first = load_on(&gpu, "llama_tiny").expect("loads");
    let t = &first.info.self_test;
    eprintln!("self-test on {}: {} kernels in {:.1} ms", gpu.adapter.name, t.kernels, t.millis);
    // F32 matvec and matmul, the RMSNorm, decode and prefill attention.
    assert!(t.kernels >= 5 && t.millis > 0.0, "{t:?}");
    // The injected fault makes every module new: the test created pipelines.
    assert!(t.pipeline_millis > 0.0 && t.pipeline_millis <= t.millis, "{t:?}");
    assert!(t.fallbacks.is_empty(), "nothing falls back on a working driver: {t:?}");
    let again = load_on(&gpu, "llama_tiny").expect("loads");
    assert_eq!(again.info.self_test.millis, 0.0, "the same kernels on the same adapter are tested once");
    assert_eq!(again.info.self_test.pipeline_millis, 0.0);
    assert_eq!(again.info.self_test.kernels, t.kernels);
}

/// Subgroup shuffles that sum wrongly (lanes.wgsl doubled): the RMSNorm fails
/// the self-test, the load falls back to serial sums, says so, and the model
/// still matches transformers.
#[test]
fn wrong_subgroup_sums_fall_back_to_serial_sums() {
    let gpu = own_gpu();
    if gpu.profile().lanes < 2 {
        skip("no subgroups on this device: the fallback from them is not checked");
        return;
    }
    gpu.kernels.inject_fault(Some(("s += subgroupShuffleXor(s, o);", "s += 2.0 * subgroupShuffleXor(s, o);")));
    let mut model = load_on(&gpu, "llama_tiny").expect("loads with serial sums");
    let t = &model.info.self_test;
    eprintln!("{t:?}");
    assert_eq!(model.info.device_profile.lanes, 1, "serial sums");
    assert!(t.fallbacks.first().is_some_and(|f| f.contains("RMSNorm") && f.contains("subgroup sums")), "{t:?}");
    assert!(t.fallbacks.last().is_some_and(|f| f.starts_with("using serial sums")), "{t:?}");
    check_reference(&mut model, &reference("llama_tiny"), "llama_tiny", LOGIT_TOL);
}

/// A source that takes its time over every weight read (a slow network),
/// counting them.
struct Slow {
    inner: DirSource,
    weight_reads: std::cell::Cell<usize>,
}

impl ModelSource for Slow {
    async fn size(&self, name: &str) -> tramontane::Result<Option<u64>> {
        self.inner.size(name).await
    }
    async fn read(&self, name: &str, offset: u64, len: u64) -> tramontane::Result<Vec<u8>> {
        // A shard's tensor data starts after its 8-byte length and header.
        let data_start = std::fs::read(fixtures().join("llama_tiny").join(name))
            .ok()
            .filter(|b| name.ends_with(".safetensors") && b.len() >= 8)
            .map(|b| 8 + u64::from_le_bytes(b[..8].try_into().expect("8 bytes")));
        if data_start.is_some_and(|start| offset >= start) {
            self.weight_reads.set(self.weight_reads.get() + 1);
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        self.inner.read(name, offset, len).await
    }
}

/// A kernel wrong in every variant (the RMSNorm's scale doubled) refuses the
/// load as UNSUPPORTED naming the kernel and the adapter; once the driver is
/// right, the same device loads the model. The self-test runs beside the
/// download, which it stops: from a slow source, the refusal comes before
/// most weights are read (the self-test takes about a second here; each
/// weight read 0.6 s).
#[test]
fn a_kernel_wrong_in_every_variant_is_unsupported() {
    let gpu = own_gpu();
    gpu.kernels.inject_fault(Some(("let inv = 1.0 / sqrt(", "let inv = 2.0 / sqrt(")));
    let dir = fixtures().join("llama_tiny");
    let src = Slow { inner: DirSource::new(&dir), weight_reads: Default::default() };
    let e = pollster::block_on(Model::load(gpu.clone(), &src, &LoadOptions::default(), &mut |_| {})).err().expect("refused");
    let msg = e.to_string();
    assert_eq!(e.code(), "UNSUPPORTED", "{msg}");
    assert!(msg.contains("RMSNorm") && msg.contains(&gpu.adapter.name), "{msg}");
    let tensors = pollster::block_on(tramontane::parse::TensorTable::read(&DirSource::new(&dir))).expect("tensor table").tensors.len();
    eprintln!("{} of {tensors} weight reads before the refusal", src.weight_reads.get());
    assert!(src.weight_reads.get() * 2 < tensors, "{} of {tensors} tensors were read before the refusal", src.weight_reads.get());
    gpu.kernels.inject_fault(None);
    let mut model = load_on(&gpu, "llama_tiny").expect("loads");
    check_reference(&mut model, &reference("llama_tiny"), "llama_tiny", LOGIT_TOL);
}

fn load_gguf_on(gpu: &Arc<Gpu>, opts: &LoadOptions) -> Result<Model, Error> {
    let src = DirSource::new(fixtures().join("moe_gguf"));
    pollster::block_on(Model::load_gguf(gpu.clone(), &src, "moe-q8_0.gguf", opts, &mut |_| {}))
}

/// An f16 KV cache that reads wrong (its kernels built as if the cache held
/// f32s): a quantized model on `Auto` falls back to an f32 cache and says
/// so. The self-test runs beside the upload, so the memory limit was checked
/// against the f16 cache's size before the download; the f32 cache's, larger,
/// is checked after it: OUT_OF_MEMORY, and the same device loads the model
/// with room for it.
#[test]
fn a_wrong_f16_cache_falls_back_to_f32_within_the_memory_limit() {
    let gpu = own_gpu();
    if !has_f16(gpu.adapter.shader_f16, "the fallback from an f16 KV cache") {
        return;
    }
    gpu.kernels.inject_fault(Some(("alias kv_t = f16;", "alias kv_t = f32;")));
    let model = load_gguf_on(&gpu, &LoadOptions::default()).expect("loads with an f32 cache");
    let t = &model.info.self_test;
    assert_eq!(model.info.kv_cache, "f32", "{t:?}");
    assert!(t.fallbacks.iter().any(|f| f.contains("an f16 KV cache")), "{t:?}");
    assert!(t.fallbacks.last().is_some_and(|f| f.contains("an f32 KV cache")), "{t:?}");
    let f32_total = model.info.gpu_bytes;
    drop(model);
    // The same model with an f16 cache (no fault) needs less: a limit
    // between the two passes the checks before the download, not the one after.
    let fresh = own_gpu();
    let f16_total = load_gguf_on(&fresh, &LoadOptions::default()).expect("loads").info.gpu_bytes;
    assert!(f16_total < f32_total, "f16 cache {f16_total} vs f32 {f32_total}");
    let limit = LoadOptions { max_gpu_bytes: Some(f16_total), ..Default::default() };
    let e = load_gguf_on(&gpu, &limit).err().expect("over the limit with an f32 cache");
    assert_eq!(e.code(), "OUT_OF_MEMORY", "{e}");
    assert!(e.to_string().contains("f32 KV cache") && e.to_string().contains("max_gpu_bytes"), "{e}");
    let roomy = LoadOptions { max_gpu_bytes: Some(f32_total), ..Default::default() };
    let model = load_gguf_on(&gpu, &roomy).expect("fits with room for the f32 cache");
    assert_eq!(model.info.kv_cache, "f32");
}
