//! `tramontane bench --profile`: each kind of kernel of one pass timed alone.

#[cfg(not(target_arch = "wasm32"))]
use {
    super::{Output, PassRequest, Runtime},
    crate::error::{Error, Result},
    crate::gpu::kernels::Dispatch,
    crate::sample::SamplingParams,
};

/// Time spent in one kind of kernel during a profiled pass.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub dispatches: usize,
    pub seconds: f64,
}

/// A profiled pass: each kind of kernel timed alone, and the whole pass as
/// [`Runtime::pass`] runs it. What the whole pass takes beyond the kernels'
/// sum is the pass's fixed cost (recording, submitting, waiting for the
/// readback) and what the kernels lose to each other (weights no longer in
/// the caches).
#[derive(Debug, Clone)]
pub struct Profile {
    pub kernels: Vec<KernelTime>,
    /// One pass with its sampling and 4-byte readback, best of 3.
    pub pass_seconds: f64,
}

#[cfg(not(target_arch = "wasm32"))]
const REPEATS: usize = 4;
#[cfg(not(target_arch = "wasm32"))]
const TRIES: usize = 3;

#[cfg(not(target_arch = "wasm32"))]
impl Runtime {
    /// Time each kind of kernel in one sampling pass over `n_tokens` (decode
    /// when 1) at position `start`, by submitting every dispatch on its own
    /// (repeated, see REPEATS) and waiting for it, then the whole pass. No
    /// overlap between kernels, but on CPU drivers it shows where the time
    /// goes. Native only; leaves the runtime's activations, KV cache and
    /// sampler state with meaningless values.
    pub async fn profile(&mut self, n_tokens: usize, start: usize) -> Result<Profile> {
        let t = n_tokens.clamp(1, self.opts.chunk) as u32;
        let n_splits = self.begin(t, start, &SamplingParams::greedy(), 0, 0, false)?;
        let g = self.gpu.clone();
        g.queue.write_buffer(&self.bufs.ids, 0, bytemuck::cast_slice(&vec![0u32; t as usize]));
        let _ = g.device.poll(wgpu::PollType::wait_indefinitely());
        let mut times: Vec<KernelTime> = Vec::new();
        let mut plan: Vec<(&'static str, &Dispatch, [u32; 3])> = Vec::new();
        self.plan.steps(&self.cfg, t, n_splits, Output::Sample, &mut |label, d, groups| plan.push((label, d, groups)));
        plan.push(("sample", &self.plan.sample, [1, 1, 1]));
        for (label, d, groups) in plan {
            // The dispatch REPEATS times in one pass, so the submit and the
            // wait are spread over the repeats (a pass pays them once), and
            // the best of TRIES such submits, so a busy moment on the host
            // does not land on one kernel. Repeats change the values (the
            // residual adds accumulate), never the work.
            let mut dt = f64::INFINITY;
            for _ in 0..TRIES {
                let t0 = web_time::Instant::now();
                let mut enc = g.device.create_command_encoder(&Default::default());
                d.copy_inputs(&mut enc, t);
                {
                    let mut p = enc.begin_compute_pass(&Default::default());
                    for _ in 0..REPEATS {
                        d.record(&mut p, groups);
                    }
                }
                g.queue.submit([enc.finish()]);
                g.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("profiling: {e}")))?;
                dt = dt.min(t0.elapsed().as_secs_f64() / REPEATS as f64);
            }
            match times.iter_mut().find(|k| k.kernel == label) {
                Some(k) => {
                    k.dispatches += 1;
                    k.seconds += dt;
                }
                None => times.push(KernelTime { kernel: label, dispatches: 1, seconds: dt }),
            }
        }
        g.check()?;
        let ids = vec![0u32; t as usize];
        let greedy = SamplingParams::greedy();
        let mut pass_seconds = f64::INFINITY;
        for _ in 0..TRIES {
            let t0 = web_time::Instant::now();
            self.pass(PassRequest::new(&ids, start, Output::Sample, &greedy)).await?;
            pass_seconds = pass_seconds.min(t0.elapsed().as_secs_f64());
        }
        Ok(Profile { kernels: times, pass_seconds })
    }
}
