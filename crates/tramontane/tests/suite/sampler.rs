//! The GPU sampler (shaders/sample.wgsl) tested as a distribution.
//!
//! A CPU reference computes the whole distribution the shader should draw from:
//! penalties (repetition: HF semantics over every token in context; frequency
//! and presence: OpenAI semantics over generated tokens), temperature, top-k
//! (ties at the k-th value kept), top-p over the top-k survivors (the smallest
//! set of highest logits, ties kept whole, holding at least top_p of their
//! mass: HF's rule), renormalized. Thousands of draws (fixed seeds, one
//! sample index each) are then compared with it by Pearson's chi-square; every
//! comparison also runs against a wrong distribution, which must fail, so the
//! test is shown able to fail. Penalties are checked exactly: the logits the
//! shader samples from (it writes them back in place) and the log-probability
//! it reports against the reference, and greedy argmax flips at crafted margins.
//!
//! Each draw is one dispatch of the unchanged kernel; a batch records many of
//! them in one command buffer, each bound (at buffer offsets) to its own copy
//! of the logits, the state and the outputs, and reads them all back at once.

use std::num::NonZeroU64;
use std::time::Instant;

use crate::common::*;
use tramontane::gpu::kernels::Spec;
use tramontane::gpu::{Family, Gpu, Step};

/// Significance of each goodness-of-fit test: 13 distribution cases, so a
/// correct sampler fails the file with probability < 13 * 5e-8 < 1e-6 (the
/// draws are seeded, so a pass is reproducible, not luck re-rolled). Every
/// wrong distribution must fall below it too.
const ALPHA: f64 = 5e-8;
/// Draws per distribution case without top-k or top-p (a dispatch costs
/// ~0.1 ms on lavapipe) and with them (64 bisection passes: ~0.7 ms).
/// Enough for every wrong distribution below to fail by a wide margin.
const DRAWS: u32 = 4000;
const DRAWS_TRUNCATED: u32 = 1500;
/// Words of OUT per draw (the token, its log-probability, up to 31 alternatives).
const OUT_WORDS: usize = 64;
/// Draws per command buffer.
const CHUNK: usize = 2048;

fn base() -> Step {
    Step { n_tokens: 1, split_len: 1 << 30, n_splits: 1, temperature: 1.0, top_p: 1.0, repetition_penalty: 1.0, ..Default::default() }
}

/// One dispatch's results: OUT's words (token, log-probability bits, ...), the
/// next input id, the logits the shader sampled from and the state after it.
struct Draw {
    token: u32,
    next_id: u32,
    out: Vec<u32>,
    logits: Vec<f32>,
    state: Vec<u32>,
}

struct Sampler {
    gpu: Gpu,
    /// A deliberately broken copy of sample.wgsl to run instead (see `mutants`).
    mutant: Option<String>,
    /// The mask bound to every draw (bit i: token i allowed); draws read it
    /// only with `Step::masked`. Empty: all ones.
    mask: std::cell::RefCell<Vec<u32>>,
}

/// `size` bytes of `buffer` from `offset`, bound at `binding`.
fn at(buffer: &wgpu::Buffer, binding: u32, offset: usize, size: usize) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset: offset as u64, size: NonZeroU64::new(size as u64) }),
    }
}

impl Sampler {
    fn new() -> Self {
        Sampler { gpu: pollster::block_on(Gpu::new()).expect("a wgpu adapter"), mutant: None, mask: Default::default() }
    }

    /// The mask buffer for `v` tokens.
    fn mask_buffer(&self, v: usize) -> wgpu::Buffer {
        let mask = self.mask.borrow();
        let words = if mask.is_empty() { vec![u32::MAX; v.div_ceil(32)] } else { mask.clone() };
        assert_eq!(words.len(), v.div_ceil(32), "a mask word per 32 tokens");
        self.gpu.storage_init("mask", bytemuck::cast_slice(&words))
    }

