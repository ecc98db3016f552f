//! The adapter self-test: beside the weights' download (a failure stops
//! it), the kernels a model will use (its weight types' matvec and prefill matmul, the RMSNorm, decode
//! and prefill attention, in the load's [`DeviceProfile`] and KV type) run on
//! tiny random inputs and are compared with the same math on the CPU. Some
//! drivers compute wrong values (subgroup shuffles and f16 have been the
//! usual suspects in browsers' WebGPU); without this, a model on them would
//! stream garbage. A mismatch falls back to serial sums (no subgroups) and an
//! f32 KV cache, and says so; where no variant passes the load is
//! `UNSUPPORTED`, naming the kernel and the adapter.
//!
//! The matvec and prefill matmul of a weight type run as the model's own o- or
//! down-projection of that type (same N, K and epilogue), so they compile the
//! pipelines the model then uses, and only the first two workgroups' outputs
//! are computed and checked (a few hundred rows of weights, whatever the
//! model's size). Each outcome is remembered per adapter (and injected fault)
//! for the process, so later loads of models that use the same kernels pay
//! nothing, on the same device or a new one.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;
use web_time::Instant;

use super::layers::{attention_spec, norm_spec};
use super::linear::{linear_binds, linear_groups, linear_outputs_per_group, linear_spec, residual};
use super::MAX_SPLITS;
use crate::error::{Error, Result};
use crate::gpu::bindings::{attention as at, common::STEP, matmul as mm, rmsnorm as rn};
use crate::gpu::kernels::Dispatch;
use crate::gpu::profile::{AttentionEntry, DeviceProfile, MatmulEntry};
use crate::gpu::{Gpu, Step, Store};
use crate::parse::dequant::dequantize;
use crate::parse::{DType, ModelConfig};

/// Largest normalized squared error a kernel may show: the kernels tests see
/// 1e-10 and less; a broken sum or conversion gives ~1.
const TOLERANCE: f64 = 1e-6;

/// What the self-test found, for `info`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfTest {
    /// Kernels run and compared.
    pub kernels: usize,
    /// Wall time of the test (0 where an earlier load on this device ran it).
    pub millis: f64,
    /// Of which creating the model's pipelines, which the model then uses
    /// (natively: compiling them; a browser compiles at the first dispatch,
    /// so there it shows in the rest). `millis` less this is what checking
    /// takes, beside the download.
    pub pipeline_millis: f64,
    /// What failed and what was used instead; empty when all passed first time.
    pub fallbacks: Vec<String>,
}

/// The profile and KV type that passed for this device and model.
#[derive(Debug, Clone)]
pub struct Settled {
    pub profile: DeviceProfile,
    pub kv_f16: bool,
    pub report: SelfTest,
}

/// What a model needs checked: the types of its weight matrices, and its
/// config with the first layer's KV cache slots, from which the RMSNorm and
/// attention kernels are built exactly as the dispatch plan builds them, so
/// that the model reuses those pipelines.
#[derive(Clone)]
pub struct Needs {
    pub dtypes: Vec<DType>,
    /// Per weight type, a layer of the model that adds into the residual
    /// stream (an o- or dense down-projection), if one is of that type.
    pub linears: Vec<ModelLinear>,
    pub cfg: ModelConfig,
    pub slots: usize,
}

/// A linear layer of the model: `n` outputs of `k` inputs of `dtype`, added
/// into the residual stream, with a bias or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelLinear {
    pub dtype: DType,
    pub n: usize,
    pub k: usize,
    pub bias: bool,
}

impl ModelLinear {
    /// The first o- and dense down-projection of each weight type of a model
    /// whose tensors are `dtype_of(layer, is_down)`.
    pub fn of_model(cfg: &ModelConfig, dtype_of: impl Fn(usize, bool) -> Option<DType>) -> Vec<ModelLinear> {
        let mut out: Vec<ModelLinear> = Vec::new();
        for l in 0..cfg.n_layers {
            let o = (false, cfg.n_heads * cfg.head_dim, cfg.o_bias);
            let down = (true, cfg.intermediate, cfg.mlp_bias);
            for (is_down, k, bias) in [o, down] {
                if is_down && cfg.moe.is_some() {
                    continue;
                }
                if let Some(dtype) = dtype_of(l, is_down) {
                    if !out.iter().any(|m| m.dtype == dtype) {
                        out.push(ModelLinear { dtype, n: cfg.hidden, k, bias });
                    }
                }
            }
        }
        out
    }
}

