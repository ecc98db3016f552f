//! `tramontane bench`: load once, then time prefill and decode over repetitions.

use clap::Args;
use serde_json::json;
use web_time::Instant;

use tramontane::forward::Profile;
use tramontane::gpu::{DeviceProfile, Shapes, Store};
use tramontane::{ChatRequest, Constraint, GenerateRequest, Model, SamplingParams};

use crate::{load, ModelArgs};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    #[arg(long)]
    json: bool,
    /// Also time each kind of kernel in one decode step (at the end of the
    /// prompt) and one prefill pass, every dispatch submitted on its own.
    #[arg(long)]
    profile: bool,
    /// Also decode under this JSON Schema (a file), alternating with
    /// unconstrained runs of the same prompt: reports both speeds, the mask's
    /// CPU time per token and the schema's compile time.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<String>,
    /// Also time an image through a vision model's encoder and projector
    /// (preprocessing, then encoding until the GPU is done): FILE, or without
    /// a value a generated 1024x768 picture.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    image: Option<String>,
}

/// A 1024x768 picture of gradients and noise (the benchmark's default image).
fn synthetic_picture() -> tramontane::vision::Picture {
    let (w, h) = (1024u32, 768u32);
    let mut x = 0x2545f491u32;
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for i in 0..w {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x % 32) as u32;
            pixels.extend([((i * 255 / w) + noise).min(255) as u8, ((y * 255 / h) + noise).min(255) as u8, (((i + y) * 127 / (w + h)) + noise) as u8]);
        }
    }
    tramontane::vision::Picture { width: w, height: h, channels: 3, pixels }
}

/// An image through the image side, `repetitions` times: the median timing.
async fn image_timing(model: &mut Model, file: &str, repetitions: usize) -> tramontane::Result<serde_json::Value> {
    let pic = if file.is_empty() {
        synthetic_picture()
    } else {
        let bytes = std::fs::read(file).map_err(|e| tramontane::Error::Io { file: file.into(), msg: e.to_string() })?;
        tramontane::vision::decode::decode(&bytes, tramontane::vision::MAX_PIXELS, file)?
    };
    // Warm-up: drivers compile some pipelines at their first dispatch.
    let first = model.time_image(&pic).await?;
    let (mut pre, mut enc) = (Vec::new(), Vec::new());
    for _ in 0..repetitions.max(1) {
        let t = model.time_image(&pic).await?;
        pre.push(t.preprocess_s);
        enc.push(t.encode_s);
    }
    let (e0, e1, e2) = stats(enc);
    let (_, p1, _) = stats(pre);
    let v = model.info.vision;
    Ok(json!({
        "image": if file.is_empty() { "generated 1024x768" } else { file },
        "width": first.width,
        "height": first.height,
        "resized": [first.resized.0, first.resized.1],
        "patches": first.patches,
        "image_tokens": first.tokens,
        "preprocess_seconds": p1,
        "encode_seconds": e1,
        "encode_seconds_min_max": [e0, e2],
        "first_encode_seconds": first.encode_s,
        "patches_per_s": first.patches as f64 / e1.max(1e-12),
        "image_tokens_per_s": first.tokens as f64 / e1.max(1e-12),
        "encoder_weight_bytes": v.map(|v| v.weight_bytes),
        "encoder_buffer_bytes": v.map(|v| v.buffer_bytes),
    }))
}