    /// The kernel for `v` tokens: the engine's, or the mutant's.
    fn pipeline(&self, v: usize) -> wgpu::ComputePipeline {
        let Some(body) = &self.mutant else { return self.gpu.kernels.pipeline(&Self::spec(v)) };
        let src = format!("alias kv_t = f32;\n{}{body}", include_str!("../../../../shaders/common.wgsl"));
        let module = self.gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("mutant"), source: wgpu::ShaderSource::Wgsl(src.into()) });
        let p = self.gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("mutant"),
            layout: None,
            module: &module,
            entry_point: Some("sample"),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &[("V", v as f64)], zero_initialize_workgroup_memory: false },
            cache: None,
        });
        self.gpu.check().expect("the mutant compiles");
        p
    }

    fn spec(v: usize) -> Spec {
        Spec::new(Family::Sample, "sample").with("V", v as u32)
    }

    /// One dispatch as the engine does it (whole buffers, its own submit).
    fn once(&self, logits: &[f32], state: &[u32], st: Step) -> Draw {
        if self.mutant.is_some() {
            return self.batch(logits, state, &[st]).remove(0);
        }
        let g = &self.gpu;
        let v = logits.len();
        assert_eq!(state.len(), v, "state per token");
        let ub = g.uniform_init("step", bytemuck::bytes_of(&st));
        let (lb, sb) = (g.storage_init("logits", bytemuck::cast_slice(logits)), g.storage_init("state", bytemuck::cast_slice(state)));
        let (ib, ob) = (g.storage("ids", 4), g.storage("out", 4 * OUT_WORDS as u64));
        let mb = self.mask_buffer(v);
        let d = g.kernels.dispatch(&Self::spec(v), &[(0, &ub), (1, &lb), (2, &sb), (3, &ib), (4, &ob), (5, &mb)]);
        let mut enc = g.device.create_command_encoder(&Default::default());
        {
            let mut p = enc.begin_compute_pass(&Default::default());
            d.record(&mut p, [1, 1, 1]);
        }
        g.queue.submit([enc.finish()]);
        g.check().expect("no GPU error");
        let out = pollster::block_on(g.read_u32(&ob, OUT_WORDS)).expect("read");
        Draw {
            token: out[0],
            next_id: pollster::block_on(g.read_u32(&ib, 1)).expect("read")[0],
            logits: pollster::block_on(g.read_f32(&lb, v)).expect("read"),
            state: pollster::block_on(g.read_u32(&sb, v)).expect("read"),
            out,
        }
    }

    /// Every step of `steps` on its own copy of `logits` and `state`: one
    /// dispatch each, up to CHUNK of them per submit (test-only batching: each
    /// dispatch's bind group points at its own slice of larger buffers).
    fn batch(&self, logits: &[f32], state: &[u32], steps: &[Step]) -> Vec<Draw> {
        let g = &self.gpu;
        let v = logits.len();
        assert_eq!(state.len(), v, "state per token");
        let lim = g.device.limits();
        let (sa, ua) = (lim.min_storage_buffer_offset_alignment as usize, lim.min_uniform_buffer_offset_alignment as usize);
        let row = (4 * v).next_multiple_of(sa);
        let id_row = 4usize.next_multiple_of(sa);
        let out_row = (4 * OUT_WORDS).next_multiple_of(sa);
        let step_size = std::mem::size_of::<Step>();
        let step_row = step_size.next_multiple_of(ua);
        let pipeline = self.pipeline(v);
        let layout = pipeline.get_bind_group_layout(0);
        let mut draws = Vec::with_capacity(steps.len());
        for chunk in steps.chunks(CHUNK) {
            let n = chunk.len();
            let mut lbytes = vec![0u8; n * row];
            let mut sbytes = vec![0u8; n * row];
            let mut ubytes = vec![0u8; n * step_row];
            for (i, st) in chunk.iter().enumerate() {
                lbytes[i * row..i * row + 4 * v].copy_from_slice(bytemuck::cast_slice(logits));
                sbytes[i * row..i * row + 4 * v].copy_from_slice(bytemuck::cast_slice(state));
                ubytes[i * step_row..i * step_row + step_size].copy_from_slice(bytemuck::bytes_of(st));
            }
            let (lb, sb, ub) = (g.storage_init("logits", &lbytes), g.storage_init("state", &sbytes), g.uniform_init("steps", &ubytes));
            let (ib, ob) = (g.storage("ids", (n * id_row) as u64), g.storage("out", (n * out_row) as u64));
            let mb = self.mask_buffer(v);
            let groups: Vec<wgpu::BindGroup> = (0..n)
                .map(|i| {
                    g.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("sample batch"),
                        layout: &layout,
                        entries: &[
                            at(&ub, 0, i * step_row, step_size),
                            at(&lb, 1, i * row, 4 * v),
                            at(&sb, 2, i * row, 4 * v),
                            at(&ib, 3, i * id_row, 4),
                            at(&ob, 4, i * out_row, 4 * OUT_WORDS),
                            at(&mb, 5, 0, 4 * v.div_ceil(32)),
                        ],
                    })
                })
                .collect();
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut p = enc.begin_compute_pass(&Default::default());
                p.set_pipeline(&pipeline);
                for bg in &groups {
                    p.set_bind_group(0, bg, &[]);
                    p.dispatch_workgroups(1, 1, 1);
                }
            }
            g.queue.submit([enc.finish()]);
            g.check().expect("no GPU error");
            let lw = pollster::block_on(g.read_f32(&lb, n * row / 4)).expect("read");
            let sw = pollster::block_on(g.read_u32(&sb, n * row / 4)).expect("read");
            let iw = pollster::block_on(g.read_u32(&ib, n * id_row / 4)).expect("read");
            let ow = pollster::block_on(g.read_u32(&ob, n * out_row / 4)).expect("read");
            for i in 0..n {
                let out = ow[i * out_row / 4..][..OUT_WORDS].to_vec();
                draws.push(Draw {
                    token: out[0],
                    next_id: iw[i * id_row / 4],
                    logits: lw[i * row / 4..][..v].to_vec(),
                    state: sw[i * row / 4..][..v].to_vec(),
                    out,
                });
            }
        }
        assert_eq!(draws.len(), steps.len());
        draws
    }

    /// `n` draws of `st` with sample indices 0..n; checks every draw's
    /// bookkeeping (next input, state update, sampled-from logits, log-probability)
    /// against the reference and returns the counts per token.
    fn counts(&self, logits: &[f32], state: &[u32], st: Step, n: u32) -> Vec<u64> {
        let steps: Vec<Step> = (0..n).map(|i| Step { sample_index: i, ..st }).collect();
        let draws = self.batch(logits, state, &steps);
        assert_eq!(draws.len(), n as usize);
        let want = Expected::new(logits, state, &st);
        let mut counts = vec![0u64; logits.len()];
        for d in &draws {
            check_bookkeeping(d, state, &want);
            counts[d.token as usize] += 1;
        }
        counts
    }
}

/// Largest |GPU - reference| over the sampled-from logits (relative to
/// max(1, |x|)) and over log-probabilities, across all checks of this file.
static WORST: std::sync::Mutex<(f64, f64)> = std::sync::Mutex::new((0.0, 0.0));

/// Penalized and tempered logits, relative to max(1, |x|): measured exactly 0
/// on lavapipe (2026-12-01; the same f32 operations in the same order), so
/// required exact. (A GPU that rounds division less exactly, as WGSL allows,
/// or fuses the multiply-add would need ~1e-6.)
const LOGIT_REL_TOL: f64 = 0.0;
/// Reported log-probabilities (the drawn token's and the top alternatives')
/// against an f64 log-sum-exp: measured 3.4e-7 (lavapipe, 2026-12-01).
const LOGPROB_TOL: f64 = 4e-6;

/// What every draw of one step must report besides its token: the logits
/// it sampled from, their log-sum-exp, and the most likely tokens in order
/// (ties to the lower id).
struct Expected {
    logits: Vec<f32>,
    lse: f64,
    top: Vec<u32>,
    /// Top alternatives reported (the step's `logprobs` - 1), if any.
    logprobs: u32,
}

impl Expected {
    fn new(logits: &[f32], state: &[u32], st: &Step) -> Self {
        let l = processed(logits, state, st);
        let mut top: Vec<u32> = (0..l.len() as u32).collect();
        top.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
        top.truncate(st.logprobs.saturating_sub(1) as usize);
        Expected { lse: logsumexp(&l), logits: l, top, logprobs: st.logprobs }
    }
}

fn print_worst() {
    let (lw, pw) = *WORST.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("worst so far: sampled-from logit {lw:.1e} (relative), log-probability {pw:.1e}");
}