impl Needs {
    /// What tells one self-test from another on a device.
    fn key(&self) -> String {
        let c = &self.cfg;
        format!("{:?}|{:?}|{}|{}|{}|{}|{}|{}|{:?}", self.dtypes, self.linears, c.hidden, c.rms_eps, c.head_dim, c.n_heads, c.n_kv_heads, self.slots, c.window(0))
    }
}

/// Run the self-test for `profile` and the KV type `kv_f16` (falling back to
/// f32 only where `kv_may_fall_back`: an f16 cache the caller asked for is
/// kept or refused).
pub async fn settle(gpu: &Gpu, profile: DeviceProfile, kv_f16: bool, kv_may_fall_back: bool, needs: &Needs) -> Result<Settled> {
    let a = &gpu.adapter;
    let key = format!("{}|{}|{}|{:?}|{profile:?}|{kv_f16}|{kv_may_fall_back}|{}", a.name, a.backend, a.driver, gpu.kernels.fault(), needs.key());
    if let Some(s) = outcomes().get(&key) {
        let mut s = s.clone();
        s.report.millis = 0.0;
        s.report.pipeline_millis = 0.0;
        return Ok(s);
    }
    let t0 = Instant::now();
    let mut variants = vec![(profile, kv_f16)];
    if profile.lanes > 1 {
        variants.push((profile.without_lanes(), kv_f16));
    }
    if kv_f16 && kv_may_fall_back {
        variants.push((profile, false));
        if profile.lanes > 1 {
            variants.push((profile.without_lanes(), false));
        }
    }
    let mut fallbacks = Vec::new();
    let mut kernels = 0;
    for (i, &(p, kv16)) in variants.iter().enumerate() {
        // Pipelines of the variant that passes are the model's; a failed
        // one's are not counted.
        let created = gpu.kernels.creating_seconds();
        let (run, failure) = check_all(gpu, &p, kv16, needs).await?;
        kernels += run;
        match failure {
            None => {
                if i > 0 {
                    fallbacks.push(format!("using {}", describe(&p, kv16)));
                }
                let pipeline_millis = (gpu.kernels.creating_seconds() - created) * 1e3;
                let report = SelfTest { kernels, millis: t0.elapsed().as_secs_f64() * 1e3, pipeline_millis, fallbacks };
                let settled = Settled { profile: p, kv_f16: kv16, report };
                outcomes().insert(key, settled.clone());
                return Ok(settled);
            }
            Some(f) => fallbacks.push(format!("{f} with {}", describe(&p, kv16))),
        }
    }
    Err(Error::Unsupported(format!(
        "this adapter ({}, {}) computes wrong values: {}; no variant passed the self-test",
        gpu.adapter.name,
        gpu.adapter.backend,
        fallbacks.join("; ")
    )))
}

/// What [`settle`] takes, owned, so that a thread can run it.
#[derive(Clone)]
pub struct Request {
    pub profile: DeviceProfile,
    pub kv_f16: bool,
    pub kv_may_fall_back: bool,
    pub needs: Needs,
}

impl Request {
    async fn settle(&self, gpu: &Gpu) -> Result<Settled> {
        settle(gpu, self.profile, self.kv_f16, self.kv_may_fall_back, &self.needs).await
    }
}

