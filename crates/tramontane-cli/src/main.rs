//! `tramontane`: the native command line. `run` generates text from a model
//! folder; `bench` measures prefill and decode speed; `serve` answers OpenAI's
//! HTTP API. The flags and the `--json`
//! output are a contract the project's scripts and checks rely on.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tramontane::{ChatMessage, ChatRequest, GenerateRequest, Gpu, KvCache, LoadOptions, Model, SamplingParams};

mod bench;
mod constraint;
mod http;
mod progress;
mod serve;
mod text;

#[derive(Parser)]
#[command(name = "tramontane", version, about = "Mistral-family language models on WebGPU (native)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt.
    Run(RunArgs),
    /// Chat in the terminal (multi-turn; each turn prefills only its new tokens).
    Chat(ChatArgs),
    /// Measure prefill and decode speed.
    Bench(bench::BenchArgs),
    /// Token ids of a text (reads only the tokenizer: no weights, no GPU).
    Tokenize(text::TokenizeArgs),
    /// Render a conversation with the chat template and tokenize it (no
    /// weights, no GPU).
    Prompt(text::PromptArgs),
    /// Serve the model over OpenAI's HTTP API (chat/completions, completions,
    /// models, health; streaming with server-sent events).
    Serve(serve::ServeArgs),
}

#[derive(Args)]
pub struct ModelArgs {
    /// A Hugging Face model folder (config.json, tokenizer.json, *.safetensors)
    /// or a .gguf file (the first part of a split model): a local path, an
    /// http(s) URL, or a Hugging Face repo id `org/name`.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub remote: http::RemoteArgs,
    /// Context window in tokens (default: the model's, at most 4096).
    #[arg(long)]
    pub context: Option<usize>,
    /// Tokens per prefill pass.
    #[arg(long, default_value_t = 64)]
    pub chunk: usize,
    /// KV cache element type: auto (f16 for quantized models on devices with
    /// shader-f16, else f32), f16 or f32.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f16", "f32"])]
    pub kv_cache: String,
    /// Most bytes one weight buffer may hold (default: the device's binding
    /// limit); bigger matrices are split.
    #[arg(long)]
    pub max_binding: Option<u64>,
    /// GPU memory the model may take in all (weights, KV cache, activations);
    /// more fails with OUT_OF_MEMORY before any weight is read (after them
    /// where the self-test falls back to a larger f32 KV cache).
    #[arg(long)]
    pub max_gpu_bytes: Option<u64>,
    /// Kernel shapes: auto (CPU-shaped on a CPU rasterizer such as lavapipe,
    /// GPU-shaped elsewhere), gpu or cpu (either on any device: to test or
    /// compare them).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
    pub kernels: String,
    /// The image side of a GGUF model (Pixtral 12B, Mistral Small 3.x):
    /// llama.cpp's mmproj GGUF. A path for a local --model; for a remote one,
    /// a file name in its repo or folder, or a URL in the same folder.
    #[arg(long, value_name = "FILE")]
    pub mmproj: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids, used as given (no BOS, no template).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Wrap --prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    conversation: text::ConversationArgs,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Report the K highest raw logits at the last prompt position.
    #[arg(long, default_value_t = 0)]
    top_logits: usize,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// An image (PNG, JPEG, WebP) for a vision model (repeatable, in order).
    /// With --chat the images go before the prompt in the user message;
    /// with --messages they fill the messages' image parts in order; with a
    /// plain --prompt or --prompt-ids, each image takes the place of one
    /// image token ([IMG]).
    #[arg(long)]
    image: Vec<String>,
    #[command(flatten)]
    constraint: constraint::ConstraintArgs,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repetition_penalty: f32,
}