/// One draw's side effects and outputs against the reference: the state
/// update, the next input, the sampled-from logits; with `logprobs`, the
/// token's log-probability and the top alternatives', else nothing written.
fn check_bookkeeping(d: &Draw, state: &[u32], want: &Expected) {
    let v = want.logits.len();
    assert!((d.token as usize) < v, "token {} outside the vocabulary of {v}", d.token);
    assert_eq!(d.next_id, d.token, "the sampled token is the next input");
    assert_eq!(d.logits.len(), v);
    assert_eq!(d.state.len(), state.len());
    let mut worst = WORST.lock().unwrap_or_else(|p| p.into_inner());
    for (i, (&got, &w)) in d.logits.iter().zip(&want.logits).enumerate() {
        let e = (got as f64 - w as f64).abs() / (w.abs() as f64).max(1.0);
        worst.0 = worst.0.max(e);
        assert!(e <= LOGIT_REL_TOL, "token {i}: sampled from logit {got}, reference {w}");
    }
    for (i, (&got, &was)) in d.state.iter().zip(state).enumerate() {
        let after = if i == d.token as usize { (((was >> 1) + 1) << 1) | 1 } else { was };
        assert_eq!(got, after, "state of token {i} after drawing {}", d.token);
    }
    let mut lp = |what: String, bits: u32, id: u32| {
        let want_lp = want.logits[id as usize] as f64 - want.lse;
        let e = (f32::from_bits(bits) as f64 - want_lp).abs();
        worst.1 = worst.1.max(e);
        assert!(e <= LOGPROB_TOL, "{what}: log-probability {} want {want_lp}", f32::from_bits(bits));
    };
    if want.logprobs == 0 {
        assert!(d.out[1..].iter().all(|&w| w == 0), "no log-probabilities asked, none written");
        return;
    }
    lp(format!("drawn token {}", d.token), d.out[1], d.token);
    assert_eq!(want.top.len(), want.logprobs as usize - 1);
    for (n, &id) in want.top.iter().enumerate() {
        assert_eq!(d.out[2 + 2 * n], id, "alternative {n}");
        lp(format!("alternative {n} ({id})"), d.out[3 + 2 * n], id);
    }
    assert!(d.out[2 + 2 * want.top.len()..].iter().all(|&w| w == 0), "nothing past the alternatives asked");
}

/// The logits the shader samples from, as HF and OpenAI define them, in f32:
/// repetition penalty on every token in context (bit 0 of the state: divide a
/// positive logit, multiply a negative one), minus count * frequency +
/// presence for generated tokens (state >> 1 = count), then / temperature
/// (not for greedy).
fn processed(logits: &[f32], state: &[u32], s: &Step) -> Vec<f32> {
    assert_eq!(logits.len(), state.len());
    logits
        .iter()
        .zip(state)
        .map(|(&x, &st)| {
            let mut l = x;
            if st & 1 != 0 {
                l = if l > 0.0 { l / s.repetition_penalty } else { l * s.repetition_penalty };
            }
            let count = st >> 1;
            if count > 0 {
                l -= count as f32 * s.frequency_penalty + s.presence_penalty;
            }
            if s.greedy == 0 {
                l /= s.temperature;
            }
            l
        })
        .collect()
}

fn logsumexp(l: &[f32]) -> f64 {
    let m = l.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
    m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

/// Relative distance of the top-p goal from the mass of any kept prefix under
/// which a case still counts as unambiguous (the shader sums in f32).
const TOP_P_MARGIN: f64 = 1e-4;

/// The distribution a draw follows: softmax of `processed` over the tokens
/// top-k and then top-p keep, renormalized; 0 elsewhere.
fn distribution(logits: &[f32], state: &[u32], s: &Step) -> Vec<f64> {
    let l: Vec<f64> = processed(logits, state, s).iter().map(|&x| x as f64).collect();
    let v = l.len();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    let mx = l[order[0]];
    let mut kept = vec![true; v];
    assert_eq!(kept.len(), l.len());
    if s.top_k > 0 && (s.top_k as usize) < v {
        let kth = l[order[s.top_k as usize - 1]];
        for (k, &x) in kept.iter_mut().zip(&l) {
            *k = x >= kth;
        }
    }
    if s.top_p < 1.0 {
        let w: Vec<f64> = l.iter().zip(&kept).map(|(&x, &k)| if k { (x - mx).exp() } else { 0.0 }).collect();
        let total: f64 = w.iter().sum();
        let goal = total * s.top_p as f64;
        // Walk the distinct values down: the first whose tokens (with all
        // higher ones) hold the goal is the threshold.
        let (mut mass, mut j, mut thr) = (0.0, 0, f64::NEG_INFINITY);
        while j < v {
            let val = l[order[j]];
            while j < v && l[order[j]] == val {
                mass += w[order[j]];
                j += 1;
            }
            assert!((mass - goal).abs() > TOP_P_MARGIN * total, "top-p case too close to its boundary for f32 sums");
            if mass >= goal {
                thr = val;
                break;
            }
        }
        for (k, &x) in kept.iter_mut().zip(&l) {
            *k &= x >= thr;
        }
    }
    let w: Vec<f64> = l.iter().zip(&kept).map(|(&x, &k)| if k { (x - mx).exp() } else { 0.0 }).collect();
    let z: f64 = w.iter().sum();
    w.iter().map(|x| x / z).collect()
}

/// ln Γ(x), Lanczos (g = 7, n = 9), |error| < 1e-13 for x > 0.5.
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9, 676.520_368_121_885_1, -1_259.139_216_722_402_8, 771.323_428_777_653_1,
        -176.615_029_162_140_6, 12.507_343_278_686_905, -0.138_571_095_265_720_12, 9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let s: f64 = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (Numerical Recipes' series and
/// continued fraction).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut ap, mut del, mut sum) = (a, 1.0 / a, 1.0 / a);
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * front
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        front * h
    }
}

/// Pearson's chi-square of `counts` against `probs`: cells expecting fewer
/// than 5 draws are pooled (with the smallest other cell if the pool itself
/// expects fewer than 5). A draw where `probs` is 0 makes the statistic
/// infinite. Returns (statistic, degrees of freedom, p-value).
fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize, f64) {
    assert_eq!(counts.len(), probs.len(), "a probability per token");
    let n: u64 = counts.iter().sum();
    if counts.iter().zip(probs).any(|(&c, &p)| c > 0 && p == 0.0) {
        return (f64::INFINITY, 0, 0.0);
    }
    let mut cells: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut pool = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let e = p * n as f64;
        if e == 0.0 {
            continue;
        }
        if e < 5.0 {
            pool.0 += c as f64;
            pool.1 += e;
        } else {
            cells.push((c as f64, e));
        }
    }
    if pool.1 > 0.0 {
        if pool.1 >= 5.0 || cells.is_empty() {
            cells.push(pool);
        } else {
            let small = (0..cells.len()).min_by(|&a, &b| cells[a].1.total_cmp(&cells[b].1)).expect("a cell");
            cells[small].0 += pool.0;
            cells[small].1 += pool.1;
        }
    }
    assert!(cells.len() >= 2, "a goodness-of-fit test needs two cells");
    let stat: f64 = cells.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    let df = cells.len() - 1;
    (stat, df, gamma_q(df as f64 / 2.0, stat / 2.0))
}