/// [`settle`] beside other work (a load's upload): natively on a thread of
/// its own, since its readbacks block and creating its pipelines is
/// compiling them; in browsers as a future that runs between the other
/// work's awaits (its pipelines compile in the GPU process meanwhile).
/// Returns the outcome's future and what to call when that future is
/// dropped unfinished (the other work failed).
pub fn settle_beside(gpu: std::sync::Arc<Gpu>, req: Request) -> (impl std::future::Future<Output = Result<Settled>>, Abandon) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let (outcome, fire) = crate::gpu::Callback::new();
        // A thread that panics still says so.
        struct Deliver<F: FnOnce(Result<Settled>)>(Option<F>);
        impl<F: FnOnce(Result<Settled>)> Drop for Deliver<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f(Err(Error::Internal("the self-test's thread panicked".into())));
                }
            }
        }
        let mut send = Deliver(Some(fire));
        let spawned = std::thread::Builder::new().name("tramontane-self-test".into()).spawn({
            let (gpu, req) = (gpu.clone(), req.clone());
            move || {
                let r = pollster::block_on(req.settle(&gpu));
                if let Some(f) = send.0.take() {
                    f(r);
                }
            }
        });
        let here = spawned.is_err();
        let future = async move {
            if here {
                // No thread to be had: here, then.
                return req.settle(&gpu).await;
            }
            outcome.await.unwrap_or_else(|| Err(Error::Internal("the self-test's outcome was lost".into())))
        };
        (future, Abandon(spawned.ok()))
    }
    #[cfg(target_arch = "wasm32")]
    (async move { req.settle(&gpu).await }, Abandon(()))
}

/// A self-test whose outcome nobody waits for any more.
pub struct Abandon(#[cfg(not(target_arch = "wasm32"))] Option<std::thread::JoinHandle<()>>, #[cfg(target_arch = "wasm32")] ());

impl Abandon {
    /// Wait for its thread to end: it shares the device (and its error
    /// slot, `Gpu::check`) with whatever runs next.
    pub fn join(self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(h) = self.0 {
            let _ = h.join();
        }
    }
}

/// The outcomes so far, by adapter, fault and what was tested.
fn outcomes() -> std::sync::MutexGuard<'static, HashMap<String, Settled>> {
    static OUTCOMES: LazyLock<Mutex<HashMap<String, Settled>>> = LazyLock::new(Mutex::default);
    OUTCOMES.lock().unwrap_or_else(|p| p.into_inner())
}

fn describe(p: &DeviceProfile, kv_f16: bool) -> String {
    let sums = if p.lanes > 1 { format!("subgroup sums over {}", p.lanes) } else { "serial sums".into() };
    format!("{sums}, an {} KV cache", if kv_f16 { "f16" } else { "f32" })
}

/// Every check in `p`: how many ran, and the first failure.
async fn check_all(gpu: &Gpu, p: &DeviceProfile, kv_f16: bool, needs: &Needs) -> Result<(usize, Option<String>)> {
    let mut t = Tester { gpu, step: gpu.uniform("self_test_step", std::mem::size_of::<Step>() as u64), run: 0 };
    for &dtype in &needs.dtypes {
        let model = needs.linears.iter().find(|m| m.dtype == dtype).copied();
        for (wanted, rows) in [(MatmulEntry::Matvec, 1), (MatmulEntry::Matmul, 5)] {
            if let Some(f) = t.linear(p, dtype, model, wanted, rows).await? {
                return Ok((t.run, Some(f)));
            }
        }
    }
    if let Some(f) = t.norm(p, &needs.cfg).await? {
        return Ok((t.run, Some(f)));
    }
    for (rows, start) in [(1, 5), (3, 2)] {
        if let Some(f) = t.attention(p, kv_f16, needs, rows, start).await? {
            return Ok((t.run, Some(f)));
        }
    }
    Ok((t.run, None))
}

struct Tester<'g> {
    gpu: &'g Gpu,
    step: wgpu::Buffer,
    run: usize,
}