async fn chat(a: ChatArgs) -> tramontane::Result<()> {
    let (gpu, mut model) = load(&a.model, false).await?;
    eprintln!(
        "{} ({}, {:.0} MB) on {} ({}). Type a message; an empty line or Ctrl-D quits.",
        a.model.model,
        model.info.dtype,
        model.info.weight_bytes as f64 / 1e6,
        gpu.adapter.name,
        gpu.adapter.backend
    );
    if model.info.vision.is_some() {
        eprintln!("This model takes images: `/image FILE` attaches one to your next message.");
    }
    let mut messages: Vec<serde_json::Value> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    // The conversation's opening (the system prompt, or the template's
    // own) runs on the GPU while the person types the first message.
    // It only saves time: an opening the template refuses is reported at
    // the first message, as the request's own error.
    if let Ok(start) = model.conversation_start(&ChatRequest { messages: messages.clone(), ..Default::default() }) {
        if let Err(e) = model.prefill(&start).await {
            eprintln!("(the opening was not prefilled: {e})");
        }
    }
    // Every image of the conversation in order (the template renders every
    // turn again), and those attached to the next message.
    let (mut pictures, mut pending) = (Vec::new(), Vec::new());
    let stdin = std::io::stdin();
    let mut seed = 1u64;
    loop {
        eprint!("\n> ");
        let mut line = String::new();
        if stdin.read_line(&mut line).map_err(|e| tramontane::Error::InvalidRequest(e.to_string()))? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        if let Some(file) = line.trim().strip_prefix("/image ") {
            let file = file.trim();
            let decoded = std::fs::read(file)
                .map_err(|e| tramontane::Error::InvalidRequest(format!("{file}: {e}")))
                .and_then(|b| tramontane::vision::decode::decode(&b, tramontane::vision::MAX_PIXELS, file));
            match decoded {
                Ok(p) if model.info.vision.is_some() => {
                    eprintln!("[{file}: {}x{}, attached to your next message]", p.width, p.height);
                    pending.push(p);
                }
                Ok(_) => eprintln!("error: this model takes no images"),
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        let text = line.trim_end();
        if pending.is_empty() {
            messages.push(json!({"role": "user", "content": text}));
        } else {
            let mut parts: Vec<serde_json::Value> = pending.iter().map(|_| json!({"type": "image"})).collect();
            parts.push(json!({"type": "text", "text": text}));
            messages.push(json!({"role": "user", "content": parts}));
            pictures.append(&mut pending);
        }
        let ids = model.chat_ids(&ChatRequest { messages: messages.clone(), add_generation_prompt: true, ..Default::default() })?;
        let (prompt, images) = if pictures.is_empty() { (ids, Vec::new()) } else { model.prompt_images(&ids, &pictures)? };
        let req = GenerateRequest {
            images,
            sampling: SamplingParams {
                temperature: a.temperature,
                top_p: a.top_p,
                repetition_penalty: a.repetition_penalty,
                seed,
                ..Default::default()
            },
            max_tokens: a.max_tokens,
            ..Default::default()
        };
        seed += 1;
        let mut out = std::io::stdout();
        let g = model
            .generate(&prompt, &req, &mut |piece, _, _| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
                true
            })
            .await?;
        println!();
        eprintln!("[{} new prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s]", g.prefilled_tokens, g.prefill_tokens_per_s(), g.generated.len(), g.decode_tokens_per_s());
        messages.push(json!({"role": "assistant", "content": g.text.trim()}));
    }
}

pub async fn load(args: &ModelArgs, quiet: bool) -> tramontane::Result<(Arc<Gpu>, Model)> {
    let remote = http::resolve(&args.model, &args.remote)?;
    let gpu = Arc::new(Gpu::new().await?);
    gpu.set_kernel_shape(args.kernels.parse()?);
    let kv_cache = match args.kv_cache.as_str() {
        "f16" => KvCache::F16,
        "f32" => KvCache::F32,
        _ => KvCache::Auto,
    };
    let mut opts = LoadOptions { context: args.context, chunk: args.chunk, kv_cache, max_binding: args.max_binding, max_gpu_bytes: args.max_gpu_bytes, ..Default::default() };
    // A remote model streams from the network straight to the GPU: the upload
    // progress is the download's.
    if let Some((src, gguf)) = remote {
        opts.mmproj = args.mmproj.as_deref().map(|m| http::name_in(&src, m)).transpose()?;
        let mut bar = progress::Bar::new("downloading weights", quiet);
        let loaded = match &gguf {
            Some(name) => Model::load_gguf(gpu.clone(), &src, name, &opts, &mut |p| bar.update(p.done, p.total)).await,
            None => Model::load(gpu.clone(), &src, &opts, &mut |p| bar.update(p.done, p.total)).await,
        };
        bar.finish();
        let model = loaded.map_err(http::missing_as_404)?;
        if !quiet {
            eprintln!("downloaded {:.1} MB", src.downloaded.get() as f64 / 1e6);
        }
        return Ok((gpu, model));
    }
    let mut bar = progress::Bar::new("loading weights", quiet);
    let (src, gguf) = local_source(&args.model);
    // The source is the GGUF's folder; the mmproj is found by its own path.
    opts.mmproj = match &args.mmproj {
        Some(m) => Some(std::path::absolute(m).map_err(|e| tramontane::Error::Io { file: m.clone(), msg: e.to_string() })?.display().to_string()),
        None => None,
    };
    let model = match gguf {
        Some(name) => Model::load_gguf(gpu.clone(), &src, &name, &opts, &mut |p| bar.update(p.done, p.total)).await?,
        None => Model::load(gpu.clone(), &src, &opts, &mut |p| bar.update(p.done, p.total)).await?,
    };
    bar.finish();
    Ok((gpu, model))
}

/// A local `--model`: a `.gguf` file (its folder and name) or a model folder.
pub fn local_source(model: &str) -> (tramontane::source::DirSource, Option<String>) {
    let path = std::path::Path::new(model);
    if path.extension().is_some_and(|e| e == "gguf") {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        (tramontane::source::DirSource::new(dir), Some(name))
    } else {
        (tramontane::source::DirSource::new(path), None)
    }
}

async fn run(a: RunArgs) -> tramontane::Result<()> {
    let (_gpu, mut model) = load(&a.model, a.json).await?;
    if let Some(t) = a.conversation.template_override()? {
        model.text.set_template(&t);
    }
    let mut chat_req: Option<ChatRequest> = None;
    if a.prompt_ids.is_none() && a.conversation.messages.is_some() {
        chat_req = Some(a.conversation.request(true)?);
    } else if let (None, Some(text), true) = (&a.prompt_ids, &a.prompt, a.chat) {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", text));
        let mut req = ChatRequest::from_messages(&msgs);
        if !a.image.is_empty() {
            // The user message as content parts: the images, then the text.
            let mut parts: Vec<serde_json::Value> = a.image.iter().map(|_| json!({"type": "image"})).collect();
            parts.push(json!({"type": "text", "text": text}));
            if let Some(last) = req.messages.last_mut() {
                last["content"] = serde_json::Value::Array(parts);
            }
        }
        a.conversation.add_to(&mut req)?;
        chat_req = Some(req);
    }
    if let Some(r) = chat_req.as_mut() {
        match a.constraint.choice() {
            // `--tool-choice none`: the template does not see the tools.
            None => r.tools = None,
            // A named function: the template sees only it.
            Some(tramontane::ToolChoice::Named(n)) => {
                if let Some(t) = r.tools.as_mut() {
                    t.retain(|x| x.get("function").unwrap_or(x).get("name").and_then(|v| v.as_str()) == Some(n.as_str()));
                    if t.is_empty() {
                        return Err(tramontane::Error::InvalidRequest(format!("--tool-choice names {n:?}, which is not in the tools")));
                    }
                }
            }
            _ => {}
        }
    }
    let prompt_ids = match (&a.prompt_ids, &a.prompt, &chat_req) {
        (Some(ids), _, _) => ids.clone(),
        (None, _, Some(req)) => model.chat_ids(req)?,
        // A text prompt: the tokenizer's own BOS/EOS rule.
        (None, Some(text), None) => model.text_prompt(text)?,
        (None, None, None) => return Err(tramontane::Error::InvalidRequest("give --prompt, --prompt-ids or --messages".into())),
    };
    let (prompt_ids, images) = if a.image.is_empty() {
        (prompt_ids, Vec::new())
    } else {
        if a.image.len() > tramontane::vision::MAX_IMAGES {
            return Err(tramontane::Error::InvalidRequest(format!("{} images; at most {}", a.image.len(), tramontane::vision::MAX_IMAGES)));
        }
        let pictures = a
            .image
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).map_err(|e| tramontane::Error::InvalidRequest(format!("--image {f}: {e}")))?;
                tramontane::vision::decode::decode(&bytes, tramontane::vision::MAX_PIXELS, &format!("--image {f}"))
            })
            .collect::<tramontane::Result<Vec<_>>>()?;
        model.prompt_images(&prompt_ids, &pictures)?
    };
    let offered = chat_req.as_ref().and_then(|r| r.tools.clone());
    let constraint = a.constraint.constraint(offered.as_deref())?;
    let tools = offered.is_some();
    let req = GenerateRequest {
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
            ..Default::default()
        },
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        top_logits: a.top_logits,
        logprobs: None,
        tools: if tools { Some(model.text.effective_tool_format()) } else { None },
        constraint,
        images,
    };
    let json_out = a.json;
    let mut stdout = std::io::stdout();
    let g = model
        .generate(&prompt_ids, &req, &mut |piece, _, _| {
            if !json_out {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
            true
        })
        .await?;
    if json_out {
        let v = json!({
            "prompt_ids": prompt_ids,
            "generated_ids": g.generated,
            "text": g.text,
            "tool_calls": g.tool_calls.iter().map(|c| c.to_openai()).collect::<Vec<_>>(),
            "top_logits": g.top_logits.iter().map(|(i, l)| json!([i, l])).collect::<Vec<_>>(),
            "finish_reason": g.finish.as_str(),
            "prefill_tokens_per_s": g.prefill_tokens_per_s(),
            "decode_tokens_per_s": g.decode_tokens_per_s(),
        });
        let mut v = v;
        if let Some(c) = &g.constraint {
            v["constraint"] = c.to_json();
        }
        println!("{v}");
    } else {
        println!();
        for c in &g.tool_calls {
            println!("[tool call {}] {}({})", c.id, c.name, c.arguments);
        }
        eprintln!(
            "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s]",
            g.prompt_tokens,
            g.generated.len(),
            g.prefill_tokens_per_s(),
            g.decode_tokens_per_s()
        );
    }
    Ok(())
}

/// The local zone's offset from UTC at `secs` (for templates' `strftime_now`).
fn local_offset(secs: i64) -> i32 {
    use chrono::{Offset, TimeZone};
    chrono::Local.timestamp_opt(secs, 0).single().map(|t| t.offset().fix().local_minus_utc()).unwrap_or(0)
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set"
/// on every start without it (headless machines, CI): give them a private one
/// so that a successful run prints no `error:` line. Runs before any thread.
#[cfg(unix)]
fn ensure_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let ok = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if ok {
        return;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("tramontane-runtime-{user}"));
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok() {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(not(unix))]
fn ensure_runtime_dir() {}

fn main() -> ExitCode {
    ensure_runtime_dir();
    tramontane::text::set_local_offset_source(local_offset);
    let cli = Cli::parse();
    let r = pollster::block_on(async {
        match cli.cmd {
            // Its own runtime (tokio) and model thread.
            Cmd::Serve(a) => serve::serve(a),
            Cmd::Run(a) => run(a).await,
            Cmd::Chat(a) => chat(a).await,
            Cmd::Bench(a) => bench::bench(a).await,
            Cmd::Tokenize(a) => text::tokenize(a).await,
            Cmd::Prompt(a) => text::prompt(a).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}