/// A distribution case: its draws must fit the reference (p > ALPHA), never
/// leave its support, and reach every kept token that expects 20+ draws;
/// the same counts must fail against each of the `wrong` distributions.
fn fit(name: &str, counts: &[u64], want: &[f64], wrong: &[(&str, Vec<f64>)]) {
    assert_eq!(counts.len(), want.len());
    let n: u64 = counts.iter().sum();
    for (i, (&c, &p)) in counts.iter().zip(want).enumerate() {
        assert!(p > 0.0 || c == 0, "{name}: drew token {i} ({c} times) outside the kept set");
        assert!(p * (n as f64) < 20.0 || c > 0, "{name}: never drew kept token {i} (p {p:.4})");
    }
    let (stat, df, pv) = chi_square(counts, want);
    eprintln!("{name}: {n} draws, chi-square {stat:.1} on {df} df, p = {pv:.3}");
    assert!(pv > ALPHA, "{name}: counts {counts:?} do not fit {want:?} (chi-square {stat:.1} on {df} df, p = {pv:.2e})");
    for (what, w) in wrong {
        assert_eq!(w.len(), counts.len());
        let (stat, df, pv) = chi_square(counts, w);
        eprintln!("    against {what}: chi-square {stat:.1} on {df} df, p = {pv:.1e}");
        assert!(pv < ALPHA, "{name}: the counts also fit the wrong distribution '{what}' (p = {pv:.2e}): the test cannot tell");
    }
}

/// The distribution of `st` with some of its settings changed.
fn with(logits: &[f32], state: &[u32], st: Step, change: impl Fn(&mut Step)) -> Vec<f64> {
    let mut s = st;
    change(&mut s);
    distribution(logits, state, &s)
}

/// Everything on the argmax token.
fn argmax_dist(logits: &[f32], state: &[u32], st: &Step) -> Vec<f64> {
    let p = processed(logits, state, st);
    let best = argmax(&p) as usize;
    (0..p.len()).map(|i| if i == best { 1.0 } else { 0.0 }).collect()
}

const SMALL: [f32; 10] = [0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 1.5, -2.0, 0.8, 1.2];

#[test]
fn chi_square_helper_matches_tables() {
    // Upper critical values (NIST tables) and exact cases.
    for (df, x, p) in [(1usize, 3.841, 0.05), (6, 16.812, 0.01), (10, 18.307, 0.05), (30, 59.703, 0.001), (9, 21.666, 0.01)] {
        let q = gamma_q(df as f64 / 2.0, x / 2.0);
        assert!((q / p - 1.0).abs() < 2e-3, "Q(df {df}, {x}) = {q:e}, table {p:e}");
    }
    // Even degrees of freedom in closed form (a Poisson tail), down to tiny p.
    for (df, x) in [(2usize, 6.0), (10, 18.0), (10, 60.0), (20, 80.0), (40, 200.0)] {
        let h = x / 2.0;
        let (mut term, mut sum) = (1.0f64, 1.0f64);
        for i in 1..df / 2 {
            term *= h / i as f64;
            sum += term;
        }
        let exact = (-h).exp() * sum;
        let q = gamma_q(df as f64 / 2.0, h);
        assert!((q / exact - 1.0).abs() < 1e-9, "Q(df {df}, {x}) = {q:e}, exact {exact:e}");
    }
    let (stat, df, _) = chi_square(&[10, 20, 30, 40], &[0.1, 0.2, 0.3, 0.4]);
    assert_eq!((stat, df), (0.0, 3));
    assert_eq!(chi_square(&[1, 9], &[0.0, 1.0]).0, f64::INFINITY, "a draw outside the support fails");
}

#[test]
fn temperature_scales_the_distribution() {
    temperature_scales_the_distribution_on(&Sampler::new());
}

fn temperature_scales_the_distribution_on(s: &Sampler) {
    let zero = [0u32; SMALL.len()];
    let t0 = Instant::now();
    for (i, t) in [0.5f32, 0.7, 1.0, 1.5].into_iter().enumerate() {
        let st = Step { temperature: t, seed: 100 + i as u32, logprobs: 1, ..base() };
        let counts = s.counts(&SMALL, &zero, st, DRAWS);
        let want = distribution(&SMALL, &zero, &st);
        let mut wrong = vec![
            ("T = 1 (temperature ignored)", with(&SMALL, &zero, st, |s| s.temperature = 1.0)),
            ("T * 1.3", with(&SMALL, &zero, st, |s| s.temperature = t * 1.3)),
            ("argmax", argmax_dist(&SMALL, &zero, &st)),
        ];
        if t == 1.0 {
            wrong[0] = ("T = 0.5", with(&SMALL, &zero, st, |s| s.temperature = 0.5));
        }
        fit(&format!("T = {t}"), &counts, &want, &wrong);
    }
    eprintln!("temperature cases: {:.2} s", t0.elapsed().as_secs_f64());
    print_worst();
}

/// The untruncated softmax of the processed logits (top-k and top-p off).
fn untruncated(logits: &[f32], state: &[u32], st: Step) -> Vec<f64> {
    with(logits, state, st, |s| {
        s.top_k = 0;
        s.top_p = 1.0;
    })
}

/// `full` renormalized over its `m` most likely tokens.
fn top_m(full: &[f64], m: usize) -> Vec<f64> {
    let mut order: Vec<usize> = (0..full.len()).collect();
    order.sort_by(|&a, &b| full[b].total_cmp(&full[a]));
    let mut w = vec![0.0; full.len()];
    for &i in &order[..m] {
        w[i] = full[i];
    }
    let z: f64 = w.iter().sum();
    w.iter().map(|x| x / z).collect()
}

fn support(p: &[f64]) -> usize {
    p.iter().filter(|&&x| x > 0.0).count()
}