/// Decode with and without a constraint, alternating, on a chat prompt
/// asking for the JSON (so the constrained answer is a real one).
async fn constrained(model: &mut Model, c: &Constraint, gen_tokens: usize, repetitions: usize) -> tramontane::Result<serde_json::Value> {
    let t0 = Instant::now();
    let first = model.compile_constraint(c)?;
    let setup_and_compile = t0.elapsed().as_secs_f64();
    let again = model.compile_constraint(c)?;
    let ask = "Invent a realistic example record and write it as JSON: fill every field with plausible values.";
    let ids = match model.chat_ids(&ChatRequest::from_messages(&[tramontane::ChatMessage::new("user", ask)])) {
        Ok(ids) => ids,
        Err(_) => model.text_prompt(ask)?,
    };
    let free = GenerateRequest { sampling: SamplingParams::greedy(), max_tokens: gen_tokens.max(2), ignore_eos: true, ..Default::default() };
    let under = GenerateRequest { constraint: Some(c.clone()), ignore_eos: false, ..free.clone() };
    let (mut fd, mut cd, mut masks, mut tokens) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions.max(1) {
        model.reset();
        fd.push(model.generate(&ids, &free, &mut |_, _, _| true).await?.decode_tokens_per_s());
        model.reset();
        let g = model.generate(&ids, &under, &mut |_, _, _| true).await?;
        cd.push(g.decode_tokens_per_s());
        tokens.push(g.generated.len() as f64);
        masks.push(g.constraint.as_ref().map(|s| s.mask_ms_per_token()).unwrap_or(0.0));
    }
    let (f0, f1, f2) = stats(fd);
    let (c0, c1, c2) = stats(cd);
    let (_, m1, _) = stats(masks);
    let (_, n1, _) = stats(tokens);
    Ok(json!({
        "decode_tokens_per_s": c1,
        "decode_tokens_per_s_min_max": [c0, c2],
        "unconstrained_decode_tokens_per_s": f1,
        "unconstrained_decode_tokens_per_s_min_max": [f0, f2],
        "ratio": c1 / f1.max(1e-9),
        "mask_ms_per_token": m1,
        "generated_tokens": n1,
        "compile_seconds": first.compile_seconds,
        "first_compile_with_setup_seconds": setup_and_compile,
        "cached_compile": again.cached,
        "vocab": model.config().vocab,
    }))
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (v[0], med, v[n - 1])
}