impl Tester<'_> {
    /// Record `dispatches` (each with its grid) after writing the step, and
    /// check the device took them.
    fn submit(&self, rows: u32, start: u32, dispatches: &[(&Dispatch, [u32; 3])]) -> Result<()> {
        let step = Step { n_tokens: rows, start_pos: start, n_splits: 1, split_len: 1 << 30, temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0, ..Default::default() };
        self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        for (d, _) in dispatches {
            d.copy_inputs(&mut enc, rows);
        }
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for (d, groups) in dispatches {
                d.record(&mut pass, *groups);
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        self.gpu.check()
    }

    /// Compare; a failure names the kernel.
    fn compare(&mut self, what: String, got: &[f32], want: &[f32]) -> Option<String> {
        self.run += 1;
        let e = nmse(got, want);
        (e.is_nan() || e > TOLERANCE).then(|| format!("{what} gave wrong values (normalized error {e:.1e})"))
    }

    /// `dtype`'s matvec or matmul over `rows` input rows: as the model's own
    /// layer `model` where there is one (its pipeline), else on 19 outputs of
    /// two blocks. Only the first two workgroups run, so only the weights of
    /// their outputs exist, and only those outputs are compared.
    async fn linear(&mut self, p: &DeviceProfile, dtype: DType, model: Option<ModelLinear>, wanted: MatmulEntry, rows: usize) -> Result<Option<String>> {
        let g = self.gpu;
        let (n, k, spec) = match model {
            Some(m) => (m.n, m.k, residual(linear_spec(dtype, wanted, m.n, m.k, p), m.bias)),
            None => {
                let (n, k) = (19usize, if dtype.is_quantized() { 2 * dtype.block().0 as usize } else { 64 });
                (n, k, linear_spec(dtype, wanted, n, k, p))
            }
        };
        // With the model's shape only the first two workgroups run, so the
        // weights are those of their outputs only: random in each one's first
        // 32 rows (the ones compared) and zero between, so that host memory
        // and the CPU's work stay small whatever the model's size.
        let per = linear_outputs_per_group(&spec).max(1) as usize;
        let touched = if model.is_some() { n.min(2 * per) } else { n };
        let compared: Vec<usize> = if model.is_some() {
            let m = per.min(32);
            (0..m.min(touched)).chain(per..(per + m).min(touched)).collect()
        } else {
            (0..touched).collect()
        };
        let mut groups = linear_groups(&spec, touched as u32, rows as u32);
        groups[2] = 1;
        let row_bytes = dtype.nbytes(k as u64).unwrap_or(0) as usize;
        let mut file = vec![0u8; touched * row_bytes];
        // The values of the compared rows, in `compared`'s order (each run's
        // rows are consecutive).
        let mut w = Vec::with_capacity(compared.len() * k);
        for (i, run) in [0..per.min(touched), per.min(touched)..touched].into_iter().enumerate() {
            let picked: Vec<usize> = compared.iter().copied().filter(|j| run.contains(j)).collect();
            let (Some(&a), Some(&z)) = (picked.first(), picked.last()) else { continue };
            let part = random_weights(dtype, z + 1 - a, k, 0x5e1f + dtype.shader_code() as u64 + i as u64);
            w.extend(dequantize(dtype, &part));
            file[a * row_bytes..(z + 1) * row_bytes].copy_from_slice(&part);
        }
        let x = random(rows * k, 7);
        let accumulate = model.is_some();
        let y0 = if accumulate { random(rows * n, 29) } else { vec![0.0; rows * n] };
        let bias = model.filter(|m| m.bias).map(|_| random(n, 31));
        let store = crate::upload::store_matrix(g, dtype, k, &file, p.weights == Store::Texture);
        let (xb, yb) = (g.storage_init("self_test_x", bytemuck::cast_slice(&x)), g.storage_init("self_test_y", bytemuck::cast_slice(&y0)));
        let slab = g.uniform_init("slab", bytemuck::cast_slice(&[0u32, u32::MAX, 0, 0]));
        let bb = bias.as_ref().map(|b| g.storage_init("self_test_bias", bytemuck::cast_slice(b)));
        let binds = linear_binds(&[(STEP, &self.step), (mm::X, &xb), (mm::Y, &yb), (mm::SLAB, &slab)], bb.as_ref(), None, None);
        let inputs: Vec<_> = if p.prefill_inputs == Store::Texture { g.input_texture("self_test_x", &xb).into_iter().collect() } else { Vec::new() };
        let d = g.kernels.dispatch_rows(&spec, &store, &binds, &inputs);
        self.submit(rows as u32, 0, &[(&d, groups)])?;
        let all = g.read_f32(&yb, rows * n).await?;
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for (i, &j) in compared.iter().enumerate() {
                got.push(all[r * n + j]);
                let dot: f64 = (0..k).map(|c| f64::from(x[r * k + c]) * f64::from(w[i * k + c])).sum();
                let add = f64::from(y0[r * n + j]) + bias.as_ref().map_or(0.0, |b| f64::from(b[j]));
                want.push((dot + add) as f32);
            }
        }
        Ok(self.compare(format!("{} of {}", spec.entry, dtype.name()), &got, &want))
    }

    async fn norm(&mut self, p: &DeviceProfile, cfg: &ModelConfig) -> Result<Option<String>> {
        let g = self.gpu;
        let (rows, h, eps) = (3usize, cfg.hidden, cfg.rms_eps);
        let (x, w) = (random(rows * h, 11), random(h, 13));
        let (xb, wb, yb) = (
            g.storage_init("self_test_x", bytemuck::cast_slice(&x)),
            g.storage_init("self_test_w", bytemuck::cast_slice(&w)),
            g.storage("self_test_y", (rows * h * 4) as u64),
        );
        let d = g.kernels.dispatch(&norm_spec(p, cfg), &[(STEP, &self.step), (rn::X, &xb), (rn::WN, &wb), (rn::Y, &yb)]);
        self.submit(rows as u32, 0, &[(&d, [rows as u32, 1, 1])])?;
        let got = g.read_f32(&yb, rows * h).await?;
        let want: Vec<f32> = x
            .chunks(h)
            .flat_map(|row| {
                let ms = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / h as f64;
                let inv = 1.0 / (ms + f64::from(eps)).sqrt();
                row.iter().zip(&w).map(move |(&v, &wi)| (f64::from(v) * inv * f64::from(wi)) as f32)
            })
            .collect();
        Ok(self.compare("the RMSNorm".into(), &got, &want))
    }

    /// `rows` query rows at positions start.. over the keys in slots
    /// 0..start+rows of layer 0's cache, as decode (one row) or prefill runs
    /// it. The cache has the model's slots; only those first ones are written.
    async fn attention(&mut self, p: &DeviceProfile, kv_f16: bool, needs: &Needs, rows: usize, start: usize) -> Result<Option<String>> {
        let (g, cfg) = (self.gpu, &needs.cfg);
        let (nh, nkv, hd, cap) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, needs.slots);
        let used = start + rows;
        if cap < used {
            return Ok(None);
        }
        let stride = (nh + 2 * nkv) * hd;
        let q = random(rows * stride, 17);
        let round = |v: Vec<f32>| if kv_f16 { v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect() } else { v };
        let (kc, vc) = (round(random(used * nkv * hd, 19)), round(random(used * nkv * hd, 23)));
        let kv_bytes = if kv_f16 { 2 } else { 4 };
        let cache = |label, v: &[f32]| {
            // Whole words, as the runtime's caches.
            let buf = g.storage(label, ((cap * nkv * hd * kv_bytes) as u64).next_multiple_of(4));
            let bytes: Vec<u8> = if kv_f16 { v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect() } else { bytemuck::cast_slice(v).to_vec() };
            let mut bytes = bytes;
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            g.queue.write_buffer(&buf, 0, &bytes);
            buf
        };
        let (qb, kb, vb) = (g.storage_init("self_test_q", bytemuck::cast_slice(&q)), cache("self_test_k", &kc), cache("self_test_v", &vc));
        let part = g.storage("self_test_partials", (((rows * nh).max(nh * MAX_SPLITS as usize) * (hd + 2) + nh * cap) * 4) as u64);
        let out = g.storage("self_test_out", (rows * nh * hd * 4) as u64);
        let spec = |e| attention_spec(cfg, 0, cap, kv_f16, e);
        let (entry, per_group) = if rows == 1 { (p.decode_attention(hd as u32), 1) } else { p.prefill_attention(hd as u32) };
        let base = [(STEP, &self.step), (at::QKV, &qb), (at::KC, &kb), (at::VC, &vb), (at::PART, &part)];
        let grid = [nh as u32, (rows as u32).div_ceil(per_group), 1];
        let first = match entry {
            AttentionEntry::AttendRows => g.kernels.dispatch(&spec(entry).lanes(p.attend_rows_lanes(hd as u32)), &[&base[..], &[(at::OUT, &out)]].concat()),
            AttentionEntry::AttendScored => g.kernels.dispatch(&spec(entry), &[&base[..], &[(at::OUT, &out)]].concat()),
            _ => g.kernels.dispatch(&spec(entry), &base),
        };
        // One split: attend_rows and attend_scored write the output themselves.
        if matches!(entry, AttentionEntry::AttendRows | AttentionEntry::AttendScored) {
            self.submit(rows as u32, start as u32, &[(&first, grid)])?;
        } else {
            let combine = g.kernels.dispatch(&spec(AttentionEntry::Combine), &[(STEP, &self.step), (at::PART, &part), (at::OUT, &out)]);
            self.submit(rows as u32, start as u32, &[(&first, grid), (&combine, [nh as u32, rows as u32, 1])])?;
        }
        let got = g.read_f32(&out, rows * nh * hd).await?;
        let want = attention(&q, &kc, &vc, rows, start, nh, nkv, hd);
        let what = format!("{} ({}, head dim {hd}, {} KV)", entry.name(), if rows == 1 { "decode" } else { "prefill" }, if kv_f16 { "f16" } else { "f32" });
        Ok(self.compare(what, &got, &want))
    }
}