/// The wrong distributions every truncating case must reject: no truncation,
/// one kept token more or fewer, the kept tokens' untruncated probabilities
/// with the removed mass on the argmax (no renormalization), and the argmax.
fn truncation_controls(logits: &[f32], state: &[u32], st: Step, want: &[f64]) -> Vec<(&'static str, Vec<f64>)> {
    let full = untruncated(logits, state, st);
    assert_eq!(full.len(), want.len());
    let m = support(want);
    assert!(m > 1 && m < logits.len(), "a truncating case ({m} of {} kept)", logits.len());
    let kept_mass: f64 = full.iter().zip(want).filter(|(_, &w)| w > 0.0).map(|(p, _)| p).sum();
    let best = argmax(&processed(logits, state, &st)) as usize;
    let unrenormalized: Vec<f64> = (0..full.len())
        .map(|i| if want[i] > 0.0 { full[i] } else { 0.0 } + if i == best { 1.0 - kept_mass } else { 0.0 })
        .collect();
    let mut wrong = vec![
        ("no truncation", full.clone()),
        ("one token more kept", top_m(&full, m + 1)),
        ("one token fewer kept", top_m(&full, m - 1)),
        ("removed mass on the argmax (not renormalized)", unrenormalized),
        ("argmax", argmax_dist(logits, state, &st)),
    ];
    if st.top_k > 0 && st.top_p < 1.0 {
        // top-p over the whole vocabulary, not just the top-k survivors.
        let by_p = with(logits, state, st, |s| s.top_k = 0);
        let by_k = with(logits, state, st, |s| s.top_p = 1.0);
        let w: Vec<f64> = (0..full.len()).map(|i| if by_p[i] > 0.0 && by_k[i] > 0.0 { full[i] } else { 0.0 }).collect();
        let z: f64 = w.iter().sum();
        let w: Vec<f64> = w.iter().map(|x| x / z).collect();
        if support(&w) != m {
            wrong.push(("top-p over every token, not the top-k survivors", w));
        }
    }
    wrong
}

#[test]
fn top_k_and_top_p_keep_their_set_and_renormalize() {
    top_k_and_top_p_keep_their_set_and_renormalize_on(&Sampler::new());
}

fn top_k_and_top_p_keep_their_set_and_renormalize_on(s: &Sampler) {
    let zero = [0u32; SMALL.len()];
    let t0 = Instant::now();
    let cases = [
        ("top-k 3, T = 0.7", Step { top_k: 3, temperature: 0.7, ..base() }),
        ("top-p 0.8, T = 1.5", Step { top_p: 0.8, temperature: 1.5, ..base() }),
        ("top-k 6, top-p 0.75", Step { top_k: 6, top_p: 0.75, ..base() }),
    ];
    for (i, (name, st)) in cases.into_iter().enumerate() {
        let st = Step { seed: 200 + i as u32, logprobs: 1, ..st };
        let counts = s.counts(&SMALL, &zero, st, DRAWS_TRUNCATED);
        let want = distribution(&SMALL, &zero, &st);
        eprintln!("{name}: keeps {} of {}", support(&want), SMALL.len());
        fit(name, &counts, &want, &truncation_controls(&SMALL, &zero, st, &want));
    }
    // Ties at the boundary are kept whole: top-k 2 over [3, 1, 1, 1, ...]
    // keeps four tokens; so does top-p 0.8, whose goal falls inside the tied group.
    let tied = [1.0f32, 3.0, 1.0, 0.0, 1.0, -1.0, 0.5];
    let zero = [0u32; 7];
    for (j, st) in [Step { top_k: 2, ..base() }, Step { top_p: 0.8, ..base() }].into_iter().enumerate() {
        let st = Step { seed: 250 + j as u32, logprobs: 1, ..st };
        let want = distribution(&tied, &zero, &st);
        assert_eq!(support(&want), 4, "the tied tokens and the best");
        let counts = s.counts(&tied, &zero, st, DRAWS_TRUNCATED / 2);
        let full = untruncated(&tied, &zero, st);
        let ties_cut = {
            // Keep only the first tied token (a sort-order cut).
            let mut w: Vec<f64> = want.clone();
            w[2] = 0.0;
            w[4] = 0.0;
            let z: f64 = w.iter().sum();
            w.iter().map(|x| x / z).collect::<Vec<_>>()
        };
        fit(&format!("ties, top-k {} top-p {}", st.top_k, st.top_p), &counts, &want,
            &[("no truncation", full), ("ties cut to one", ties_cut), ("argmax", argmax_dist(&tied, &zero, &st))]);
    }
    // top-k 1 is the argmax, whatever the noise; top-k >= V is off.
    let st = Step { top_k: 1, seed: 3, ..base() };
    let best = argmax(&SMALL);
    for d in s.batch(&SMALL, &[0; 10], &(0..200).map(|i| Step { sample_index: i, ..st }).collect::<Vec<_>>()) {
        assert_eq!(d.token, best, "top-k 1");
    }
    let off = Step { top_k: SMALL.len() as u32, seed: 4, ..base() };
    assert_eq!(distribution(&SMALL, &[0; 10], &off), distribution(&SMALL, &[0; 10], &base()));
    let counts = s.counts(&SMALL, &[0; 10], off, DRAWS_TRUNCATED);
    fit("top-k = V", &counts, &distribution(&SMALL, &[0; 10], &off), &[("T = 0.7", with(&SMALL, &[0; 10], off, |s| s.temperature = 0.7))]);
    eprintln!("top-k/top-p cases: {:.2} s", t0.elapsed().as_secs_f64());
    print_worst();
}

/// Prompt and generated tokens for the penalty cases over SMALL: bit 0 = in
/// context, >> 1 = times generated (a generated token is in context too).
fn penalty_state() -> [u32; 10] {
    let mut st = [0u32; 10];
    st[2] = (2 << 1) | 1; // logit 2.0, generated twice
    st[6] = 1; // 1.5, in the prompt only
    st[1] = 1; // -1.0, in the prompt only: the repetition penalty multiplies it
    st[9] = (1 << 1) | 1; // 1.2, generated once
    st[4] = (3 << 1) | 1; // 1.0, generated three times
    st
}

#[test]
fn penalties_shift_the_distribution_exactly() {
    penalties_shift_the_distribution_exactly_on(&Sampler::new());
}

