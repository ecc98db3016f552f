//! Every WGSL kernel against a plain CPU reference on random inputs in [-1, 1)
//! with odd shapes (not multiples of any workgroup size). Any NaN fails;
//! otherwise the normalized error sum((gpu-cpu)^2)/sum(cpu^2) must be below
//! the kernel's tolerance (f32 math on both sides; the CPU accumulates in f64).

use crate::common::*;
use half::f16;
use tramontane::gpu::kernels::Spec;
use tramontane::parse::dequant::dequantize;
use tramontane::forward::{linear_binds, linear_groups, linear_spec, moe_max_tiles, with_norm, with_rope, MAX_SPLITS};
use tramontane::gpu::bindings::{attention as at, embed, matmul as mm, moe, rmsnorm as rn, rope, rotary};
use tramontane::gpu::profile::{AttentionEntry, DeviceProfile, MatmulEntry};
use tramontane::gpu::{Family, Gpu, InputTexture, Step, WeightStore};
use tramontane::parse::DType;

// Tolerances, from the worst error measured on lavapipe (2026-12-01; each
// test prints its `worst ...` table). nmse is a squared relative error, so
// about 100x the measured nmse is about 10x the relative RMS error.
/// matvec, tiled matmul, slabs, MoE expert matvec and grouped matmul, gate/up
/// in two dispatches: measured nmse 1.1e-12.
const LINEAR_TOL: f64 = 1e-10;
/// RMSNorm: measured 2.2e-15.
const NORM_TOL: f64 = 2e-13;
/// RoPE and qk_norm, q and f32 k: measured 5.9e-15 (qk_norm q), 2.2e-15 (rope).
const ROPE_TOL: f64 = 6e-13;
/// An f16 KV cache against the same values rounded once to f16: measured
/// 5.7e-18 (qk_norm k), 0 (rope k); one f16 rounding flip would be ~1e-8.
const F16_KV_TOL: f64 = 6e-16;
/// The qkv matvec's k and v stored as f16: its f32 dots differ from the f64
/// reference by ~1e-7, enough to flip the f16 rounding of a value now and
/// then (~1e-9 each among hundreds); measured 4.8e-14 on lavapipe. An
/// indexing mistake is O(1).
const F16_LINEAR_TOL: f64 = 1e-7;
/// Attention (split-K, windows, f32 and f16 caches): measured 6.8e-14.
const ATTENTION_TOL: f64 = 7e-12;
/// |routing weight - CPU softmax|: measured 5.3e-8.
const ROUTE_TOL: f64 = 5e-7;
/// Our dequantizer against gguf-py (both f32 on the CPU): measured exactly 0,
/// so required exact.
const EXACT: f64 = 0.0;
/// A gather with dequantization and the MoE combine (the CPU sums in f32 in
/// the kernel's order): measured exactly 0 on lavapipe; a GPU that fuses
/// `d * q + m` or `y + w * e` into one FMA rounds once less (NMSE ~1e-15), so
/// allow that much, far below any indexing mistake.
const ROUNDING_TOL: f64 = 1e-13;
const SENTINEL: f32 = 12345.0;

/// The worst error seen per kind of check, printed as each test ends.
static WORST: std::sync::Mutex<std::collections::BTreeMap<&'static str, f64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Asserts `e <= tol` for a check of `kind` (`what` names the case) and
/// remembers the worst `e` per kind.
fn within(kind: &'static str, e: f64, tol: f64, what: impl FnOnce() -> String) {
    {
        let mut w = WORST.lock().unwrap_or_else(|p| p.into_inner());
        let m = w.entry(kind).or_insert(0.0);
        *m = m.max(e);
    }
    assert!(e <= tol, "{}: {kind} error {e:e} over {tol:e}", what());
}

/// Prints the worst errors so far (tests share the table when run together).
fn report() {
    for (kind, e) in WORST.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("worst {kind}: {e:.2e}");
    }
}

struct Bench {
    gpu: std::sync::Arc<Gpu>,
    /// Weights in textures, rows interleaved (as the upload stores them on
    /// this device: lavapipe), or in buffers (other devices); see
    /// `weights_in_buffers_and_textures_agree` for the other one.
    textures: bool,
    step: wgpu::Buffer,
    /// The `SLAB` uniform of an unsplit weight: outputs from 0, all rows.
    whole: wgpu::Buffer,
}

impl Bench {
    fn new() -> Self {
        // The binary's shared device: tests that compile the same kernel
        // compile it once.
        let gpu = gpu();
        eprintln!("adapter {}: subgroup lanes {}", gpu.adapter.name, gpu.profile().lanes);
        let step = gpu.uniform("step", std::mem::size_of::<Step>() as u64);
        let whole = gpu.uniform_init("slab", bytemuck::cast_slice(&[0u32, u32::MAX, 0, 0]));
        let textures = gpu.profile().weights == tramontane::gpu::Store::Texture;
        Bench { gpu, textures, step, whole }
    }
    /// The same, weights stored the other way.
    fn other_weights() -> Self {
        let b = Bench::new();
        Bench { textures: !b.textures, ..b }
    }
    fn slab(&self, row0: usize, rows: usize) -> wgpu::Buffer {
        self.gpu.uniform_init("slab", bytemuck::cast_slice(&[row0 as u32, rows as u32, 0, 0]))
    }
    fn f32(&self, v: &[f32]) -> wgpu::Buffer {
        self.gpu.storage_init("f32", bytemuck::cast_slice(v))
    }
    fn u32(&self, v: &[u32]) -> wgpu::Buffer {
        self.gpu.storage_init("u32", bytemuck::cast_slice(v))
    }
    /// Weights as the file holds them (rows of `cols`), laid out as the
    /// upload lays them out.
    fn weights(&self, dtype: DType, cols: usize, file: &[u8]) -> WeightStore {
        tramontane::upload::store_matrix(&self.gpu, dtype, cols, file, self.textures)
    }
    fn zeros(&self, n: usize) -> wgpu::Buffer {
        self.gpu.storage("zeros", 4 * n as u64)
    }
    fn run(&self, spec: &Spec, step: Step, bindings: &[(u32, &wgpu::Buffer)], groups: [u32; 3]) {
        self.run_on(spec, step, None, bindings, groups)
    }
    /// `run` for a kernel that reads weights `w` (binding 1).
    fn run_w(&self, spec: &Spec, step: Step, w: &WeightStore, bindings: &[(u32, &wgpu::Buffer)], groups: [u32; 3]) {
        self.run_on(spec, step, Some(w), bindings, groups)
    }
    fn run_on(&self, spec: &Spec, step: Step, w: Option<&WeightStore>, bindings: &[(u32, &wgpu::Buffer)], groups: [u32; 3]) {
        self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        let mut all = vec![(tramontane::gpu::bindings::common::STEP, &self.step)];
        all.extend_from_slice(bindings);
        // With weights in textures (lavapipe's way), `matmul_rows` reads its
        // inputs from a texture copy too, as the runtime's prefill does there.
        let inputs: Vec<InputTexture> = match (self.textures, bindings.iter().find(|(i, _)| *i == mm::X)) {
            (true, Some((_, x))) => self.gpu.input_texture("x", x).into_iter().collect(),
            _ => Vec::new(),
        };
        let d = match w {
            Some(w) => self.gpu.kernels.dispatch_rows(spec, w, &all, &inputs),
            None => self.gpu.kernels.dispatch(spec, &all),
        };
        let dense_rows = spec.entry == "matmul_rows" && !spec.constants.contains(&("MOE", 1.0));
        assert_eq!(d.inputs.is_some(), dense_rows && !inputs.is_empty(), "inputs texture for {}", spec.entry);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        d.copy_inputs(&mut enc, step.n_tokens);
        {
            let mut p = enc.begin_compute_pass(&Default::default());
            d.record(&mut p, groups);
        }
        self.gpu.queue.submit([enc.finish()]);
        self.gpu.check().expect("no GPU error");
    }
    fn read(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        pollster::block_on(self.gpu.read_f32(b, n)).expect("read")
    }
    fn read_f16(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        let bytes = pollster::block_on(self.gpu.read_buffer(b, 2 * n as u64)).expect("read");
        bytes[..2 * n].chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    }
    fn read_u32(&self, b: &wgpu::Buffer, n: usize) -> Vec<u32> {
        pollster::block_on(self.gpu.read_u32(b, n)).expect("read")
    }
}

/// `linear_spec` for one tuning: `entry` ("matvec", "matmul" or
/// "matmul_grouped", as the dispatch plan asks for it) on a device of CPU
/// (`cpu`) or GPU shapes with `lanes` subgroup lanes.
fn tuned(dtype: DType, entry: &str, n: usize, k: usize, cpu: bool, lanes: u32) -> Spec {
    let wanted = MatmulEntry::of(entry).expect("a linear-layer entry");
    linear_spec(dtype, wanted, n, k, &DeviceProfile::shaped(cpu, lanes))
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn step(n_tokens: u32) -> Step {
    Step { n_tokens, split_len: 1 << 30, n_splits: 1, temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0, ..Default::default() }
}

/// A `[rows][cols]` weight matrix stored as `dtype` (raw bytes as the GPU gets
/// them) and the exact f32 values the kernels must see. Quantized blocks get
/// random quants and moderate random scales; their values come from our CPU
/// dequantizer, itself checked against gguf-py in `cpu_dequantizer_matches_gguf_py`.
/// Random weights of `dtype` (the self-test's generator: every block type
/// with scales that keep values O(0.1), so sums stay in range), with their
/// values and the shader's type code.
fn weights(dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>, u32) {
    if dtype.is_quantized() {
        assert_eq!(rows * cols % dtype.block().0 as usize, 0, "whole blocks");
    }
    let bytes = tramontane::forward::self_test::random_weights(dtype, rows, cols, u64::from(rng.next_u32()));
    let values = dequantize(dtype, &bytes);
    assert!(values.iter().all(|v| v.is_finite()));
    (bytes, values, dtype.shader_code())
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const QUANTS: [DType; 12] = [
    DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K,
    DType::Q6K, DType::IQ4NL, DType::IQ4XS,
];

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// CPU: y[r, n] = x[r] . w[n] (+ b[n]); SwiGLU uses rows n and N + n.
#[allow(clippy::too_many_arguments)]
fn linear_ref(x: &[f32], w: &[f32], b: Option<&[f32]>, y0: Option<&[f32]>, rows: usize, n: usize, k: usize, swiglu: bool) -> Vec<f32> {
    linear_ref_act(x, w, b, y0, rows, n, k, swiglu, Acts::default())
}

/// GELU, exactly (erf by libm).
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2))
}

