//! The adapter self-test (forward/self_test.rs): what a load reports, the
//! fallback from subgroup sums that give wrong values, and UNSUPPORTED where
//! no variant of a kernel passes. Each test makes its own device, since
//! faults are injected into its kernels; outcomes are remembered per adapter
//! and fault, so each test's fault is its own.

use std::sync::Arc;

use tramontane::source::DirSource;
use tramontane::{Error, Gpu, LoadOptions, Model};

use crate::common::{check_reference, fixtures, reference, skip, LOGIT_TOL};

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

/// A kernel wrong in every variant (the RMSNorm's scale doubled) refuses the
/// load as UNSUPPORTED naming the kernel and the adapter, before any weight
/// is read; once the driver is right, the same device loads the model.
#[test]
fn a_kernel_wrong_in_every_variant_is_unsupported() {
    let gpu = own_gpu();
    gpu.kernels.inject_fault(Some(("let inv = 1.0 / sqrt(", "let inv = 2.0 / sqrt(")));
    let e = load_on(&gpu, "llama_tiny").err().expect("refused");
    let msg = e.to_string();
    assert_eq!(e.code(), "UNSUPPORTED", "{msg}");
    assert!(msg.contains("RMSNorm") && msg.contains(&gpu.adapter.name), "{msg}");
    gpu.kernels.inject_fault(None);
    let mut model = load_on(&gpu, "llama_tiny").expect("loads");
    check_reference(&mut model, &reference("llama_tiny"), "llama_tiny", LOGIT_TOL);
}