fn penalties_shift_the_distribution_exactly_on(s: &Sampler) {
    let state = penalty_state();
    let t0 = Instant::now();
    let pen = Step { repetition_penalty: 2.0, frequency_penalty: 0.25, presence_penalty: 0.4, ..base() };
    // A repetition penalty that divides negative logits too (a common slip):
    // the same as the right one on logits whose negative in-context entries
    // were divided by penalty^2 first.
    let sign_blind = |st: Step| {
        let l: Vec<f32> = SMALL.iter().zip(&state).map(|(&x, &c)| if c & 1 != 0 && x < 0.0 { x / st.repetition_penalty.powi(2) } else { x }).collect();
        distribution(&l, &state, &st)
    };
    let cases = [("penalties, T = 0.7", Step { temperature: 0.7, ..pen }), ("penalties, top-p 0.7, T = 1.5", Step { temperature: 1.5, top_p: 0.7, ..pen })];
    for (i, (name, st)) in cases.into_iter().enumerate() {
        let st = Step { seed: 300 + i as u32, logprobs: 1, ..st };
        let counts = s.counts(&SMALL, &state, st, if st.top_p < 1.0 { DRAWS_TRUNCATED } else { DRAWS });
        let want = distribution(&SMALL, &state, &st);
        let mut wrong = vec![
            ("no penalties", with(&SMALL, &state, st, |s| {
                s.repetition_penalty = 1.0;
                s.frequency_penalty = 0.0;
                s.presence_penalty = 0.0;
            })),
            ("no repetition penalty", with(&SMALL, &state, st, |s| s.repetition_penalty = 1.0)),
            ("no frequency penalty", with(&SMALL, &state, st, |s| s.frequency_penalty = 0.0)),
            ("no presence penalty", with(&SMALL, &state, st, |s| s.presence_penalty = 0.0)),
        ];
        if st.top_p == 1.0 {
            // (The negative in-context token is cut by top-p in the other case.)
            wrong.push(("repetition penalty dividing negative logits", sign_blind(st)));
        }
        if st.top_p < 1.0 {
            // Truncated on the raw logits, sampled from the penalized ones.
            let raw = with(&SMALL, &state, st, |s| {
                s.repetition_penalty = 1.0;
                s.frequency_penalty = 0.0;
                s.presence_penalty = 0.0;
            });
            let full = untruncated(&SMALL, &state, st);
            assert_eq!(full.len(), raw.len());
            let w: Vec<f64> = full.iter().zip(&raw).map(|(&p, &r)| if r > 0.0 { p } else { 0.0 }).collect();
            let z: f64 = w.iter().sum();
            let pre = w.iter().map(|x| x / z).collect::<Vec<_>>();
            let kept = |p: &[f64]| p.iter().map(|&x| x > 0.0).collect::<Vec<_>>();
            assert_ne!(kept(&pre), kept(&want), "{name}: penalties change the kept set");
            wrong.push(("top-p before penalties", pre));
            wrong.extend(truncation_controls(&SMALL, &state, st, &want));
        }
        fit(name, &counts, &want, &wrong);
    }
    eprintln!("penalty cases: {:.2} s", t0.elapsed().as_secs_f64());
    print_worst();
}

/// Greedy decoding with penalties: each crafted so the penalized best token
/// lands just above or just below the runner-up (margins of 1e-4), so any
/// other arithmetic flips the answer; the sampled-from logits and the
/// reported log-probability are checked against the reference too.
#[test]
fn greedy_penalties_flip_at_their_exact_margins() {
    greedy_penalties_flip_at_their_exact_margins_on(&Sampler::new());
}