/// erf to double precision (Abramowitz and Stegun 7.1.26 is what the kernel
/// uses; this reference is independent of it: a series, then a continued
/// fraction's complement).
fn libm_erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // Maclaurin series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let (mut sum, mut term, mut n) = (0.0, a, 0.0);
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -a * a / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), accurate far from 0.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    r.copysign(x)
}

/// The linear kernels' activation epilogues: GELU as the SwiGLU gate's
/// activation (`GATE_ACT`), GELU or SiLU on the output (`OUT_ACT`).
#[derive(Clone, Copy, Default, Debug)]
struct Acts {
    gate_gelu: bool,
    out_gelu: bool,
    out_silu: bool,
}

#[allow(clippy::too_many_arguments)]
fn linear_ref_act(x: &[f32], w: &[f32], b: Option<&[f32]>, y0: Option<&[f32]>, rows: usize, n: usize, k: usize, swiglu: bool,
                  acts: Acts) -> Vec<f32> {
    let mut y = vec![0f32; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let dot = |row: usize| (0..k).map(|i| x[r * k + i] as f64 * w[row * k + i] as f64).sum::<f64>();
            let mut v = dot(j);
            if let Some(b) = b {
                v += b[j] as f64;
            }
            if swiglu {
                // Stacked gate/up biases (Llama's mlp_bias): b[n + j] is up's.
                let up = dot(n + j) + b.map_or(0.0, |b| b[n + j] as f64);
                v = if acts.gate_gelu { gelu(v) } else { silu(v) } * up;
            }
            if acts.out_gelu {
                v = gelu(v);
            }
            if acts.out_silu {
                v = silu(v);
            }
            if let Some(y0) = y0 {
                v += y0[r * n + j] as f64;
            }
            y[r * n + j] = v as f32;
        }
    }
    y
}

/// Subgroup runs a GPU reduction is tried with on this adapter: 1 (workgroup
/// memory alone) and, where it has subgroups, its smallest subgroup and runs
/// of 2 (so a run is both all and part of an output's invocations).
fn lane_runs(b: &Bench) -> Vec<u32> {
    let l = b.gpu.profile().lanes;
    let mut runs = vec![1];
    if l > 1 {
        runs.push(l);
    }
    if l > 2 {
        runs.push(2);
    }
    runs
}

/// Every tuning of a linear `entry` as (CPU driver, subgroup run): GPU
/// (matvec: several invocations per output summed in workgroup memory, and
/// by subgroup shuffles where the adapter has them; matmul: 32x32 tiles) and
/// CPU driver (matvec: one invocation per output; prefill: `matmul_rows`;
/// both with lanes that share the input loads by subgroup shuffles where
/// the adapter has them).
fn tunings(b: &Bench, entry: &str) -> Vec<(bool, u32)> {
    let runs = lane_runs(b);
    let gpu_runs = if entry == "matvec" { runs.clone() } else { vec![1] };
    gpu_runs.into_iter().map(|l| (false, l)).chain(runs.into_iter().map(|l| (true, l))).collect()
}