pub async fn bench(a: BenchArgs) -> tramontane::Result<()> {
    let t0 = Instant::now();
    let (gpu, mut model) = load(&a.model, a.json).await?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let vocab = model.config().vocab as u32;
    // A fixed pseudo-random prompt: benchmarks compare like with like.
    let mut x = 0x9e3779b9u32;
    let prompt: Vec<u32> = (0..a.prompt_tokens.max(1))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % vocab
        })
        .collect();
    let req = GenerateRequest {
        sampling: SamplingParams::greedy(),
        max_tokens: a.gen_tokens.max(1),
        ignore_eos: true,
        ..Default::default()
    };
    // The first request after the load, as an app's first message meets it
    // (pipelines some drivers compile at first dispatch, first-use costs):
    // the cold time to first token. It is also the warm-up of the runs below.
    model.reset();
    let first = model.generate(&prompt, &GenerateRequest { max_tokens: 2, ..req.clone() }, &mut |_, _, _| true).await?;
    let ttft_cold = first.prefill_seconds;
    let (mut pre, mut dec, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.repetitions.max(1) {
        model.reset();
        let g = model.generate(&prompt, &req, &mut |_, _, _| true).await?;
        pre.push(g.prefill_tokens_per_s());
        dec.push(g.decode_tokens_per_s());
        ttft.push(g.prefill_seconds);
    }
    let schema = match &a.json_schema {
        None => None,
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| tramontane::Error::Io { file: f.clone(), msg: e.to_string() })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| tramontane::Error::InvalidRequest(format!("{f}: not valid JSON: {e}")))?;
            Some(constrained(&mut model, &Constraint::JsonSchema(v), a.gen_tokens, a.repetitions).await?)
        }
    };
    let image = match &a.image {
        None => None,
        Some(f) => Some(image_timing(&mut model, f, a.repetitions).await?),
    };
    let profile = if a.profile {
        // Decode after the prompt's prefill, so attention sees that many keys.
        let decode = model.runtime.profile(1, prompt.len()).await?;
        let prefill = model.runtime.profile(prompt.len(), 0).await?;
        Some((decode, prefill))
    } else {
        None
    };
    let (p0, p1, p2) = stats(pre);
    let (d0, d1, d2) = stats(dec);
    let (t0_, t1, t2) = stats(ttft);
    let info = &model.info;
    let ad = &gpu.adapter;
    let dp = info.device_profile;
    let lanes = dp.lanes;
    let kernels = if dp.shapes == Shapes::Cpu { "cpu" } else { "gpu" };
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.model.model,
                "prompt_tokens": prompt.len(),
                "gen_tokens": a.gen_tokens,
                "repetitions": a.repetitions,
                "prefill_tokens_per_s": p1,
                "prefill_tokens_per_s_min_max": [p0, p2],
                "decode_tokens_per_s": d1,
                "decode_tokens_per_s_min_max": [d0, d2],
                "time_to_first_token_s": t1,
                "time_to_first_token_s_min_max": [t0_, t2],
                "time_to_first_token_cold_s": ttft_cold,
                "load_to_first_token_s": load_seconds + ttft_cold,
                "load_seconds": load_seconds,
                "weight_bytes": info.weight_bytes,
                "gpu_bytes": info.gpu_bytes,
                "gpu_memory": {
                    "weights": info.gpu_memory.weights,
                    "kv_cache": info.gpu_memory.kv_cache,
                    "activations": info.gpu_memory.activations,
                    "scratch": info.gpu_memory.scratch,
                },
                "peak_host_bytes": peak_host_bytes(),
                "adapter": { "name": ad.name, "backend": ad.backend, "driver": ad.driver, "shader_f16": ad.shader_f16, "subgroup_lanes": lanes,
                    "kernels": kernels, "weights_in_textures": dp.weights == Store::Texture },
                "device_profile": dp,
                "self_test": info.self_test,
                "load_phases": info.load_phases,
                "profile": profile.as_ref().map(|(d, p)| json!({"decode_step": kernel_json(d), "prefill_pass": kernel_json(p)})),
                "json_schema": schema,
                "image": image,
            })
        );
    } else {
        println!("model        {} ({}, {})", a.model.model, info.arch, info.dtype);
        let sub = if lanes > 1 { format!("subgroup sums over {lanes}") } else { "no subgroups".into() };
        println!("adapter      {} ({}; {}; shader-f16 {}; {sub}; {}-shaped kernels)", ad.name, ad.backend, ad.driver, if ad.shader_f16 { "yes" } else { "no" }, kernels.to_uppercase());
        println!("kernels      {}", profile_line(&dp));
        let st = &info.self_test;
        println!(
            "self-test    {} kernels in {:.1} ms (creating the model's pipelines {:.1} ms, checking {:.1} ms){}",
            st.kernels,
            st.millis,
            st.pipeline_millis,
            st.millis - st.pipeline_millis,
            st.fallbacks.iter().map(|f| format!("; {f}")).collect::<String>()
        );
        println!("load         {:.2} s, weights {:.1} MB, GPU memory {:.1} MB", load_seconds, info.weight_bytes as f64 / 1e6, info.gpu_bytes as f64 / 1e6);
        let ph = &info.load_phases;
        println!(
            "load phases  prepare {:.2} s (self-test {:.2} s), reading weights {:.2} s, placing them {:.2} s, pipelines {:.2} s",
            ph.prepare_s, ph.self_test_s, ph.read_s, ph.upload_s, ph.pipelines_s
        );
        let m = &info.gpu_memory;
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "GPU memory   weights {:.1} MB, KV cache {:.1} MB, activations {:.1} MB, scratch {:.1} MB; peak host memory {}",
            mb(m.weights),
            mb(m.kv_cache),
            mb(m.activations),
            mb(m.scratch),
            peak_host_bytes().map(|b| format!("{:.1} MB", mb(b))).unwrap_or_else(|| "unknown".into())
        );
        println!("prefill      {:>8.1} tok/s  (min {:.1}, max {:.1}; {} tokens)", p1, p0, p2, prompt.len());
        println!("decode       {:>8.1} tok/s  (min {:.1}, max {:.1}; {} tokens)", d1, d0, d2, a.gen_tokens);
        println!("first token  {:>8.3} s      (min {:.3}, max {:.3}; cold, the first request after the load: {:.3} s, {:.2} s from the load's start)", t1, t0_, t2, ttft_cold, load_seconds + ttft_cold);
        if let Some(s) = &schema {
            let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
            println!(
                "json schema  decode {:.1} tok/s vs {:.1} unconstrained ({:.2}x; median of {} alternating runs, {:.0} tokens each)",
                f("decode_tokens_per_s"),
                f("unconstrained_decode_tokens_per_s"),
                f("ratio"),
                a.repetitions.max(1),
                f("generated_tokens")
            );
            println!(
                "             mask {:.3} ms/token (vocabulary {}); compile {:.2} ms ({:.1} ms with the vocabulary's trie, first use); cached: {}",
                f("mask_ms_per_token"),
                s["vocab"],
                f("compile_seconds") * 1e3,
                f("first_compile_with_setup_seconds") * 1e3,
                s["cached_compile"]
            );
        }
        if let Some(im) = &image {
            let f = |k: &str| im[k].as_f64().unwrap_or(0.0);
            println!(
                "image        {}x{} -> {}x{}: {} patches, {} image tokens; preprocess {:.1} ms, encode {:.1} ms ({:.0} patches/s, {:.0} image tokens/s; first {:.1} ms)",
                im["width"], im["height"], im["resized"][0], im["resized"][1], im["patches"], im["image_tokens"],
                f("preprocess_seconds") * 1e3, f("encode_seconds") * 1e3, f("patches_per_s"), f("image_tokens_per_s"), f("first_encode_seconds") * 1e3
            );
            println!(
                "             encoder weights {:.1} MB, encoder buffers and image features {:.1} MB",
                f("encoder_weight_bytes") / 1e6,
                f("encoder_buffer_bytes") / 1e6
            );
        }
        if let Some((d, p)) = &profile {
            print_profile(&format!("decode step at position {}", prompt.len()), d);
            print_profile(&format!("prefill pass of {} tokens", prompt.len().min(model.runtime.opts.chunk)), p);
        }
    }
    Ok(())
}