fn greedy_penalties_flip_at_their_exact_margins_on(s: &Sampler) {
    let greedy = Step { greedy: 1, logprobs: 5, temperature: 0.5, ..base() };
    let v = 300; // more tokens than the workgroup has invocations
    let mut rng = Rng(17);
    let filler: Vec<f32> = rng.vec(v).iter().map(|x| x - 3.0).collect();
    let pair = |a: f32, b: f32, low: f32| {
        let mut l: Vec<f32> = filler.iter().map(|x| x + low).collect();
        l[123] = a;
        l[257] = b;
        l
    };
    let ctx = |st: u32| {
        let mut s = vec![0u32; v];
        s[123] = st;
        s
    };
    /// (name, logits, state, step, the token greedy must pick)
    type Case = (&'static str, Vec<f32>, Vec<u32>, Step, usize);
    let cases: Vec<Case> = vec![
        ("no penalty", pair(2.0, 1.9, 0.0), ctx(1), greedy, 123),
        // Positive logit in context: divided. 2 / 1.9 = 1.05263...
        ("repetition 1.0526, positive", pair(2.0, 1.9, 0.0), ctx(1), Step { repetition_penalty: 1.0526, ..greedy }, 123),
        ("repetition 1.0527, positive", pair(2.0, 1.9, 0.0), ctx(1), Step { repetition_penalty: 1.0527, ..greedy }, 257),
        // Negative logit in context: multiplied. 1.05 / 1.0 = 1.05.
        ("repetition 1.0499, negative", pair(-1.0, -1.05, -2.0), ctx(1), Step { repetition_penalty: 1.0499, ..greedy }, 123),
        ("repetition 1.0501, negative", pair(-1.0, -1.05, -2.0), ctx(1), Step { repetition_penalty: 1.0501, ..greedy }, 257),
        // A token in the prompt only is not hit by frequency or presence.
        ("frequency and presence, prompt only", pair(1.0, 0.0, -2.0), ctx(1), Step { frequency_penalty: 5.0, presence_penalty: 5.0, ..greedy }, 123),
        // Generated 3 times: 1 - 3 f - p against 0.
        ("frequency 0.3333", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { frequency_penalty: 0.3333, ..greedy }, 123),
        ("frequency 0.3334", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { frequency_penalty: 0.3334, ..greedy }, 257),
        // Presence counts once, however many times the token came.
        ("presence 0.9999", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { presence_penalty: 0.9999, ..greedy }, 123),
        ("presence 1.0001", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { presence_penalty: 1.0001, ..greedy }, 257),
        ("frequency 0.2 + presence 0.3999", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { frequency_penalty: 0.2, presence_penalty: 0.3999, ..greedy }, 123),
        ("frequency 0.2 + presence 0.4001", pair(1.0, 0.0, -2.0), ctx((3 << 1) | 1), Step { frequency_penalty: 0.2, presence_penalty: 0.4001, ..greedy }, 257),
        // All three: 2 / 1.25 - 2 * 0.1 - 0.2 = 1.2 against 1.1999 and 1.2001.
        ("all three, above", pair(2.0, 1.1999, 0.0), ctx((2 << 1) | 1), Step { repetition_penalty: 1.25, frequency_penalty: 0.1, presence_penalty: 0.2, ..greedy }, 123),
        ("all three, below", pair(2.0, 1.2001, 0.0), ctx((2 << 1) | 1), Step { repetition_penalty: 1.25, frequency_penalty: 0.1, presence_penalty: 0.2, ..greedy }, 257),
    ];
    for (name, logits, state, st, winner) in &cases {
        assert_eq!(logits.len(), state.len());
        let want = processed(logits, state, st);
        assert_eq!(argmax(&want) as usize, *winner, "{name}: the reference's own argmax");
        for d in [s.once(logits, state, *st), s.batch(logits, state, &[*st]).remove(0)] {
            assert_eq!(d.token as usize, *winner, "{name}");
            check_bookkeeping(&d, state, &Expected::new(logits, state, st));
        }
    }
    print_worst();
}

#[test]
fn large_vocabulary_case_fits() {
    large_vocabulary_case_fits_on(&Sampler::new());
}

fn large_vocabulary_case_fits_on(s: &Sampler) {
    // 1001 tokens (four per invocation), penalties on some of the best ones,
    // T 0.7, top-k 12 then top-p 0.9.
    let v = 1001;
    let mut rng = Rng(5);
    let logits: Vec<f32> = rng.vec(v).iter().map(|x| x * 3.0).collect();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let mut state = vec![0u32; v];
    for (j, &i) in order.iter().take(30).enumerate() {
        state[i] = match j % 5 {
            0 => 1,
            1 => (1 << 1) | 1,
            2 => (4 << 1) | 1,
            _ => 0,
        };
    }
    let st = Step { temperature: 0.7, top_k: 12, top_p: 0.9, repetition_penalty: 1.1, frequency_penalty: 0.05, presence_penalty: 0.1, seed: 400, logprobs: 6, ..base() };
    let t0 = Instant::now();
    let n = 1000;
    let counts = s.counts(&logits, &state, st, n);
    let want = distribution(&logits, &state, &st);
    eprintln!("V = {v}: keeps {}", support(&want));
    let mut wrong = truncation_controls(&logits, &state, st, &want);
    wrong.push(("no penalties", with(&logits, &state, st, |s| {
        s.repetition_penalty = 1.0;
        s.frequency_penalty = 0.0;
        s.presence_penalty = 0.0;
    })));
    fit("V = 1001, penalties, T 0.7, top-k 12, top-p 0.9", &counts, &want, &wrong);
    eprintln!("large vocabulary: {:.2} s", t0.elapsed().as_secs_f64());
    print_worst();
}

#[test]
fn seeds_reproduce_and_differ() {
    seeds_reproduce_and_differ_on(&Sampler::new());
}

fn seeds_reproduce_and_differ_on(s: &Sampler) {
    let zero = [0u32; 10];
    let run = |seed: u32, n: u32| -> Vec<u32> {
        let steps: Vec<Step> = (0..n).map(|i| Step { seed, sample_index: i, ..base() }).collect();
        s.batch(&SMALL, &zero, &steps).iter().map(|d| d.token).collect()
    };
    let a = run(7, 1000);
    assert_eq!(a.len(), 1000);
    assert_eq!(a, run(7, 1000), "the same seed and indices draw the same tokens");
    // The engine's own path (one dispatch, one submit each) draws the same.
    for i in (0..1000).step_by(97) {
        assert_eq!(s.once(&SMALL, &zero, Step { seed: 7, sample_index: i, ..base() }).token, a[i as usize], "index {i}");
    }
    // Another seed: a different sequence, agreeing about as often as two
    // independent ones (sum of p^2 ~ 0.2 here).
    let p = distribution(&SMALL, &zero, &base());
    let collide: f64 = p.iter().map(|x| x * x).sum();
    for other in [8u32, 0x8000_0007, 7 ^ 1 << 16] {
        let b = run(other, 100);
        assert_eq!(b.len(), 100);
        assert_ne!(a[..100], b[..], "seed {other} draws what seed 7 drew");
        let same = a[..100].iter().zip(&b).filter(|(x, y)| x == y).count();
        eprintln!("seed 7 vs {other:#x}: {same} of 100 draws agree (independent: {:.0})", 100.0 * collide);
        assert!((same as f64) < 100.0 * collide + 25.0, "seed {other} agrees with seed 7 on {same} of 100 draws");
    }
    // Consecutive indices of one seed are not one repeated draw either.
    let distinct = a.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(distinct >= 8, "{distinct} distinct tokens in 1000 draws");
}

#[test]
fn masked_draws_follow_the_constrained_distribution() {
    masked_draws_follow_the_constrained_distribution_on(&Sampler::new());
}

/// The softmax of `logits / t` over the allowed tokens (the `top_k` best of
/// them when set): what a masked draw follows.
fn constrained(logits: &[f32], allow: &[bool], t: f32, top_k: usize) -> Vec<f64> {
    let l: Vec<f64> = logits.iter().map(|&x| (x / t) as f64).collect();
    let mut kept: Vec<usize> = (0..l.len()).filter(|&i| allow[i]).collect();
    kept.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    if top_k > 0 {
        kept.truncate(top_k);
    }
    let mx = l[kept[0]];
    let mut p = vec![0.0; l.len()];
    for &i in &kept {
        p[i] = (l[i] - mx).exp();
    }
    let z: f64 = p.iter().sum();
    p.iter().map(|x| x / z).collect()
}

/// Constrained decoding: with `masked`, draws come only from the tokens the
/// mask allows, as softmax over them (greedy: their argmax), whatever top-k
/// and top-p keep; the logits of the others are written back as f32::MIN and
/// log-probabilities are of the constrained distribution.
fn masked_draws_follow_the_constrained_distribution_on(s: &Sampler) {
    let v = 301;
    let mut rng = Rng(11);
    let logits: Vec<f32> = rng.vec(v).iter().map(|x| x * 2.0).collect();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    // Every third token, but not the two best of all.
    let mut allow: Vec<bool> = (0..v).map(|i| i % 3 == 0).collect();
    allow[order[0]] = false;
    allow[order[1]] = false;
    let pack = |allow: &[bool]| -> Vec<u32> {
        let mut w = vec![0u32; v.div_ceil(32)];
        for (i, _) in allow.iter().enumerate().filter(|(_, &a)| a) {
            w[i / 32] |= 1 << (i % 32);
        }
        w
    };
    let before = s.mask.replace(pack(&allow));
    let zero = vec![0u32; v];
    let masked = Step { masked: 1, ..base() };
    // Sampling at T 0.8, then with a top-k larger than the allowed set.
    for (top_k, name) in [(0u32, "masked, T 0.8"), (250, "masked, T 0.8, top-k 250 > allowed")] {
        let st = Step { temperature: 0.8, top_k, seed: 90 + top_k, ..masked };
        let draws = s.batch(&logits, &zero, &(0..3000).map(|i| Step { sample_index: i, ..st }).collect::<Vec<_>>());
        let mut counts = vec![0u64; v];
        for d in &draws {
            assert!(allow[d.token as usize], "{name}: drew masked token {}", d.token);
            counts[d.token as usize] += 1;
            for (i, &l) in d.logits.iter().enumerate() {
                if !allow[i] {
                    assert_eq!(l, f32::MIN, "{name}: token {i}'s logit is the lowest finite one");
                }
            }
        }
        let want = constrained(&logits, &allow, 0.8, 0);
        let unmasked = distribution(&logits, &zero, &Step { masked: 0, ..st });
        fit(name, &counts, &want, &[("the unmasked distribution", unmasked)]);
    }
    // Greedy: the best allowed token, with the constrained log-probabilities.
    let d = s.once(&logits, &zero, Step { greedy: 1, logprobs: 4, ..masked });
    let p = constrained(&logits, &allow, 1.0, 0);
    let mut best: Vec<usize> = (0..v).filter(|&i| allow[i]).collect();
    best.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    assert_eq!(d.token as usize, best[0], "greedy takes the best allowed token");
    let lp = |w: u32| f32::from_bits(w) as f64;
    assert!((lp(d.out[1]) - p[best[0]].ln()).abs() < LOGPROB_TOL, "log-probability {} want {}", lp(d.out[1]), p[best[0]].ln());
    for n in 0..3 {
        assert_eq!(d.out[2 + 2 * n] as usize, best[n], "alternative {n} is the next best allowed token");
        assert!((lp(d.out[3 + 2 * n]) - p[best[n]].ln()).abs() < LOGPROB_TOL, "alternative {n}'s log-probability");
    }
    // One allowed token, a poor one: drawn every time, even under top-p.
    let mut one = vec![false; v];
    one[order[v - 5]] = true;
    s.mask.replace(pack(&one));
    let st = Step { temperature: 1.0, top_p: 0.5, seed: 3, ..masked };
    for d in s.batch(&logits, &zero, &(0..50).map(|i| Step { sample_index: i, ..st }).collect::<Vec<_>>()) {
        assert_eq!(d.token as usize, order[v - 5], "the only allowed token");
    }
    s.mask.replace(before);
}

/// The checks above catch real kernel bugs: each mutant (a one-line change
/// of sample.wgsl, compiled by the test) must fail at least one of them, and
/// the unchanged source, compiled the same way, must pass them all. On
/// demand (about a minute on lavapipe): `cargo test --test suite sampler:: -- --ignored`.
#[test]
#[ignore]
fn mutants_of_the_kernel_are_caught() {
    let source = include_str!("../../../../shaders/sample.wgsl");
    let mutants: [(&str, &str, &str); 14] = [
        ("repetition penalty divides negative logits", "l = l * step.repetition_penalty;", "l = l / step.repetition_penalty;"),
        ("presence penalty per occurrence", "f32(count) * step.frequency_penalty + step.presence_penalty", "f32(count) * (step.frequency_penalty + step.presence_penalty)"),
        ("penalties on prompt tokens' counts too", "let count = st >> 1u;", "let count = (st >> 1u) + (st & 1u);"),
        ("temperature applied twice", "l = l / step.temperature;", "l = l / step.temperature / step.temperature;"),
        ("top-k keeps one fewer", "if (reduce_count(lid, c) >= step.top_k) {", "if (reduce_count(lid, c) > step.top_k) {"),
        ("top-p over every token", "if (key(l) >= thr) {\n                    z += exp(l - mx);", "if (true) {\n                    z += exp(l - mx);"),
        ("top-p drops the token that crosses top_p", "thr = lo;\n        }\n        // 3.", "thr = lo + 1u;\n        }\n        // 3."),
        ("draw ignores the truncation", "if (key(l) >= thr && allowed(i)) {\n                let u", "if (allowed(i)) {\n                let u"),
        ("mask ignored", "if (!allowed(i)) {\n            l = MASKED;", "if (false) {\n            l = MASKED;"),
        ("Gumbel noise halved", "let g = l - log(-log(u));", "let g = l - 0.5 * log(-log(u));"),
        ("uniforms in (0, 1/2)", "pcg(stream ^ pcg(i)) >> 8u", "pcg(stream ^ pcg(i)) >> 9u"),
        ("seed ignored", "pcg(pcg(step.seed) ^ step.sample_index)", "pcg(step.sample_index)"),
        ("sample index ignored", "pcg(pcg(step.seed) ^ step.sample_index)", "pcg(step.seed)"),
        ("log-probability without log-sum-exp", "OUT[1] = bitcast<u32>(LOGITS[token] - lse);", "OUT[1] = bitcast<u32>(LOGITS[token] - mx);"),
    ];
    type Suite = (&'static str, fn(&Sampler));
    let suites: [Suite; 7] = [
        ("greedy", greedy_penalties_flip_at_their_exact_margins_on),
        ("penalties", penalties_shift_the_distribution_exactly_on),
        ("temperature", temperature_scales_the_distribution_on),
        ("top-k/top-p", top_k_and_top_p_keep_their_set_and_renormalize_on),
        ("large vocabulary", large_vocabulary_case_fits_on),
        ("seeds", seeds_reproduce_and_differ_on),
        ("mask", masked_draws_follow_the_constrained_distribution_on),
    ];
    let run = |body: &str| -> Option<(&str, String)> {
        let s = Sampler { gpu: pollster::block_on(Gpu::new()).expect("adapter"), mutant: Some(body.to_string()), mask: Default::default() };
        for (name, suite) in suites {
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| suite(&s))) {
                let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|m| m.to_string())).unwrap_or_default();
                return Some((name, msg.lines().next().unwrap_or("").to_string()));
            }
        }
        None
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let unchanged = run(source);
    let mut escaped = Vec::new();
    for (name, from, to) in mutants {
        assert_eq!(source.matches(from).count(), 1, "mutant '{name}': its line is in sample.wgsl once");
        match run(&source.replacen(from, to, 1)) {
            Some((suite, msg)) => eprintln!("mutant '{name}': caught by {suite}: {msg}"),
            None => {
                eprintln!("mutant '{name}': NOT caught");
                escaped.push(name);
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(unchanged.is_none(), "the unchanged kernel fails: {unchanged:?}");
    assert!(escaped.is_empty(), "mutants no check catches: {escaped:?}");
}