#[allow(clippy::too_many_arguments)]
fn check_linear(b: &Bench, entry: &'static str, dtype: DType, rows: usize, n: usize, k: usize, bias: bool, acc: bool, swiglu: bool) {
    for (cpu, lanes) in tunings(b, entry) {
        check_linear_tuned(b, entry, dtype, rows, n, k, bias, acc, swiglu, cpu, lanes);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_linear_tuned(b: &Bench, entry: &'static str, dtype: DType, rows: usize, n: usize, k: usize, bias: bool, acc: bool, swiglu: bool, cpu: bool, lanes: u32) {
    check_linear_act(b, entry, dtype, rows, n, k, bias, acc, swiglu, cpu, lanes, Acts::default());
}

#[allow(clippy::too_many_arguments)]
fn check_linear_act(b: &Bench, entry: &'static str, dtype: DType, rows: usize, n: usize, k: usize, bias: bool, acc: bool, swiglu: bool, cpu: bool, lanes: u32,
                    acts: Acts) {
    let mut rng = Rng(0x1234 + (rows * 31 + n * 7 + k) as u64);
    let w_rows = if swiglu { 2 * n } else { n };
    let (wb, wv, _) = weights(dtype, w_rows, k, &mut rng);
    let x = rng.vec(rows * k);
    let bv = rng.vec(w_rows);
    let y0 = rng.vec(rows * n);
    // Sentinels past the end of the output catch out-of-bounds writes.
    let mut y_init = y0.clone();
    y_init.extend([SENTINEL; 16]);
    let (wbuf, xbuf, bbuf, ybuf) = (b.weights(dtype, k, &wb), b.f32(&x), b.f32(&bv), b.f32(&y_init));
    let spec = tuned(dtype, entry, n, k, cpu, lanes)
        .with("HAS_BIAS", bias as u32)
        .with("ACCUMULATE", acc as u32)
        .with("SWIGLU", swiglu as u32)
        .with("GATE_ACT", acts.gate_gelu as u32)
        .with("OUT_ACT", if acts.out_silu { 2u32 } else { acts.out_gelu as u32 });
    let bind = linear_binds(&[(mm::X, &xbuf), (mm::Y, &ybuf), (mm::SLAB, &b.whole)], bias.then_some(&bbuf), None, None);
    let groups = linear_groups(&spec, n as u32, rows as u32);
    b.run_w(&spec, step(rows as u32), &wbuf, &bind, groups);
    let mut got = b.read(&ybuf, rows * n + 16);
    assert!(got.split_off(rows * n).iter().all(|&v| v == SENTINEL), "{entry}: write past the output");
    let want = linear_ref_act(&x, &wv, bias.then_some(&bv[..]), acc.then_some(&y0[..]), rows, n, k, swiglu, acts);
    let e = nmse(&got, &want);
    within("linear", e, LINEAR_TOL, || format!("{entry} {dtype:?} rows {rows} n {n} k {k} bias {bias} acc {acc} swiglu {swiglu} cpu {cpu} lanes {lanes} {acts:?}"));
}

/// The vision encoder's and projector's epilogues: a GELU-gated MLP (Mistral
/// 3's encoder) and GELU after a biased projection (the projector's first
/// layer; SiLU where a config says so), in every tuning, on odd shapes.
#[test]
fn gelu_epilogues_match_cpu() {
    let b = Bench::new();
    let gate = Acts { gate_gelu: true, ..Acts::default() };
    let out = Acts { out_gelu: true, ..Acts::default() };
    let out_silu = Acts { out_silu: true, ..Acts::default() };
    for entry in ["matvec", "matmul"] {
        for (cpu, lanes) in tunings(&b, entry) {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                check_linear_act(&b, entry, dtype, 19, 23, 48, false, false, true, cpu, lanes, gate);
                check_linear_act(&b, entry, dtype, 33, 37, 20, true, false, false, cpu, lanes, out);
                check_linear_act(&b, entry, dtype, 3, 37, 20, true, false, false, cpu, lanes, out_silu);
            }
        }
    }
    assert!((libm_erf(0.5) - 0.5204998778130465).abs() < 1e-15 && (libm_erf(3.0) - 0.9999779095030014).abs() < 1e-15);
}

#[test]
fn matvec_and_tiled_matmul_match_cpu() {
    let b = Bench::new();
    for dtype in FLOATS {
        for entry in ["matvec", "matmul"] {
            check_linear(&b, entry, dtype, 1, 37, 53, false, false, false);
            check_linear(&b, entry, dtype, 19, 45, 70, true, false, false);
            check_linear(&b, entry, dtype, 3, 33, 129, false, true, false);
            check_linear(&b, entry, dtype, 17, 21, 47, false, false, true);
            check_linear(&b, entry, dtype, 2, 7, 1028, false, false, false);
            check_linear(&b, entry, dtype, 70, 67, 36, false, false, true);
            check_linear(&b, entry, dtype, 6, 23, 61, true, false, true);
        }
    }
    // More outputs than one dispatch dimension holds (x and z split).
    check_linear(&b, "matvec", DType::BF16, 2, 70001, 3, false, false, false);
    report();
}

/// A weight split by output into slabs (as the loader does for matrices over
/// the binding limit): each slab is its own buffer `[halves][slab rows][k]`
/// and its own dispatch; together they must equal the unsplit product.
#[allow(clippy::too_many_arguments)]
fn check_linear_slabs(b: &Bench, entry: &'static str, dtype: DType, rows: usize, n: usize, k: usize, cuts: &[usize], swiglu: bool) {
    let mut rng = Rng(0x51ab + (rows * 13 + n + k) as u64);
    let halves = if swiglu { 2 } else { 1 };
    let (wb, wv, _) = weights(dtype, halves * n, k, &mut rng);
    let x = rng.vec(rows * k);
    let bv = rng.vec(halves * n);
    let mut y_init = rng.vec(rows * n);
    y_init.extend([SENTINEL; 16]);
    let (xbuf, bbuf, ybuf) = (b.f32(&x), b.f32(&bv), b.f32(&y_init));
    let row_bytes = dtype.nbytes(k as u64).expect("whole blocks") as usize;
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(n);
    for w in bounds.windows(2) {
        let (a, z) = (w[0], w[1]);
        let mut slab = Vec::new();
        for hf in 0..halves {
            slab.extend_from_slice(&wb[(hf * n + a) * row_bytes..(hf * n + z) * row_bytes]);
        }
        let spec = tuned(dtype, entry, z - a, k, a % 2 == 1, 1)
            .with("HAS_BIAS", 1u32)
            .with("SWIGLU", swiglu as u32)
            .with("N_ALL", n as u32);
        let (wbuf, info) = (b.weights(dtype, k, &slab), b.slab(a, z - a));
        let bind = [(mm::X, &xbuf), (mm::Y, &ybuf), (mm::B, &bbuf), (mm::SLAB, &info)];
        let groups = linear_groups(&spec, (z - a) as u32, rows as u32);
        b.run_w(&spec, step(rows as u32), &wbuf, &bind, groups);
    }
    let mut got = b.read(&ybuf, rows * n + 16);
    assert!(got.split_off(rows * n).iter().all(|&v| v == SENTINEL), "{entry} slabs: write past the output");
    let want = linear_ref(&x, &wv, Some(&bv[..]), None, rows, n, k, swiglu);
    let e = nmse(&got, &want);
    within("linear", e, LINEAR_TOL, || format!("{entry} {dtype:?} slabs {cuts:?} of {n} swiglu {swiglu}"));
}

#[test]
fn weights_split_into_slabs_give_the_unsplit_result() {
    let b = Bench::new();
    for entry in ["matvec", "matmul"] {
        check_linear_slabs(&b, entry, DType::F32, 3, 77, 21, &[32, 64], false);
        check_linear_slabs(&b, entry, DType::F16, 35, 50, 18, &[17], true);
        check_linear_slabs(&b, entry, DType::Q4_1, 2, 41, 64, &[5, 40], true);
        check_linear_slabs(&b, entry, DType::Q6K, 33, 40, 256, &[32], false);
        // Rows of 110 and 54 bytes: slabs that start off word boundaries in the file.
        check_linear_slabs(&b, entry, DType::Q3K, 4, 37, 256, &[9, 30], true);
        check_linear_slabs(&b, entry, DType::IQ4NL, 3, 29, 96, &[7], false);
    }
    // The embedding gather over a vocabulary in three slabs.
    let (vocab, h, t) = (61usize, 64usize, 9usize);
    let mut rng = Rng(17);
    let (wb, wv, code) = weights(DType::Q8_0, vocab, h, &mut rng);
    let row_bytes = DType::Q8_0.nbytes(h as u64).expect("blocks") as usize;
    let ids: Vec<u32> = (0..t).map(|i| if i == 0 { 60 } else { rng.next_u32() % vocab as u32 }).collect();
    let (ibuf, ybuf) = (b.u32(&ids), b.zeros(t * h));
    for (a, z) in [(0usize, 20usize), (20, 40), (40, 61)] {
        let (wbuf, info) = (b.weights(DType::Q8_0, h, &wb[a * row_bytes..z * row_bytes]), b.slab(a, z - a));
        let spec = Spec::new(Family::Embed, "main").with("WTYPE", code).with("H", h as u32);
        b.run_w(&spec, step(t as u32), &wbuf, &[(embed::IDS, &ibuf), (embed::Y, &ybuf), (embed::SLAB, &info)], [(h as u32).div_ceil(64), t as u32, 1]);
    }
    let got = b.read(&ybuf, t * h);
    let want: Vec<f32> = ids.iter().flat_map(|&i| wv[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
    within("embedding", nmse(&got, &want), ROUNDING_TOL, || "embedding gather over slabs".into());
    report();
}

/// Every block type through one entry and all its tunings. Every epilogue
/// (bias, accumulate, SwiGLU) runs with the plain reductions; a subgroup run
/// changes only how an output's partial sums meet, which two shapes (one row,
/// as in decode, and several rows with bias and SwiGLU) exercise: each case
/// is a pipeline to compile (0.1-0.3 s on lavapipe), and the suite has a budget.
fn check_quantized(entry: &'static str) {
    let b = Bench::new();
    for dtype in QUANTS {
        let k = dtype.block().0 as usize * 3;
        for (cpu, lanes) in tunings(&b, entry) {
            let all = lanes == 1;
            check_linear_tuned(&b, entry, dtype, 1, 37, k, false, false, false, cpu, lanes);
            if all {
                check_linear_tuned(&b, entry, dtype, 18, 29, k, true, true, false, cpu, lanes);
                check_linear_tuned(&b, entry, dtype, 5, 19, k, false, false, true, cpu, lanes);
            }
            check_linear_tuned(&b, entry, dtype, 4, 13, k, true, false, true, cpu, lanes);
        }
    }
    report();
}

// Two tests, not one, so that the test threads share the work (each
// tuning is a pipeline of its own to compile).
#[test]
fn quantized_matvec_matches_cpu_dequantization() {
    check_quantized("matvec");
}

#[test]
fn quantized_matmul_matches_cpu_dequantization() {
    check_quantized("matmul");
}

/// Weights stored the other way than this device's uploads store them
/// (natively on lavapipe: buffers, as on GPUs and in browsers; elsewhere:
/// lavapipe's textures with interleaved rows): every type through a GPU
/// matvec (with subgroup sums where there are subgroups) and the CPU
/// drivers' prefill matmul, on a shape with a short last run of rows,
/// several blocks per row, a bias and SwiGLU. (The other tests run every
/// tuning the way this device stores weights; the kernels' code differs
/// between the two only in where a quad of words is read from and in which
/// order rows' blocks sit: each case is a pipeline to compile.)
#[test]
fn weights_stored_the_other_way_match_cpu() {
    let b = Bench::other_weights();
    let lanes = *lane_runs(&b).iter().max().unwrap_or(&1);
    for dtype in FLOATS.into_iter().chain(QUANTS) {
        let k = if dtype.is_quantized() { dtype.block().0 as usize * 3 } else { 53 };
        check_linear_tuned(&b, "matvec", dtype, 4, 13, k, true, false, true, false, lanes);
        check_linear_tuned(&b, "matmul", dtype, 4, 13, k, true, false, true, true, lanes);
    }
    report();
}

/// The CPU drivers' matvec computes 2 or 4 outputs per invocation once there
/// are enough outputs, and `matmul_rows` 2 (`NPI`); output counts that are
/// not multiples of 64 * NPI leave invocations whose last outputs lie past N.
#[test]
fn cpu_kernels_with_several_outputs_per_invocation_match_cpu() {
    let b = Bench::new();
    for (n, npi) in [(515usize, 2.0), (1029, 4.0)] {
        let spec = tuned(DType::Q4_1, "matvec", n, 64, true, 1);
        assert!(spec.constants.contains(&("NPI", npi)), "n {n}: {:?}", spec.constants);
        let spec = tuned(DType::Q4_1, "matmul", n, 64, true, 1);
        assert!(spec.entry == "matmul_rows" && spec.constants.contains(&("NPI", 2.0)), "n {n}: {:?}", spec.constants);
        for (dtype, k) in [(DType::F32, 45), (DType::F16, 36), (DType::Q4_1, 64), (DType::Q8_0, 96), (DType::Q6K, 256), (DType::IQ4XS, 256)] {
            for lanes in lane_runs(&b) {
                check_linear_tuned(&b, "matvec", dtype, 1, n, k, false, false, false, true, lanes);
                check_linear_tuned(&b, "matvec", dtype, 2, n, k, true, true, false, true, lanes);
                check_linear_tuned(&b, "matvec", dtype, 1, n, k, true, false, true, true, lanes);
            }
            // Prefill: 35 rows, two whole groups of MR (16) and a partial one.
            for lanes in lane_runs(&b) {
                check_linear_tuned(&b, "matmul", dtype, 35, n, k, true, true, false, true, lanes);
                check_linear_tuned(&b, "matmul", dtype, 35, n, k, false, false, true, true, lanes);
            }
        }
    }
    report();
}

/// The CPU drivers' matvec with the RMSNorm before it (`NORM`, decode): it
/// reads the residual row (the last of the pass with `LAST_ROW`) and must
/// equal the norm followed by the layer, for the scalar, quad, whole-block
/// and lane-sharing input loops, with 1, 2 and 4 outputs per invocation, a
/// bias and SwiGLU.
#[test]
fn matvec_applies_the_rmsnorm_before_it() {
    let b = Bench::new();
    assert!(DeviceProfile::shaped(true, 1).norm_in_matvec && !DeviceProfile::shaped(false, 1).norm_in_matvec, "fused on CPU drivers only");
    let eps = 1e-5f32;
    let cases = [(DType::F32, 45), (DType::F16, 36), (DType::Q4_1, 64), (DType::Q8_0, 96), (DType::Q6K, 256), (DType::IQ4XS, 256)];
    for ((dtype, k), n) in cases.into_iter().flat_map(|c| [37usize, 515, 1029].map(|n| (c, n))) {
        for (lanes, last_row) in lane_runs(&b).into_iter().flat_map(|l| [(l, false), (l, true)]) {
            let (swiglu, bias) = (n % 2 == 1 && last_row, n != 515);
            let rows = if last_row { 3 } else { 1 };
            let mut rng = Rng(0x4e0 + (n * 3 + k) as u64);
            let w_rows = if swiglu { 2 * n } else { n };
            let (wb, wv, _) = weights(dtype, w_rows, k, &mut rng);
            // A residual row of some scale (the norm removes it) and its weights.
            let x: Vec<f32> = rng.vec(rows * k).iter().map(|v| v * 7.0).collect();
            let g = rng.vec(k);
            let bv = rng.vec(w_rows);
            let mut y_init = vec![0f32; n];
            y_init.extend([SENTINEL; 16]);
            let (wbuf, xbuf, gbuf, bbuf, ybuf) = (b.weights(dtype, k, &wb), b.f32(&x), b.f32(&g), b.f32(&bv), b.f32(&y_init));
            let spec = tuned(dtype, "matvec", n, k, true, lanes).with("HAS_BIAS", bias as u32).with("SWIGLU", swiglu as u32);
            let spec = with_norm(spec, eps, last_row);
            let bind = linear_binds(&[(mm::X, &xbuf), (mm::Y, &ybuf), (mm::SLAB, &b.whole)], bias.then_some(&bbuf), Some(&gbuf), None);
            b.run_w(&spec, step(rows as u32), &wbuf, &bind, linear_groups(&spec, n as u32, 1));
            let mut got = b.read(&ybuf, n + 16);
            assert!(got.split_off(n).iter().all(|&v| v == SENTINEL), "write past the output");
            let row = &x[(rows - 1) * k..];
            let inv = 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64 + eps as f64).sqrt();
            let normed: Vec<f32> = (0..k).map(|i| (g[i] as f64 * row[i] as f64 * inv) as f32).collect();
            let want = linear_ref(&normed, &wv, bias.then_some(&bv[..]), None, 1, n, k, swiglu);
            let e = nmse(&got, &want);
            within("linear", e, LINEAR_TOL, || format!("normed matvec {dtype:?} n {n} k {k} lanes {lanes} last_row {last_row} swiglu {swiglu} bias {bias}"));
        }
    }
    report();
}

#[test]
fn moe_expert_matvec_reads_the_chosen_experts() {
    let b = Bench::new();
    let (experts, slots, tokens, k) = (5usize, 2usize, 3usize, 27usize);
    let mut cases = vec![(DType::F32, false, 19), (DType::BF16, true, 19), (DType::Q8_0, false, 19), (DType::Q8_0, true, 19), (DType::Q4_1, false, 19)];
    for dtype in [DType::Q2K, DType::Q3K, DType::IQ4NL, DType::IQ4XS] {
        cases.extend([(dtype, false, 19), (dtype, true, 19)]);
    }
    // Enough outputs for the CPU matvec's 2 and 4 outputs per invocation.
    cases.extend([(DType::Q8_0, true, 515), (DType::Q4_1, true, 1029)]);
    for (dtype, cpu, n) in cases {
        let runs = lane_runs(&b);
        for (x_per_slot, &lanes) in [false, true].into_iter().flat_map(|x| runs.iter().map(move |l| (x, l))) {
            let mut rng = Rng(99 + x_per_slot as u64);
            // Quantized rows are whole blocks (two 32-weight blocks, or one super-block).
            let k = if dtype.is_quantized() { (dtype.block().0 as usize).max(64) } else { k };
            let stride = n * k + (n * k) % 2; // even, as the loader pads 16-bit experts
            let (wb, wv, code) = if dtype.is_quantized() {
                weights(dtype, experts * n, k, &mut rng) // whole blocks: stride == n * k
            } else {
                weights(dtype, experts, stride, &mut rng)
            };
            let x_rows = if x_per_slot { tokens * slots } else { tokens };
            let x = rng.vec(x_rows * k);
            let ids: Vec<u32> = (0..tokens * slots).map(|i| ((i * 3 + 1) % experts) as u32).collect();
            let (wbuf, xbuf, ybuf, ibuf) = (b.weights(dtype, if dtype.is_quantized() { k } else { stride }, &wb), b.f32(&x), b.zeros(tokens * slots * n), b.u32(&ids));
            let spec = tuned(dtype, "matvec", n, k, cpu, lanes)
                .with("SLOTS", slots as u32)
                .with("MOE", 1u32)
                .with("X_PER_SLOT", x_per_slot as u32)
                .with("EXPERT_STRIDE", stride as u32);
            let _ = code;
            let groups = linear_groups(&spec, n as u32, (tokens * slots) as u32);
            b.run_w(&spec, step(tokens as u32), &wbuf, &[(mm::X, &xbuf), (mm::Y, &ybuf), (mm::EXPERT_IDS, &ibuf), (mm::SLAB, &b.whole)], groups);
            let got = b.read(&ybuf, tokens * slots * n);
            let mut want = vec![0f32; tokens * slots * n];
            for r in 0..tokens * slots {
                let xr = if x_per_slot { r } else { r / slots };
                let e = ids[r] as usize;
                for j in 0..n {
                    want[r * n + j] = (0..k).map(|i| x[xr * k + i] as f64 * wv[e * stride + j * k + i] as f64).sum::<f64>() as f32;
                }
            }
            let err = nmse(&got, &want);
            within("linear", err, LINEAR_TOL, || format!("moe matvec {dtype:?} n {n} cpu {cpu} lanes {lanes} x_per_slot {x_per_slot}"));
        }
    }
    report();
}

#[test]
fn embedding_gather_matches_cpu() {
    let b = Bench::new();
    let (vocab, h, t) = (29usize, 23usize, 6usize);
    for dtype in FLOATS.into_iter().chain(QUANTS) {
        let mut rng = Rng(5);
        let h = if dtype.is_quantized() { dtype.block().0 as usize * 2 } else { h };
        let (wb, wv, code) = weights(dtype, vocab, h, &mut rng);
        let ids: Vec<u32> = (0..t).map(|_| rng.next_u32() % vocab as u32).collect();
        let (wbuf, ibuf, ybuf) = (b.weights(dtype, h, &wb), b.u32(&ids), b.zeros(t * h));
        let spec = Spec::new(Family::Embed, "main").with("WTYPE", code).with("H", h as u32);
        b.run_w(&spec, step(t as u32), &wbuf, &[(embed::IDS, &ibuf), (embed::Y, &ybuf), (embed::SLAB, &b.whole)], [(h as u32).div_ceil(64), t as u32, 1]);
        let got = b.read(&ybuf, t * h);
        let want: Vec<f32> = ids.iter().flat_map(|&i| wv[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
        let e = nmse(&got, &want);
        within("embedding", e, ROUNDING_TOL, || format!("embedding {dtype:?}: a gather, dequantized"));
    }
    report();
}

#[test]
fn rmsnorm_matches_cpu() {
    let b = Bench::new();
    let (rows, h, eps) = (5usize, 77usize, 1e-5f32);
    let mut rng = Rng(11);
    let x = rng.vec(rows * h);
    let w = rng.vec(h);
    let reference = |r: usize| -> Vec<f32> {
        let ms = x[r * h..(r + 1) * h].iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        (0..h).map(|i| (w[i] as f64 * x[r * h + i] as f64 * inv) as f32).collect()
    };
    for (last, lanes) in [false, true].into_iter().flat_map(|l| lane_runs(&b).into_iter().map(move |n| (l, n))) {
        let (xb, wb, yb) = (b.f32(&x), b.f32(&w), b.zeros(rows * h));
        let spec = Spec::new(Family::RmsNorm, "main").with("H", h as u32).with("EPS", eps).with("LAST_ROW", last as u32).lanes(lanes);
        b.run(&spec, step(rows as u32), &[(rn::X, &xb), (rn::WN, &wb), (rn::Y, &yb)], [if last { 1 } else { rows as u32 }, 1, 1]);
        let (got, want) = if last {
            (b.read(&yb, h), reference(rows - 1))
        } else {
            (b.read(&yb, rows * h), (0..rows).flat_map(reference).collect())
        };
        let e = nmse(&got, &want);
        within("rmsnorm", e, NORM_TOL, || format!("rmsnorm last_row {last} lanes {lanes}"));
    }
    report();
}

#[test]
fn rope_rotates_q_and_stores_k_v_in_the_ring() {
    let b = Bench::new();
    let (hd, nh, nkv, t, start, cap) = (6usize, 3usize, 1usize, 5usize, 7usize, 9usize);
    let stride = (nh + 2 * nkv) * hd;
    let half = hd / 2;
    let positions = start + t;
    let mut rng = Rng(21);
    let qkv = rng.vec(t * stride);
    let table: Vec<f32> = (0..positions * half).flat_map(|i| {
        let a = (i as f64) * 0.37;
        [a.cos() as f32, a.sin() as f32]
    }).collect();
    let kv_types: &[bool] = if has_f16(b.gpu.adapter.shader_f16, "f16 KV cache stores") { &[false, true] } else { &[false] };
    for (style, &kv16) in [0u32, 1].into_iter().flat_map(|s| kv_types.iter().map(move |k| (s, k))) {
        let n = cap * nkv * hd;
        let words = if kv16 { n.div_ceil(2) } else { n };
        let (qb, tb, kc, vc) = (b.f32(&qkv), b.f32(&table), b.zeros(words), b.zeros(words));
        let spec = Spec::new(Family::Rope, "main")
            .with("HD", hd as u32).with("NH", nh as u32).with("NKV", nkv as u32)
            .with("CAP", cap as u32).with("STYLE", style).kv_f16(kv16);
        let items = ((nh + nkv) * half + nkv * hd) as u32;
        b.run(&spec, Step { start_pos: start as u32, ..step(t as u32) }, &[(rope::QKV, &qb), (rotary::ROPE_TABLE, &tb), (rotary::KC, &kc), (rotary::VC, &vc)], [items.div_ceil(64), t as u32, 1]);
        let got_q = b.read(&qb, t * stride);
        let (got_k, got_v) = if kv16 { (b.read_f16(&kc, n), b.read_f16(&vc, n)) } else { (b.read(&kc, n), b.read(&vc, n)) };
        let mut want_q = qkv.clone();
        let mut want_k = vec![0f32; cap * nkv * hd];
        let mut want_v = vec![0f32; cap * nkv * hd];
        for r in 0..t {
            let pos = start + r;
            let slot = pos % cap;
            for head in 0..nh + nkv {
                for j in 0..half {
                    let (a, c) = if style == 0 { (j, j + half) } else { (2 * j, 2 * j + 1) };
                    let base = r * stride + head * hd;
                    let (cs, sn) = (table[(pos * half + j) * 2] as f64, table[(pos * half + j) * 2 + 1] as f64);
                    let (x, y) = (qkv[base + a] as f64, qkv[base + c] as f64);
                    let (ra, rc) = ((x * cs - y * sn) as f32, (y * cs + x * sn) as f32);
                    if head < nh {
                        want_q[base + a] = ra;
                        want_q[base + c] = rc;
                    } else {
                        let kb = (slot * nkv + head - nh) * hd;
                        want_k[kb + a] = ra;
                        want_k[kb + c] = rc;
                    }
                }
            }
            for e in 0..nkv * hd {
                want_v[slot * nkv * hd + e] = qkv[r * stride + (nh + nkv) * hd + e];
            }
        }
        // An f16 cache stores each value rounded once (the rotation itself in
        // f32 may round a last f16 bit differently from the f64 reference).
        let (want_k, want_v, k_tol) = if kv16 { (round_f16(&want_k), round_f16(&want_v), F16_KV_TOL) } else { (want_k, want_v, ROPE_TOL) };
        // Only the q part is rewritten; k and v rows of QKV stay as they were.
        within("rope", nmse(&got_q, &want_q), ROPE_TOL, || format!("rope q style {style}"));
        within(if kv16 { "rope k f16" } else { "rope" }, nmse(&got_k, &want_k), k_tol, || format!("rope k style {style} f16 {kv16}"));
        assert_eq!(got_v, want_v, "v copied into its slot (f16 {kv16})");
    }
    report();
}

/// Decode's qkv matvec on CPU drivers with RoPE and the KV store in its
/// epilogue (`matvec_rope`): q rotated into the output row, k rotated and v
/// copied into the ring slot, k and v's part of the row left alone; for
/// both pair layouts, f32 and f16 caches, every input loop (scalar, quad,
/// blocks, lanes), 2 (forced up from 1) and 4 outputs per invocation, a
/// bias, the norm prologue, and the matrix in one slab or two cut at a head.
#[test]
fn qkv_matvec_rotates_q_and_stores_k_v() {
    let b = Bench::new();
    // Position 11 of a 9-slot ring: slot 2.
    let (start, cap, eps) = (11usize, 9usize, 1e-5f32);
    let kv_types: &[bool] = if has_f16(b.gpu.adapter.shader_f16, "f16 KV cache stores") { &[false, true] } else { &[false] };
    // (type, inputs, head dim, q heads, kv heads, slab cut in heads: at the
    // q/k boundary, or inside the q heads so that the second slab has some)
    let shapes = [(DType::F32, 45, 6, 3, 1, 0), (DType::F16, 36, 10, 4, 2, 4), (DType::F16, 36, 10, 4, 2, 2), (DType::Q4_1, 64, 6, 3, 1, 3), (DType::Q8_0, 96, 64, 14, 2, 0), (DType::IQ4XS, 256, 64, 14, 2, 14)];
    for (dtype, k, hd, nh, nkv, cut) in shapes {
        let n = (nh + 2 * nkv) * hd;
        let half = hd / 2;
        let mut rng = Rng(0x709e + (n + k) as u64);
        let (wb, wv, _) = weights(dtype, n, k, &mut rng);
        let x: Vec<f32> = rng.vec(k).iter().map(|v| v * 3.0).collect();
        let (g, bias) = (rng.vec(k), rng.vec(n));
        let table: Vec<f32> = (0..(start + 1) * half).flat_map(|i| [((i as f64) * 0.37).cos() as f32, ((i as f64) * 0.37).sin() as f32]).collect();
        let y_init = rng.vec(n);
        let row_bytes = dtype.nbytes(k as u64).expect("whole blocks") as usize;
        let cuts: Vec<usize> = if cut == 0 { vec![0, n] } else { vec![0, cut * hd, n] };
        for (style, &kv16, lanes, norm) in [0u32, 1].into_iter().flat_map(|st| kv_types.iter().flat_map(move |kv| [(st, kv, false), (st, kv, true)]))
            .flat_map(|(st, kv, norm)| lane_runs(&b).into_iter().map(move |l| (st, kv, l, norm)))
        {
            let cells = cap * nkv * hd;
            let words = if kv16 { cells.div_ceil(2) } else { cells };
            let (xb, gb, bb, tb, yb, kc, vc) = (b.f32(&x), b.f32(&g), b.f32(&bias), b.f32(&table), b.f32(&y_init), b.zeros(words), b.zeros(words));
            for w in cuts.windows(2) {
                let (a, z) = (w[0], w[1]);
                let wbuf = b.weights(dtype, k, &wb[a * row_bytes..z * row_bytes]);
                let info = b.slab(a, z - a);
                let mut spec = tuned(dtype, "matvec", z - a, k, true, lanes).with("HAS_BIAS", 1u32);
                if norm {
                    spec = with_norm(spec, eps, false);
                }
                let spec = with_rope(spec).with("N_ALL", n as u32)
                    .with("HD", hd as u32).with("NH", nh as u32).with("NKV", nkv as u32)
                    .with("CAP", cap as u32).with("STYLE", style).kv_f16(kv16);
                let bind = linear_binds(&[(mm::X, &xb), (mm::Y, &yb), (mm::SLAB, &info), (rotary::ROPE_TABLE, &tb), (rotary::KC, &kc), (rotary::VC, &vc)], Some(&bb), norm.then_some(&gb), None);
                b.run_w(&spec, Step { start_pos: start as u32, ..step(1) }, &wbuf, &bind, linear_groups(&spec, (z - a) as u32, 1));
            }
            let got_y = b.read(&yb, n);
            let (got_k, got_v) = if kv16 { (b.read_f16(&kc, cells), b.read_f16(&vc, cells)) } else { (b.read(&kc, cells), b.read(&vc, cells)) };
            let input: Vec<f32> = if norm {
                let inv = 1.0 / (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64 + eps as f64).sqrt();
                (0..k).map(|i| (g[i] as f64 * x[i] as f64 * inv) as f32).collect()
            } else {
                x.clone()
            };
            let y = linear_ref(&input, &wv, Some(&bias), None, 1, n, k, false);
            let (mut want_y, mut want_k, mut want_v) = (y_init.clone(), vec![0f32; cells], vec![0f32; cells]);
            let slot = start % cap;
            for head in 0..nh + nkv {
                for j in 0..half {
                    let (a, c) = if style == 0 { (j, j + half) } else { (2 * j, 2 * j + 1) };
                    let (cs, sn) = (table[(start * half + j) * 2] as f64, table[(start * half + j) * 2 + 1] as f64);
                    let (p, q) = (y[head * hd + a] as f64, y[head * hd + c] as f64);
                    let (ra, rc) = ((p * cs - q * sn) as f32, (q * cs + p * sn) as f32);
                    if head < nh {
                        want_y[head * hd + a] = ra;
                        want_y[head * hd + c] = rc;
                    } else {
                        let kb = (slot * nkv + head - nh) * hd;
                        want_k[kb + a] = ra;
                        want_k[kb + c] = rc;
                    }
                }
            }
            want_v[slot * nkv * hd..(slot + 1) * nkv * hd].copy_from_slice(&y[(nh + nkv) * hd..]);
            let what = || format!("matvec_rope {dtype:?} hd {hd} cut {cut} style {style} f16 {kv16} lanes {lanes} norm {norm}");
            assert_eq!(got_y[nh * hd..], want_y[nh * hd..], "k and v's part of the row untouched: {}", what());
            within("linear", nmse(&got_y, &want_y), LINEAR_TOL, what);
            let (want_k, want_v, tol) = if kv16 { (round_f16(&want_k), round_f16(&want_v), F16_LINEAR_TOL) } else { (want_k, want_v, LINEAR_TOL) };
            within("linear", nmse(&got_k, &want_k), tol, what);
            within("linear", nmse(&got_v, &want_v), tol, what);
        }
    }
    report();
}

/// CPU attention for query rows at positions start..start+t over a ring cache.
#[allow(clippy::too_many_arguments)]
fn attention_ref(q: &[f32], kc: &[f32], vc: &[f32], t: usize, start: usize, nh: usize, nkv: usize, hd: usize, cap: usize, window: usize, causal: bool) -> Vec<f32> {
    let stride = (nh + 2 * nkv) * hd;
    let mut out = vec![0f32; t * nh * hd];
    let scale = 1.0 / (hd as f64).sqrt();
    for r in 0..t {
        // Non-causal: every row sees the pass's keys (an encoder's patches).
        let pos = if causal { start + r } else { start + t - 1 };
        let lo = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let scores: Vec<f64> = (lo..=pos)
                .map(|j| {
                    let kb = ((j % cap) * nkv + kvh) * hd;
                    (0..hd).map(|d| q[r * stride + h * hd + d] as f64 * kc[kb + d] as f64).sum::<f64>() * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for d in 0..hd {
                let mut acc = 0.0;
                for (i, j) in (lo..=pos).enumerate() {
                    acc += (scores[i] - m).exp() / z * vc[((j % cap) * nkv + kvh) * hd + d] as f64;
                }
                out[(r * nh + h) * hd + d] = acc as f32;
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn check_attention(b: &Bench, t: usize, start: usize, nh: usize, nkv: usize, hd: usize, cap: usize, window: usize, splits: Option<(u32, u32)>) {
    check_attention_kv(b, t, start, nh, nkv, hd, cap, window, splits, false, true);
    if has_f16(b.gpu.adapter.shader_f16, "attention over an f16 KV cache") {
        check_attention_kv(b, t, start, nh, nkv, hd, cap, window, splits, true, true);
    }
}

/// With `kv16` the cache holds f16 values (the reference reads the same
/// rounded values, so the tolerance stays that of f32 math).
#[allow(clippy::too_many_arguments)]
fn check_attention_kv(b: &Bench, t: usize, start: usize, nh: usize, nkv: usize, hd: usize, cap: usize, window: usize,
                      splits: Option<(u32, u32)>, kv16: bool, causal: bool) {
    let mut rng = Rng((t * 1000 + start * 10 + hd) as u64);
    let stride = (nh + 2 * nkv) * hd;
    let q = rng.vec(t * stride);
    let mut kc = rng.vec(cap * nkv * hd);
    let mut vc = rng.vec(cap * nkv * hd);
    let (n_splits, split_len) = splits.unwrap_or((1, 1 << 30));
    let upload = |v: &[f32]| {
        if kv16 {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            b.gpu.storage_init("kv16", bytemuck::cast_slice(&h))
        } else {
            b.f32(v)
        }
    };
    if kv16 {
        kc = round_f16(&kc);
        vc = round_f16(&vc);
    }
    let (qb, kb, vb) = (b.f32(&q), upload(&kc), upload(&vc));
    // Partials, then (CPU decode) each head's scores of every slot.
    let part = b.zeros((t * nh * n_splits as usize).max(nh * MAX_SPLITS as usize) * (hd + 2) + nh * cap);
    let spec = |e| Spec::new(Family::Attention, e)
        .with("HD", hd as u32).with("NH", nh as u32).with("NKV", nkv as u32)
        .with("CAP", cap as u32).with("WINDOW", window as u32).with("SCALE", 1.0 / (hd as f32).sqrt())
        .with("MAX_SPLITS", MAX_SPLITS).with("CAUSAL", causal as u32).kv_f16(kv16);
    let st = Step { start_pos: start as u32, n_splits, split_len, ..step(t as u32) };
    let want = attention_ref(&q, &kc, &vc, t, start, nh, nkv, hd, cap, window, causal);
    // Both devices' kernels: `attend` (GPUs), `attend_rows` where CPU drivers
    // run it for prefill (head dims that are multiples of 4), each on every
    // case whatever its row count; and CPU drivers' decode (`attend_scored`)
    // on the one-row cases.
    // attend_rows both with its K and V loads shared over subgroup lanes
    // (where the device and head dim allow) and without.
    let lanes = DeviceProfile::shaped(true, b.gpu.profile().lanes).attend_rows_lanes(hd as u32);
    let mut cases = vec![(false, 1), (true, 1)];
    if lanes > 1 {
        cases.push((true, lanes));
    }
    for (cpu, lanes) in cases {
        let (entry, rows) = DeviceProfile::shaped(cpu, 1).prefill_attention(hd as u32);
        if cpu && entry == AttentionEntry::Attend {
            continue;
        }
        let (entry_is_rows, entry) = (entry == AttentionEntry::AttendRows, entry.name());
        let out = b.zeros(t * nh * hd);
        if entry_is_rows {
            b.run(&spec(entry).lanes(lanes), st, &[(at::QKV, &qb), (at::KC, &kb), (at::VC, &vb), (at::PART, &part), (at::OUT, &out)], [nh as u32, (t as u32).div_ceil(rows), n_splits]);
        } else {
            b.run(&spec(entry), st, &[(at::QKV, &qb), (at::KC, &kb), (at::VC, &vb), (at::PART, &part)], [nh as u32, (t as u32).div_ceil(rows), n_splits]);
        }
        // attend_rows with one split wrote the output, with no combine.
        if !entry_is_rows || n_splits > 1 {
            b.run(&spec("combine"), st, &[(at::PART, &part), (at::OUT, &out)], [nh as u32, t as u32, 1]);
        }
        let got = b.read(&out, t * nh * hd);
        let e = nmse(&got, &want);
        within("attention", e, ATTENTION_TOL, || format!("{entry} lanes {lanes} t {t} start {start} nh {nh} nkv {nkv} hd {hd} cap {cap} window {window} splits {splits:?} f16 {kv16} causal {causal}"));
    }
    if t == 1 && DeviceProfile::shaped(true, 1).decode_attention(hd as u32) == AttentionEntry::AttendScored {
        let out = b.zeros(nh * hd);
        b.run(&spec("attend_scored"), st, &[(at::QKV, &qb), (at::KC, &kb), (at::VC, &vb), (at::PART, &part), (at::OUT, &out)], [nh as u32, 1, n_splits]);
        // One split: attend_scored wrote the output, with no combine.
        if n_splits > 1 {
            b.run(&spec("combine"), st, &[(at::PART, &part), (at::OUT, &out)], [nh as u32, t as u32, 1]);
        }
        let got = b.read(&out, t * nh * hd);
        within("attention", nmse(&got, &want), ATTENTION_TOL, || format!("attend_scored start {start} nh {nh} nkv {nkv} hd {hd} cap {cap} window {window} splits {splits:?} f16 {kv16}"));
    }
}

/// The vision encoder's attention: every patch of an image sees every other
/// (CAUSAL 0), over more keys than one tile, in partial groups of rows.
#[test]
fn bidirectional_attention_matches_cpu() {
    let b = Bench::new();
    for (t, nh, hd) in [(7, 2, 16), (150, 3, 32), (21, 4, 64)] {
        check_attention_kv(&b, t, 0, nh, nh, hd, t + 5, 0, None, false, false);
    }
}

#[test]
fn attention_matches_cpu() {
    let b = Bench::new();
    // Prefill rows, GQA 6:2, full context.
    check_attention(&b, 7, 0, 6, 2, 12, 40, 0, None);
    // One KV head, head dim above 64 (several output dims per invocation), a
    // context longer than one 64-key tile.
    check_attention(&b, 3, 150, 4, 1, 80, 200, 0, None);
    // Sliding window over a ring that has wrapped (positions 100.., 23 slots).
    check_attention(&b, 5, 100, 4, 2, 8, 23, 16, None);
    // Decode with split-K: 131 keys in 4 splits of 33 (uneven last split).
    check_attention(&b, 1, 130, 6, 3, 16, 160, 0, Some((4, 33)));
    // Split-K with a window, plus an empty split past the end.
    check_attention(&b, 1, 300, 2, 1, 6, 70, 50, Some((3, 20)));
    // Rows in several groups of attend_rows (CPU drivers), the last one
    // partial, each row's window starting elsewhere in a wrapped ring.
    check_attention(&b, 21, 50, 4, 2, 16, 37, 12, None);
    // attend_rows' K and V loads shared over 8 lanes (head dims of whole
    // groups of 32), in full and partial groups of rows, with a window.
    check_attention(&b, 13, 20, 4, 2, 64, 40, 0, None);
    check_attention(&b, 9, 30, 2, 1, 32, 24, 10, None);
    check_attention(&b, 2, 130, 6, 3, 16, 160, 0, Some((4, 33)));
    check_attention(&b, 1, 300, 2, 1, 8, 70, 50, Some((3, 20)));
    // CPU decode: one split over a wrapped ring with a window; the second to
    // fourth vec4s of output dims per invocation (head dims 128, 200, 256);
    // splits of more than 64 keys (each invocation scores several).
    check_attention(&b, 1, 40, 4, 2, 16, 30, 20, None);
    check_attention(&b, 1, 90, 4, 2, 128, 100, 0, Some((2, 64)));
    check_attention(&b, 1, 40, 2, 1, 200, 60, 33, None);
    check_attention(&b, 1, 500, 2, 2, 256, 520, 0, Some((3, 200)));
    report();
}

#[test]
fn moe_routing_and_combine_match_cpu() {
    let b = Bench::new();
    let (e, k, t, h) = (7usize, 3usize, 5usize, 13usize);
    let mut rng = Rng(77);
    let logits: Vec<f32> = rng.vec(t * e).iter().map(|x| x * 4.0).collect();
    let (lb, ib, wb) = (b.f32(&logits), b.zeros(t * k), b.zeros(t * k));
    let spec = |entry| Spec::new(Family::Moe, entry).with("E", e as u32).with("TOPK", k as u32).with("NORM_TOPK", 1u32).with("H", h as u32);
    b.run(&spec("route"), step(t as u32), &[(moe::LOGITS, &lb), (moe::IDS, &ib), (moe::WTS, &wb)], [1, 1, 1]);
    let ids = b.read_u32(&ib, t * k);
    let wts = b.read(&wb, t * k);
    for r in 0..t {
        let row = &logits[r * e..(r + 1) * e];
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let p: Vec<f64> = row.iter().map(|&x| (x as f64 - m).exp()).collect();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &c| p[c].total_cmp(&p[a]));
        let chosen = &order[..k];
        let sum: f64 = chosen.iter().map(|&i| p[i]).sum();
        for s in 0..k {
            assert_eq!(ids[r * k + s] as usize, chosen[s], "row {r} slot {s}");
            within("moe route weight", (wts[r * k + s] as f64 - p[chosen[s]] / sum).abs(), ROUTE_TOL, || format!("row {r} slot {s}"));
        }
    }
    let eout = rng.vec(t * k * h);
    let y0 = rng.vec(t * h);
    let (eb, yb) = (b.f32(&eout), b.f32(&y0));
    b.run(&spec("combine"), step(t as u32), &[(moe::WTS, &wb), (moe::EOUT, &eb), (moe::Y, &yb)], [1, t as u32, 1]);
    let got = b.read(&yb, t * h);
    let want: Vec<f32> = (0..t * h).map(|i| {
        let (r, j) = (i / h, i % h);
        y0[i] + (0..k).map(|s| wts[r * k + s] * eout[(r * k + s) * h + j]).sum::<f32>()
    }).collect();
    within("moe combine", nmse(&got, &want), ROUNDING_TOL, || "moe combine".into());
    report();
}

#[test]
fn cpu_dequantizer_matches_gguf_py() {
    let p = fixtures().join("quant/ggml_blocks.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).expect("fixture")).expect("json");
    let mut n = 0;
    for (name, t) in v["types"].as_object().expect("types") {
        let dtype = DType::from_ggml(t["ggml_type"].as_u64().expect("type") as u32).expect("known type");
        let hex = t["bytes_hex"].as_str().expect("hex");
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        let want: Vec<f32> = t["values"].as_array().expect("values").iter().map(|x| x.as_f64().expect("f") as f32).collect();
        let got = dequantize(dtype, &bytes);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            within("dequant", ((g - w).abs() / w.abs().max(1.0)) as f64, EXACT, || format!("{name} element {i}: {g} vs gguf-py {w}"));
        }
        n += 1;
    }
    assert_eq!(n, QUANTS.len());
    report();
}

/// Gate and up stored in different types (a mixed quantization): the gate's
/// dispatch writes its projection, the up one (`GATE_IN_Y`) reads it back and
/// writes silu(gate) * up, in every tuning (MoE experts: gguf_models.rs's
/// moe-mixed.gguf end to end).
#[test]
fn gate_and_up_of_different_types_combine_in_two_dispatches() {
    let b = Bench::new();
    for (gt, ut) in [(DType::Q4K, DType::Q6K), (DType::Q8_0, DType::F16), (DType::IQ4NL, DType::Q5_0)] {
        for entry in ["matvec", "matmul"] {
            for (cpu, lanes) in tunings(&b, entry) {
                let (rows, n, k) = (5, 29, 256);
                let mut rng = Rng(0x6a7e + n as u64);
                let (gb, gv, _) = weights(gt, n, k, &mut rng);
                let (ub, uv, _) = weights(ut, n, k, &mut rng);
                let x = rng.vec(rows * k);
                let mut y_init = vec![0f32; rows * n];
                y_init.extend([SENTINEL; 16]);
                let (gbuf, ubuf, xbuf, ybuf) = (b.weights(gt, k, &gb), b.weights(ut, k, &ub), b.f32(&x), b.f32(&y_init));
                for (wbuf, dtype, gate_in_y) in [(&gbuf, gt, 0u32), (&ubuf, ut, 1u32)] {
                    let spec = tuned(dtype, entry, n, k, cpu, lanes).with("GATE_IN_Y", gate_in_y);
                    let bind = [(mm::X, &xbuf), (mm::Y, &ybuf), (mm::SLAB, &b.whole)];
                    let groups = linear_groups(&spec, n as u32, rows as u32);
                    b.run_w(&spec, step(rows as u32), wbuf, &bind, groups);
                }
                let mut got = b.read(&ybuf, rows * n + 16);
                assert!(got.split_off(rows * n).iter().all(|&v| v == SENTINEL), "write past the output");
                let mut stacked = gv.clone();
                stacked.extend_from_slice(&uv);
                let want = linear_ref(&x, &stacked, None, None, rows, n, k, true);
                let e = nmse(&got, &want);
                within("linear", e, LINEAR_TOL, || format!("{entry} gate {gt:?} up {ut:?} cpu {cpu} lanes {lanes}"));
            }
        }
    }
    report();
}

#[test]
fn qk_norm_normalizes_each_q_and_k_head_before_rope() {
    // Qwen3's q_norm / k_norm fused into the rope kernel: RMSNorm of every q
    // and k head with its shared weights, then the rotation and the cache
    // store; v is stored as it is. hd 138 has more pairs (69) than the
    // workgroup has invocations.
    let b = Bench::new();
    let kv_types: &[bool] = if has_f16(b.gpu.adapter.shader_f16, "f16 KV cache stores") { &[false, true] } else { &[false] };
    for (hd, nh, nkv, t, start, cap, eps) in [(10usize, 3usize, 1usize, 5usize, 7usize, 9usize, 1e-6f32), (138, 4, 2, 3, 2, 6, 1e-5)] {
        let stride = (nh + 2 * nkv) * hd;
        let half = hd / 2;
        let mut rng = Rng(0x9e3 + hd as u64);
        // Rows of different scales, so a missing normalization shows.
        let qkv: Vec<f32> = rng.vec(t * stride).iter().enumerate().map(|(i, x)| x * (1.0 + (i / hd % 7) as f32)).collect();
        let nw: Vec<f32> = rng.vec(2 * hd).iter().map(|x| x + 1.5).collect();
        let table: Vec<f32> = (0..(start + t) * half).flat_map(|i| {
            let a = (i as f64) * 0.29;
            [a.cos() as f32, a.sin() as f32]
        }).collect();
        for (style, &kv16) in [0u32, 1].into_iter().flat_map(|s| kv_types.iter().map(move |k| (s, k))) {
            let n = cap * nkv * hd;
            let words = if kv16 { n.div_ceil(2) } else { n };
            let (qb, tb, kc, vc, wb) = (b.f32(&qkv), b.f32(&table), b.zeros(words), b.zeros(words), b.f32(&nw));
            let spec = Spec::new(Family::Rope, "qk_norm")
                .with("HD", hd as u32).with("NH", nh as u32).with("NKV", nkv as u32)
                .with("CAP", cap as u32).with("STYLE", style).with("EPS", eps).kv_f16(kv16);
            b.run(&spec, Step { start_pos: start as u32, ..step(t as u32) },
                  &[(rope::QKV, &qb), (rotary::ROPE_TABLE, &tb), (rotary::KC, &kc), (rotary::VC, &vc), (rope::NW, &wb)], [(nh + 2 * nkv) as u32, t as u32, 1]);
            let got_q = b.read(&qb, t * stride);
            let (got_k, got_v) = if kv16 { (b.read_f16(&kc, n), b.read_f16(&vc, n)) } else { (b.read(&kc, n), b.read(&vc, n)) };
            let mut want_q = qkv.clone();
            let mut want_k = vec![0f32; n];
            let mut want_v = vec![0f32; n];
            for r in 0..t {
                let pos = start + r;
                let slot = pos % cap;
                for head in 0..nh + nkv {
                    let base = r * stride + head * hd;
                    let x = &qkv[base..base + hd];
                    let inv = 1.0 / (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / hd as f64 + eps as f64).sqrt();
                    let w = &nw[if head < nh { 0 } else { hd }..][..hd];
                    let normed: Vec<f64> = (0..hd).map(|i| w[i] as f64 * x[i] as f64 * inv).collect();
                    for j in 0..half {
                        let (a, c) = if style == 0 { (j, j + half) } else { (2 * j, 2 * j + 1) };
                        let (cs, sn) = (table[(pos * half + j) * 2] as f64, table[(pos * half + j) * 2 + 1] as f64);
                        let (ra, rc) = ((normed[a] * cs - normed[c] * sn) as f32, (normed[c] * cs + normed[a] * sn) as f32);
                        if head < nh {
                            want_q[base + a] = ra;
                            want_q[base + c] = rc;
                        } else {
                            let kb = (slot * nkv + head - nh) * hd;
                            want_k[kb + a] = ra;
                            want_k[kb + c] = rc;
                        }
                    }
                }
                for e in 0..nkv * hd {
                    want_v[slot * nkv * hd + e] = qkv[r * stride + (nh + nkv) * hd + e];
                }
            }
            let (want_k, want_v, k_tol) = if kv16 { (round_f16(&want_k), round_f16(&want_v), F16_KV_TOL) } else { (want_k, want_v, ROPE_TOL) };
            let (eq, ek) = (nmse(&got_q, &want_q), nmse(&got_k, &want_k));
            within("qk_norm", eq, ROPE_TOL, || format!("qk_norm q hd {hd} style {style}"));
            within(if kv16 { "qk_norm k f16" } else { "qk_norm" }, ek, k_tol, || format!("qk_norm k hd {hd} style {style} f16 {kv16}"));
            assert_eq!(got_v, want_v, "v copied into its slot (hd {hd}, f16 {kv16})");
        }
    }
    report();
}

/// moe.wgsl's `group` on `ids` ((token, slot) rows' experts), read back and
/// checked: ORDER is a permutation of the rows sorted by expert, and the tiles
/// cut each expert's run in order into pieces of at most `tile` rows, no more
/// of them than `moe_max_tiles`. Returns the GPU buffers (ORDER, TILES).
fn group_rows(b: &Bench, ids: &[u32], experts: usize, slots: usize, tile: u32) -> (wgpu::Buffer, wgpu::Buffer) {
    let rows = ids.len();
    let tokens = rows / slots;
    let max_tiles = moe_max_tiles(rows as u32, experts as u32, tile) as usize;
    let (ibuf, obuf, tbuf) = (b.u32(ids), b.zeros(rows), b.u32(&vec![u32::MAX; 4 * (1 + max_tiles)]));
    let spec = Spec::new(Family::Moe, "group").with("E", experts as u32).with("TOPK", slots as u32).with("GROUP_TILE", tile);
    b.run(&spec, step(tokens as u32), &[(moe::IDS, &ibuf), (moe::ORDER, &obuf), (moe::TILES, &tbuf)], [1, 1, 1]);
    let order = b.read_u32(&obuf, rows);
    let table = b.read_u32(&tbuf, 4 * (1 + max_tiles));
    let mut seen = order.clone();
    seen.sort();
    assert_eq!(seen, (0..rows as u32).collect::<Vec<_>>(), "ORDER is a permutation of the rows");
    let n_tiles = table[0] as usize;
    assert!(n_tiles <= max_tiles, "{n_tiles} tiles, at most {max_tiles}");
    let mut want_tiles = Vec::new();
    let mut at = 0u32;
    for e in 0..experts as u32 {
        let count = ids.iter().filter(|&&i| i == e).count() as u32;
        for f in (0..count).step_by(tile as usize) {
            want_tiles.push([e, at + f, (count - f).min(tile), 0]);
        }
        for p in at..at + count {
            assert_eq!(ids[order[p as usize] as usize], e, "position {p} belongs to expert {e}");
        }
        at += count;
    }
    let got_tiles: Vec<[u32; 4]> = (0..n_tiles).map(|j| table[4 * (1 + j)..4 * (2 + j)].try_into().expect("4 words")).collect();
    assert_eq!(got_tiles, want_tiles, "tile table (tile {tile})");
    (obuf, tbuf)
}

/// One expert FFN matrix run grouped: `ids` rows, each computed with its
/// expert's block of the [experts][halves][n][k] matrix `dtypes` (one type, or
/// gate and up of two types in two dispatches, the second with GATE_IN_Y),
/// split by output at `cuts` into slabs `[experts][halves][slab rows][k]`.
/// X has one row per token (gate/up), or per (token, slot) with `x_per_slot` (down).
#[allow(clippy::too_many_arguments)]
fn check_grouped(b: &Bench, dtypes: &[DType], cpu: bool, ids: &[u32], experts: usize, slots: usize, n: usize, k: usize,
                 swiglu: bool, x_per_slot: bool, cuts: &[usize]) {
    // CPU drivers' grouped rows share input loads between lanes where the adapter has subgroups.
    for lanes in if cpu { lane_runs(b) } else { vec![1] } {
        check_grouped_tuned(b, dtypes, cpu, lanes, ids, experts, slots, n, k, swiglu, x_per_slot, cuts);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_grouped_tuned(b: &Bench, dtypes: &[DType], cpu: bool, lanes: u32, ids: &[u32], experts: usize, slots: usize, n: usize,
                       k: usize, swiglu: bool, x_per_slot: bool, cuts: &[usize]) {
    let rows = ids.len();
    let tile = DeviceProfile::shaped(cpu, 1).moe_tile;
    let (obuf, tbuf) = group_rows(b, ids, experts, slots, tile);
    let mut rng = Rng(0x9d0 + (n * 3 + k + rows) as u64 + dtypes[0].shader_code() as u64);
    let halves = if swiglu { 2 } else { 1 };
    // Per dtype: its own [experts][parts][n][k] rows (gate and up apart when typed apart).
    let parts = if dtypes.len() == 2 { 1 } else { halves };
    let mats: Vec<(Vec<u8>, Vec<f32>)> = dtypes.iter().map(|&d| {
        let (wb, wv, _) = weights(d, experts * parts * n, k, &mut rng);
        (wb, wv)
    }).collect();
    // w(e, half, j) as the kernels must see it.
    let w_at = |e: usize, hf: usize, j: usize| -> &[f32] {
        let (m, p) = if dtypes.len() == 2 { (hf, 0) } else { (0, hf) };
        let row = (e * parts + p) * n + j;
        &mats[m].1[row * k..(row + 1) * k]
    };
    let x_rows = if x_per_slot { rows } else { rows / slots };
    let x = rng.vec(x_rows * k);
    let mut y_init = vec![0f32; rows * n];
    y_init.extend([SENTINEL; 16]);
    let (xbuf, ybuf) = (b.f32(&x), b.f32(&y_init));
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(n);
    assert_eq!(dtypes.len(), mats.len());
    for (m, (&dtype, (wb, _))) in dtypes.iter().zip(&mats).enumerate() {
        let row_bytes = dtype.nbytes(k as u64).expect("whole blocks") as usize;
        for s in bounds.windows(2) {
            let (a, z) = (s[0], s[1]);
            let mut slab = Vec::new();
            for e in 0..experts {
                for p in 0..parts {
                    let r0 = (e * parts + p) * n;
                    slab.extend_from_slice(&wb[(r0 + a) * row_bytes..(r0 + z) * row_bytes]);
                }
            }
            let spec = tuned(dtype, "matmul_grouped", z - a, k, cpu, lanes)
                .with("SLOTS", slots as u32)
                .with("X_PER_SLOT", x_per_slot as u32)
                .with("SWIGLU", (swiglu && dtypes.len() == 1) as u32)
                .with("GATE_IN_Y", (m == 1) as u32)
                .with("EXPERT_STRIDE", (parts * (z - a) * k) as u32)
                .with("N_ALL", n as u32)
                .with("GROUP_TILE", tile)
                .with("EXPERTS", experts as u32);
            assert_eq!(spec.entry, if cpu && k.is_multiple_of(4) { "matmul_rows_grouped" } else { "matmul_grouped" });
            let (wbuf, info) = (b.weights(dtype, k, &slab), b.slab(a, z - a));
            let groups = linear_groups(&spec, (z - a) as u32, rows as u32);
            b.run_w(&spec, step((rows / slots) as u32), &wbuf, &[(mm::X, &xbuf), (mm::Y, &ybuf), (mm::SLAB, &info), (mm::ORDER, &obuf), (mm::TILES, &tbuf)], groups);
        }
    }
    let mut got = b.read(&ybuf, rows * n + 16);
    assert!(got.split_off(rows * n).iter().all(|&v| v == SENTINEL), "grouped: write past the output");
    let mut want = vec![0f32; rows * n];
    for r in 0..rows {
        let xr = &x[if x_per_slot { r } else { r / slots } * k..][..k];
        let e = ids[r] as usize;
        let dot = |w: &[f32]| (0..k).map(|i| xr[i] as f64 * w[i] as f64).sum::<f64>();
        for j in 0..n {
            let g = dot(w_at(e, 0, j));
            want[r * n + j] = if swiglu { silu(g) * dot(w_at(e, 1, j)) } else { g } as f32;
        }
    }
    let err = nmse(&got, &want);
    within("linear", err, LINEAR_TOL, || format!("grouped {dtypes:?} cpu {cpu} lanes {lanes} n {n} k {k} swiglu {swiglu} x_per_slot {x_per_slot} cuts {cuts:?}"));
}

#[test]
fn moe_prefill_groups_rows_by_expert_and_matches_cpu() {
    let b = Bench::new();
    let (experts, slots, tokens) = (6usize, 2usize, 40usize);
    // Expert 0 takes every token's first slot (40 rows: more than a tile), the
    // second slots spread over experts 1, 2 and 4; experts 3 and 5 stay unused.
    let mut rng = Rng(0x6b0);
    let ids: Vec<u32> = (0..tokens * slots).map(|r| if r % slots == 0 { 0 } else { [1, 2, 4][rng.next_u32() as usize % 3] }).collect();
    // A single token (one row per slot) and rows of one expert only.
    for cpu in [false, true] {
        group_rows(&b, &ids, experts, slots, DeviceProfile::shaped(cpu, 1).moe_tile);
        group_rows(&b, &[5, 0], experts, slots, DeviceProfile::shaped(cpu, 1).moe_tile);
        group_rows(&b, &[3; 70], experts, 1, DeviceProfile::shaped(cpu, 1).moe_tile);
    }
    let mut cases = vec![DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q8_0, DType::Q4_1];
    cases.extend([DType::Q2K, DType::Q3K, DType::Q6K, DType::IQ4NL, DType::IQ4XS]);
    for dtype in cases {
        // Odd shapes for floats; quantized rows are whole blocks (two 32-weight blocks, or one super-block).
        let (n, k) = if dtype.is_quantized() { (19, (dtype.block().0 as usize).max(64)) } else { (19, 27) };
        for cpu in [false, true] {
            check_grouped(&b, &[dtype], cpu, &ids, experts, slots, n, k, true, false, &[]);
            check_grouped(&b, &[dtype], cpu, &ids, experts, slots, n, k, false, true, &[]);
        }
    }
    // K % 4 == 0 floats (quad loads; matmul_rows_grouped on CPU drivers).
    for cpu in [false, true] {
        check_grouped(&b, &[DType::F16], cpu, &ids, experts, slots, 37, 44, true, false, &[]);
    }
    // Enough outputs for two per invocation of matmul_rows_grouped (CPU drivers).
    assert!(tuned(DType::Q4_1, "matmul_grouped", 515, 64, true, 1).constants.contains(&("NPI", 2.0)));
    check_grouped(&b, &[DType::Q4_1], true, &ids, experts, slots, 515, 64, true, false, &[]);
    check_grouped(&b, &[DType::F16], true, &ids, experts, slots, 515, 44, false, true, &[]);
    // Slabs (a matrix over the binding limit) and gate/up of different types.
    for cpu in [false, true] {
        check_grouped(&b, &[DType::F32], cpu, &ids, experts, slots, 77, 36, true, false, &[32, 64]);
        check_grouped(&b, &[DType::Q8_0], cpu, &ids, experts, slots, 41, 64, false, true, &[5, 40]);
        check_grouped(&b, &[DType::Q4K, DType::Q6K], cpu, &ids, experts, slots, 29, 256, true, false, &[]);
        check_grouped(&b, &[DType::Q8_0, DType::F16], cpu, &ids, experts, slots, 29, 64, true, false, &[13]);
    }
    report();
}

/// Mistral 3's patch merger gather against torch's `unfold` order, on grids
/// of different shapes through one pipeline (the grid is a uniform), with
/// merges of 2 and 3; elements past the image's tokens are left alone.
#[test]
fn patch_merge_gathers_as_unfold() {
    use tramontane::gpu::bindings::patch_merge as pm;
    let b = Bench::new();
    let mut rng = Rng(2727);
    for (d, m, w, h) in [(5, 2, 6, 4), (5, 2, 2, 8), (7, 3, 9, 3)] {
        let x = rng.vec(w * h * d);
        let row = d * m * m;
        let tokens = (w / m) * (h / m);
        let mut want = vec![0f32; tokens * row];
        for gy in 0..h / m {
            for gx in 0..w / m {
                for c in 0..d {
                    for i in 0..m {
                        for j in 0..m {
                            let r = gy * (w / m) + gx;
                            want[r * row + (c * m + i) * m + j] = x[((m * gy + i) * w + m * gx + j) * d + c];
                        }
                    }
                }
            }
        }
        let (xb, yb) = (b.f32(&x), b.f32(&vec![SENTINEL; tokens * row + 8]));
        let grid = b.gpu.uniform_init("grid", bytemuck::cast_slice(&[w as u32, h as u32, 0, 0]));
        let spec = Spec::new(Family::PatchMerge, "main").with("D", d as u32).with("M", m as u32);
        b.run(&spec, step(tokens as u32), &[(pm::X, &xb), (pm::Y, &yb), (pm::GRID, &grid)], [(row as u32).div_ceil(64), tokens as u32 + 1, 1]);
        let got = b.read(&yb, tokens * row + 8);
        assert_eq!(&got[..tokens * row], &want[..], "d {d} m {m} grid {w}x{h}");
        assert!(got[tokens * row..].iter().all(|&v| v == SENTINEL), "written past the tokens");
    }
}
