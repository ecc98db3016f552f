// The expert chosen for each (token, slot) row of a MoE decode matvec (MOE):
// declared only where a dispatch binds it (kernels.rs takes the part above
// the `absent` line, or the part below).
@group(0) @binding(5) var<storage, read> EXPERT_IDS: array<u32>;
fn expert_id(r: u32) -> u32 {
    return EXPERT_IDS[r];
}
// ---- absent ----
fn expert_id(r: u32) -> u32 {
    return 0u;
}
