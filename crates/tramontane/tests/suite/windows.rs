//! Per-layer attention windows against transformers' float32 math
//! (scripts/fixtures/make_window_variants.py): a sliding layer keeps a ring of
//! window + chunk slots, a full-attention layer the whole context, and both
//! decode far past the window.

use crate::common::check_variant as check;
use tramontane::LoadOptions;

#[test]
fn qwen2_max_window_layers_slide_only_the_upper_layers() {
    let m = check("qwen2_windows", LoadOptions::default());
    assert_eq!(m.config().layer_windows, [None, Some(8)], "derived from use_sliding_window + max_window_layers");
    let slots = &m.runtime.layer_slots;
    assert_eq!(slots[0], m.info.context, "a full-attention layer keeps the whole context");
    assert!(slots[1] < 100, "a sliding layer keeps a ring: {slots:?}");
}

#[test]
fn ministral_layer_types() {
    let m = check("ministral_layers", LoadOptions::default());
    assert_eq!(m.config().layer_windows, [Some(8), None]);
}

#[test]
fn small_chunks_wrap_the_sliding_rings() {
    // Chunks of 5: the 13-slot ring of the sliding layer wraps many times
    // while the full layer's cache keeps every position.
    check("qwen2_windows", LoadOptions { chunk: 5, ..Default::default() });
    check("ministral_layers", LoadOptions { chunk: 5, ..Default::default() });
}
