//! A pass: write the `Step` uniform (and the prompt ids), record the planned
//! dispatches into one command buffer, read back the sampled token.

use super::{Runtime, MAX_TOP_LOGPROBS};
use crate::error::{Error, Result};
use crate::gpu::Step;
use crate::parse::ModelConfig;
use crate::sample::SamplingParams;

/// Keys per attention split in decode, and at most this many splits.
const SPLIT_MIN: u32 = 256;
pub const MAX_SPLITS: u32 = 16;

/// What a pass produces after the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Nothing (a prefill chunk that is not the last).
    None,
    /// Logits of the last row, then a sampled token.
    Sample,
    /// Logits of every row (tests, scoring).
    AllLogits,
}

/// What a sampling pass produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-probability of `token` and the top alternatives, when asked for.
    pub logprob: Option<(f32, Vec<(u32, f32)>)>,
}

/// One pass: [`PassRequest::new`] with the fields that differ set after it.
#[derive(Debug, Clone)]
pub struct PassRequest<'a> {
    /// The tokens to run (at most `chunk`); empty: the one token the sampler
    /// wrote last, already on the GPU.
    pub ids: &'a [u32],
    /// Absolute position of the first token.
    pub start: usize,
    pub output: Output,
    pub sampling: &'a SamplingParams,
    /// Which generated token this is (the sampler's RNG counter).
    pub sample_index: u32,
    /// Copy the last row's logits for [`Runtime::captured_logits`].
    pub capture_logits: bool,
    /// 0 = none, else 1 + how many top alternatives to report.
    pub logprobs: u32,
    /// Rows of the pass that take image features instead of their tokens'
    /// embeddings: runs of (first row of the runtime's image features, first
    /// row of the pass, rows).
    pub image_rows: &'a [(u32, u32, u32)],
}

impl<'a> PassRequest<'a> {
    pub fn new(ids: &'a [u32], start: usize, output: Output, sampling: &'a SamplingParams) -> Self {
        PassRequest { ids, start, output, sampling, sample_index: 0, capture_logits: false, logprobs: 0, image_rows: &[] }
    }

    /// Rows of the pass.
    pub fn n_tokens(&self) -> usize {
        self.ids.len().max(1)
    }
}

/// Attention splits `(n_splits, split_len)` of a pass of `t` rows whose last
/// row is at position `last_pos`. Decode splits the keys of the most-seeing layer (a
/// sliding layer's extra splits are empty: the combine step weighs them 0);
/// prefill has one split per row.
fn attention_splits(cfg: &ModelConfig, t: u32, last_pos: usize) -> (u32, u32) {
    if t != 1 {
        return (1, 1 << 30);
    }
    let positions = last_pos as u32 + 1;
    let keys = if cfg.layer_windows.iter().all(Option::is_some) {
        positions.min(cfg.sliding_window.unwrap_or(usize::MAX) as u32)
    } else {
        positions
    };
    let len = SPLIT_MIN.max(keys.div_ceil(MAX_SPLITS));
    (keys.div_ceil(len), len)
}

impl Runtime {
    /// Check that `t` rows from `start` fit the context and write the `Step`
    /// uniform (with the attention splits and their length); returns the
    /// number of splits.
    pub(super) fn begin(&self, t: u32, start: usize, sampling: &SamplingParams, sample_index: u32, logprobs: u32, masked: bool) -> Result<u32> {
        let end = start + t as usize;
        if end > self.opts.context {
            return Err(Error::ContextOverflow { tokens: end, context: self.opts.context });
        }
        let (n_splits, split_len) = attention_splits(&self.cfg, t, end - 1);
        let s = sampling;
        let u = Step {
            n_tokens: t,
            start_pos: start as u32,
            n_splits,
            split_len,
            temperature: s.temperature.max(1e-6),
            top_k: s.top_k,
            top_p: if s.top_p > 0.0 && s.top_p < 1.0 { s.top_p } else { 1.0 },
            repetition_penalty: if s.repetition_penalty > 0.0 { s.repetition_penalty } else { 1.0 },
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
            seed: (s.seed ^ (s.seed >> 32)) as u32,
            sample_index,
            greedy: s.is_greedy() as u32,
            logprobs,
            masked: masked as u32,
            _pad: 0,
        };
        self.gpu.queue.write_buffer(&self.bufs.step, 0, bytemuck::bytes_of(&u));
        Ok(n_splits)
    }

