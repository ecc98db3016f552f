//! `tramontane bench --profile`: each kind of kernel of one pass timed alone.

#[cfg(not(target_arch = "wasm32"))]
use {
    super::{Output, Runtime},
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

#[cfg(not(target_arch = "wasm32"))]
impl Runtime {
    /// Time each kind of kernel in one pass over `n_tokens` (decode when 1)
    /// at position `start`, by submitting every dispatch on its own and
    /// waiting for it. Slower than a real pass (no overlap, a submit per
    /// dispatch), but on CPU drivers it shows where the time goes. Native only.
    pub fn profile(&mut self, n_tokens: usize, start: usize) -> Result<Vec<KernelTime>> {
        let t = n_tokens.clamp(1, self.opts.chunk) as u32;
        let n_splits = self.begin(t, start, &SamplingParams::greedy(), 0, 0)?;
        let g = self.gpu.clone();
        g.queue.write_buffer(&self.bufs.ids, 0, bytemuck::cast_slice(&vec![0u32; t as usize]));
        let _ = g.device.poll(wgpu::PollType::wait_indefinitely());
        let mut times: Vec<KernelTime> = Vec::new();
        let mut plan: Vec<(&'static str, &Dispatch, [u32; 3])> = Vec::new();
        self.plan.steps(&self.cfg, t, n_splits, Output::Sample, &mut |label, d, groups| plan.push((label, d, groups)));
        for (label, d, groups) in plan {
            let t0 = web_time::Instant::now();
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut p = enc.begin_compute_pass(&Default::default());
                d.record(&mut p, groups);
            }
            g.queue.submit([enc.finish()]);
            g.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("profiling: {e}")))?;
            let dt = t0.elapsed().as_secs_f64();
            match times.iter_mut().find(|k| k.kernel == label) {
                Some(k) => {
                    k.dispatches += 1;
                    k.seconds += dt;
                }
                None => times.push(KernelTime { kernel: label, dispatches: 1, seconds: dt }),
            }
        }
        g.check()?;
        Ok(times)
    }
}