/// The most resident memory this process has held (Linux `VmHWM`), which for
/// a bench is the peak of the load: weights stream through host memory.
fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn kernel_json(p: &Profile) -> serde_json::Value {
    let k = &p.kernels;
    json!({
        "dispatches": k.iter().map(|x| x.dispatches).sum::<usize>(),
        "kernels": k.iter().map(|x| json!({"kernel": x.kernel, "dispatches": x.dispatches, "seconds": x.seconds})).collect::<Vec<_>>(),
        "pass_seconds": p.pass_seconds,
    })
}

fn print_profile(title: &str, p: &Profile) {
    let k = &p.kernels;
    let total: f64 = k.iter().map(|x| x.seconds).sum();
    let n: usize = k.iter().map(|x| x.dispatches).sum();
    println!("\nprofile: {title}: {n} dispatches, {:.1} ms (each kind timed alone, best of 3 submits of 4 repeats)", total * 1e3);
    println!("  the whole pass, as generation runs it: {:.1} ms (best of 3)", p.pass_seconds * 1e3);
    let mut k = k.to_vec();
    k.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    for x in k {
        println!("  {:<26} {:>5} dispatches {:>9.2} ms {:>5.1}%", x.kernel, x.dispatches, x.seconds * 1e3, 100.0 * x.seconds / total.max(1e-12));
    }
}

/// The device profile in one line: each part of the pass and its shape.
fn profile_line(p: &DeviceProfile) -> String {
    let name = |v: serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let j = json!(p);
    let field = |k: &str| name(j.get(k).cloned().unwrap_or_default());
    format!(
        "matvec {}, prefill {}, attention {}, norm in matvec {}, rope in matvec {}, weights in {}, prefill inputs in {}, lanes {}, MoE tile {}",
        field("decode_matvec"),
        field("prefill_matmul"),
        field("attention"),
        p.norm_in_matvec,
        p.rope_in_matvec,
        field("weights"),
        field("prefill_inputs"),
        p.lanes,
        p.moe_tile
    )
}