    /// Run one pass. Returns the sampled token for [`Output::Sample`].
    pub async fn pass(&mut self, req: PassRequest<'_>) -> Result<Option<Sampled>> {
        self.run(req, None).await
    }

    /// A sampling pass that draws only tokens `mask` allows. `mask` fills the
    /// mask's words (bit `i % 32` of word `i / 32`: token `i`) on the CPU
    /// while the GPU runs the layers: the layers go in one command buffer,
    /// submitted first, and the sampler in a second one after the mask is
    /// written. An error from `mask` is returned as it is.
    pub async fn pass_masked(&mut self, req: PassRequest<'_>, mask: &mut dyn FnMut(&mut Vec<u32>) -> Result<()>) -> Result<Option<Sampled>> {
        if req.output != Output::Sample {
            return Err(Error::Internal("a masked pass must sample".into()));
        }
        self.run(req, Some(mask)).await
    }

    async fn run(&mut self, req: PassRequest<'_>, mask: Option<&mut dyn FnMut(&mut Vec<u32>) -> Result<()>>) -> Result<Option<Sampled>> {
        let logprobs = req.logprobs.min(MAX_TOP_LOGPROBS + 1);
        let n_tokens = req.n_tokens();
        if n_tokens > self.opts.chunk {
            return Err(Error::InvalidRequest(format!("pass of {n_tokens} tokens (chunk {})", self.opts.chunk)));
        }
        let t = n_tokens as u32;
        let n_splits = self.begin(t, req.start, req.sampling, req.sample_index, logprobs, mask.is_some())?;
        if let Some(&bad) = req.ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            return Err(Error::InvalidRequest(format!("token id {bad} is outside the vocabulary of {}", self.cfg.vocab)));
        }
        let g = self.gpu.clone();
        if !req.ids.is_empty() {
            g.queue.write_buffer(&self.bufs.ids, 0, bytemuck::cast_slice(req.ids));
        }
        let output = req.output;
        if output == Output::AllLogits {
            self.plan.ensure_all_logits(&g, &self.opts.profile, &self.cfg, self.opts.chunk, &self.weights, &self.bufs);
        }
        let b = &self.bufs;
        let image_copies = match (&self.vision, req.image_rows) {
            (_, []) => None,
            (Some((_, features)), runs) => {
                let row = self.cfg.hidden as u64 * 4;
                if let Some(bad) = runs.iter().find(|r| (r.1 + r.2) as usize > n_tokens || (r.0 + r.2) as u64 * row > features.size()) {
                    return Err(Error::Internal(format!("image rows {bad:?} outside the pass or the features")));
                }
                Some((features, runs, row))
            }
            (None, _) => return Err(Error::InvalidRequest("this model takes no images".into())),
        };
        let mut enc = g.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        {
            // One compute pass, cut where a dispatch's inputs are first
            // copied into a texture (lavapipe's prefill: Dispatch::copy_inputs)
            // and after the embedding, where image rows replace the image
            // tokens' embeddings.
            let desc = wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None };
            let mut pass: Option<wgpu::ComputePass<'static>> = None;
            let mut images = image_copies;
            self.plan.steps(&self.cfg, t, n_splits, output, &mut |label, d, groups| {
                if label != "embed" {
                    if let Some((features, runs, row)) = images.take() {
                        pass = None;
                        for &(src, dst, n) in runs {
                            enc.copy_buffer_to_buffer(features, src as u64 * row, &b.x, dst as u64 * row, n as u64 * row);
                        }
                    }
                }
                if d.inputs.is_some() {
                    pass = None;
                    d.copy_inputs(&mut enc, t);
                }
                d.record(pass.get_or_insert_with(|| enc.begin_compute_pass(&desc).forget_lifetime()), groups);
            });
        }
        if let Some(mask) = mask {
            // The layers run while the CPU computes the mask.
            g.queue.submit([enc.finish()]);
            let words = &mut self.mask_words;
            mask(words)?;
            let n = self.cfg.vocab.div_ceil(32);
            if words.len() != n {
                return Err(Error::Internal(format!("a mask of {} words for {n}", words.len())));
            }
            g.queue.write_buffer(&b.mask, 0, bytemuck::cast_slice(words));
            enc = g.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sample") });
        }
        if output == Output::Sample {
            if req.capture_logits {
                enc.copy_buffer_to_buffer(&b.logits, 0, &b.logits_rb, 0, self.cfg.vocab as u64 * 4);
            }
            {
                let mut p = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sample"), timestamp_writes: None });
                self.plan.sample.record(&mut p, [1, 1, 1]);
            }
            enc.copy_buffer_to_buffer(&b.out, 0, &b.out_rb, 0, out_bytes(logprobs));
        }
        g.queue.submit([enc.finish()]);
        if output != Output::Sample {
            #[cfg(not(target_arch = "wasm32"))]
            let _ = g.device.poll(wgpu::PollType::Poll);
            g.check()?;
            return Ok(None);
        }
        let bytes = g.read_mapped(&b.out_rb, out_bytes(logprobs)).await?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let token = words[0];
        if token as usize >= self.cfg.vocab {
            return Err(Error::Internal(format!("sampler returned token {token} outside the vocabulary")));
        }
        let logprob = (logprobs > 0).then(|| {
            let top = (0..logprobs as usize - 1)
                .map(|n| (words[2 + 2 * n], f32::from_bits(words[3 + 2 * n])))
                .filter(|(id, _)| (*id as usize) < self.cfg.vocab)
                .collect();
            (f32::from_bits(words[1]), top)
        });
        Ok(Some(Sampled { token, logprob }))
    }
}

