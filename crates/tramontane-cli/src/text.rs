//! `tokenize` and `prompt`: the text side of a model alone (tokenizer and chat
//! template, read from a folder or a GGUF header; no weights, no GPU), and the
//! conversation flags `run` shares with `prompt`. Files are read verbatim.

use clap::Args;
use serde_json::{json, Map, Value};
use tramontane::{ChatRequest, Error, ModelText, Result};

#[derive(Args)]
pub struct TokenizeArgs {
    /// A model folder (tokenizer.json, tekken.json or tokenizer.model) or a
    /// .gguf file (vocab-only files work): a local path, an http(s) URL or a
    /// Hugging Face repo id (only the small files are downloaded).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    remote: crate::http::RemoteArgs,
    /// The text to tokenize.
    #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file")]
    text: Option<String>,
    /// A file whose bytes (UTF-8, read verbatim) are the text.
    #[arg(long)]
    text_file: Option<String>,
    /// Apply the tokenizer's own BOS/EOS rule (default: add nothing).
    #[arg(long)]
    add_special: bool,
    /// Special-token texts ("<s>", "<|im_start|>") become their ids (default:
    /// they are plain text).
    #[arg(long)]
    parse_special: bool,
    /// Print `{"ids": [...]}`.
    #[arg(long)]
    json: bool,
}

/// The conversation flags of `prompt` and `run`.
#[derive(Args)]
pub struct ConversationArgs {
    /// A JSON file: an array of OpenAI-shaped messages, or an object with
    /// `messages` and optionally `tools`, `documents`, `chat_template_kwargs`.
    #[arg(long)]
    pub messages: Option<String>,
    /// A JSON file with the tools (OpenAI's `tools` array).
    #[arg(long)]
    pub tools: Option<String>,
    /// A Jinja file used instead of the model's chat template.
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Extra template variables as a JSON object, e.g. '{"enable_thinking": false}'.
    #[arg(long)]
    pub chat_template_kwargs: Option<String>,
}

#[derive(Args)]
pub struct PromptArgs {
    /// A model folder or a .gguf file (only the tokenizer and template are
    /// read): a local path, an http(s) URL or a Hugging Face repo id.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    remote: crate::http::RemoteArgs,
    #[command(flatten)]
    conversation: ConversationArgs,
    /// Render without the assistant's generation prompt.
    #[arg(long)]
    no_generation_prompt: bool,
    /// Print `{"text": ..., "ids": [...]}`.
    #[arg(long)]
    json: bool,
}

fn read_text(path: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { file: path.to_string(), msg: e.to_string() })?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidRequest(format!("{path}: not UTF-8 text")))
}

fn read_json(path: &str) -> Result<Value> {
    serde_json::from_str(&read_text(path)?).map_err(|e| Error::InvalidRequest(format!("{path}: not valid JSON: {e}")))
}

fn json_list(v: Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(Error::InvalidRequest(format!("{what} must be a JSON array"))),
    }
}

impl ConversationArgs {
    pub fn template_override(&self) -> Result<Option<String>> {
        self.chat_template.as_deref().map(read_text).transpose()
    }

    /// The request of `--messages` (plus `--tools`, kwargs).
    pub fn request(&self, add_generation_prompt: bool) -> Result<ChatRequest> {
        let path = self.messages.as_deref().ok_or_else(|| Error::InvalidRequest("give --messages FILE.json".into()))?;
        let mut req = ChatRequest { add_generation_prompt, ..Default::default() };
        match read_json(path)? {
            Value::Array(a) => req.messages = a,
            Value::Object(mut o) => {
                req.messages = json_list(o.remove("messages").unwrap_or(Value::Null), &format!("{path}: `messages`"))?;
                if let Some(t) = o.remove("tools").filter(|t| !t.is_null()) {
                    req.tools = Some(json_list(t, &format!("{path}: `tools`"))?);
                }
                if let Some(d) = o.remove("documents").filter(|d| !d.is_null()) {
                    req.documents = Some(json_list(d, &format!("{path}: `documents`"))?);
                }
                if let Some(Value::Object(k)) = o.remove("chat_template_kwargs") {
                    req.extra = k;
                }
            }
            _ => return Err(Error::InvalidRequest(format!("{path}: expected an array of messages or an object with `messages`"))),
        }
        self.add_to(&mut req)?;
        Ok(req)
    }

    /// Add `--tools` and `--chat-template-kwargs` to a request.
    pub fn add_to(&self, req: &mut ChatRequest) -> Result<()> {
        if let Some(t) = &self.tools {
            req.tools = Some(json_list(read_json(t)?, &format!("{t}: the tools"))?);
        }
        if let Some(k) = &self.chat_template_kwargs {
            let v: Value = serde_json::from_str(k).map_err(|e| Error::InvalidRequest(format!("--chat-template-kwargs: {e}")))?;
            let Value::Object(m) = v else { return Err(Error::InvalidRequest("--chat-template-kwargs must be a JSON object".into())) };
            req.extra.extend(m);
        }
        Ok(())
    }
}

/// The text side of `--model`: a `.gguf` file's header, or a folder (local,
/// or over HTTP: only the files it needs).
async fn model_text(model: &str, remote: &crate::http::RemoteArgs) -> Result<ModelText> {
    if let Some((src, gguf)) = crate::http::resolve(model, remote)? {
        return ModelText::load(&src, gguf.as_deref()).await.map_err(crate::http::missing_as_404);
    }
    let (src, gguf) = crate::local_source(model);
    ModelText::load(&src, gguf.as_deref()).await
}

fn warn(text: &ModelText) {
    for w in &text.tokenizer.warnings {
        eprintln!("warning: {w}");
    }
}

pub async fn tokenize(a: TokenizeArgs) -> Result<()> {
    let input = match (&a.text, &a.text_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text(f)?,
        (None, None) => return Err(Error::InvalidRequest("give --text or --text-file".into())),
    };
    let text = model_text(&a.model, &a.remote).await?;
    warn(&text);
    let ids = text.tokenizer.encode_with(&input, a.add_special, a.parse_special)?;
    if a.json {
        println!("{}", json!({ "ids": ids }));
    } else {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

pub async fn prompt(a: PromptArgs) -> Result<()> {
    let mut text = model_text(&a.model, &a.remote).await?;
    warn(&text);
    if let Some(t) = a.conversation.template_override()? {
        text.set_template(&t);
    }
    let req = a.conversation.request(!a.no_generation_prompt)?;
    let rendered = text.chat_text(&req)?;
    let ids = text.tokenizer.encode_with(&rendered, false, true)?;
    if a.json {
        let mut out = Map::new();
        out.insert("text".into(), rendered.into());
        out.insert("ids".into(), ids.into());
        println!("{}", Value::Object(out));
    } else {
        print!("{rendered}");
    }
    Ok(())
}