/// Causal attention of `rows` query rows at positions start.. over slots
/// 0..=position, `nh` query heads in groups over `nkv` KV heads.
#[allow(clippy::too_many_arguments)]
fn attention(q: &[f32], kc: &[f32], vc: &[f32], rows: usize, start: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
    let stride = (nh + 2 * nkv) * hd;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f32; rows * nh * hd];
    for r in 0..rows {
        let pos = start + r;
        for h in 0..nh {
            let qh = &q[r * stride + h * hd..][..hd];
            let kv = |j: usize| (j * nkv + h / (nh / nkv).max(1)) * hd;
            let scores: Vec<f64> =
                (0..=pos).map(|j| qh.iter().zip(&kc[kv(j)..][..hd]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * scale).collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for d in 0..hd {
                let v: f64 = scores.iter().enumerate().map(|(j, s)| (s - m).exp() / z * f64::from(vc[kv(j) + d])).sum();
                out[(r * nh + h) * hd + d] = v as f32;
            }
        }
    }
    out
}

/// Normalized squared error; NaN where either holds a NaN.
fn nmse(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (&a, &b) in got.iter().zip(want) {
        num += (f64::from(a) - f64::from(b)).powi(2);
        den += f64::from(b).powi(2);
    }
    num / den.max(1e-30)
}