/// Bytes of the sampler's output read back: the token and its logprob, then
/// (id, logprob) pairs of the top alternatives.
fn out_bytes(logprobs: u32) -> u64 {
    if logprobs == 0 {
        8
    } else {
        (2 + 2 * (logprobs as u64 - 1)) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(windows: Vec<Option<usize>>) -> ModelConfig {
        let json = br#"{"model_type":"mistral","hidden_size":8,"intermediate_size":16,"num_hidden_layers":2,
            "num_attention_heads":2,"vocab_size":32,"max_position_embeddings":8192}"#;
        let mut c = ModelConfig::from_json(json, "config.json").expect("config");
        c.sliding_window = windows.iter().flatten().copied().max();
        c.layer_windows = windows;
        c
    }

    #[test]
    fn prefill_has_one_split() {
        assert_eq!(attention_splits(&cfg(vec![None, None]), 7, 100), (1, 1 << 30));
    }

    #[test]
    fn decode_splits_cover_the_keys() {
        let full = cfg(vec![None, None]);
        assert_eq!(attention_splits(&full, 1, 0), (1, SPLIT_MIN));
        assert_eq!(attention_splits(&full, 1, 256), (2, SPLIT_MIN));
        // 8000 keys: at most MAX_SPLITS splits of ceil(8000 / 16) keys.
        assert_eq!(attention_splits(&full, 1, 7999), (16, 500));
    }

    #[test]
    fn all_sliding_layers_split_only_the_window() {
        assert_eq!(attention_splits(&cfg(vec![Some(512), Some(512)]), 1, 7999), (2, SPLIT_MIN));
        // One full-attention layer sees everything.
        assert_eq!(attention_splits(&cfg(vec![Some(512), None]), 1, 7999), (16, 500));
    }
}