/// Deterministic values in [-1, 1) (xorshift).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `rows` x `cols` random weights of `dtype` as a file holds them: random
/// bytes for the quants, with each block's scales set to small positive (or
/// signed, where the type's math allows) f16 values so every weight is finite
/// and of order one hundredth. `cols` must be whole blocks.
pub fn random_weights(dtype: DType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let n = rows * cols;
    let v = random(n, seed);
    match dtype {
        DType::F32 => bytemuck::cast_slice(&v).to_vec(),
        DType::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        DType::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
        q => {
            let (be, bb) = q.block();
            let bytes = random(n / be as usize * bb as usize + 1, seed ^ 0xb10c);
            let mut scales = random(4 * n, seed ^ 0x5ca1e).into_iter();
            let mut next = || scales.next().unwrap_or(0.5);
            bytes[..n / be as usize * bb as usize]
                .chunks(bb as usize)
                .flat_map(|c| {
                    let mut blk: Vec<u8> = c.iter().map(|&f| ((f + 1.0) * 127.9) as u8).collect();
                    let mut put = |off: usize, v: f32| blk[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    match q {
                        DType::Q6K => put(208, 0.002 + next().abs() * 0.03),
                        DType::Q2K => {
                            put(80, 0.002 + next().abs() * 0.03);
                            put(82, 0.002 + next().abs() * 0.03);
                        }
                        DType::Q3K => put(108, next() * 0.05),
                        DType::IQ4XS => put(0, next() * 0.002),
                        DType::Q4K | DType::Q5K => {
                            put(0, 0.002 + next().abs() * 0.03);
                            put(2, 0.002 + next().abs() * 0.03);
                        }
                        _ => {
                            put(0, next() * 0.1);
                            if matches!(q, DType::Q4_1 | DType::Q5_1) {
                                put(2, next());
                            }
                        }
                    }
                    blk
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_are_finite_for_every_type() {
        for d in crate::parse::SUPPORTED {
            let cols = if d.is_quantized() { 2 * d.block().0 as usize } else { 64 };
            let w = dequantize(d, &random_weights(d, 3, cols, 1));
            assert_eq!(w.len(), 3 * cols, "{d:?}");
            assert!(w.iter().all(|v| v.is_finite() && v.abs() < 1e3), "{d:?}");
            assert!(w.iter().any(|&v| v != 0.0), "{d:?}");
        }
    }
}
