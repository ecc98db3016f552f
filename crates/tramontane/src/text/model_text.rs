//! Everything a model says about text, read without touching its weights:
//! the tokenizer with its BOS/EOS rule and end-of-generation ids, the chat
//! template, and the sampling defaults its authors recommend. `tramontane
//! tokenize` / `prompt` use this alone (vocab-only GGUFs, tokenizer folders);
//! `Model::load*` builds it first and then uploads weights.

use serde_json::{Map, Value};

use super::{gguf_tokenizer, ChatRequest, ChatTemplate, Tokenizer, ToolFormat};
use crate::error::{Error, Result};
use crate::parse::config::token_ids;
use crate::parse::gguf::{GgufHeader, MetaValue};
use crate::source::ModelSource;

/// Sampling settings from `generation_config.json` (HF) or
/// `general.sampling.*` (GGUF); `None` where the model says nothing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GenerationDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

pub struct ModelText {
    pub tokenizer: Tokenizer,
    /// The compiled chat template, if the model has one that compiles.
    pub template: Option<ChatTemplate>,
    /// Why the model's template could not be used (it did not compile). The
    /// model still loads: completions work, chat requests fail with this.
    pub template_error: Option<String>,
    pub defaults: GenerationDefaults,
    /// How the model writes tool calls (read off its template).
    pub tool_format: Option<ToolFormat>,
    /// Mistral's `name[ARGS]{...}` tool calls (the template writes `[ARGS]`).
    tool_args_form: bool,
    /// The template shows the model the request's tools. When it does not,
    /// [`ModelText::chat_text`] describes them in the system message, in the
    /// Hermes format the calls are then parsed in.
    renders_tools: bool,
}

/// What a model whose template ignores `tools` is told about them: the
/// Hermes layout (Qwen's, SmolLM2's training format), which tool calls of
/// such a model are parsed and constrained in.
fn describe_tools(tools: &[Value]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou can call functions to help answer. Their signatures are inside <tools></tools>:\n<tools>\n",
    );
    for t in tools {
        s.push_str(&t.to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\n\nTo call a function, answer with a JSON object holding its name and arguments inside <tool_call></tool_call>:\n\
         <tool_call>\n{\"name\": <function-name>, \"arguments\": <arguments-object>}\n</tool_call>",
    );
    s
}

/// Texts of control tokens that end a turn; llama.cpp treats them as
/// end-of-generation too when the metadata does not list them.
const EOG_TEXTS: [&str; 8] = ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "</s>", "<end_of_turn>", "<|return|>"];

fn special_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

pub(crate) async fn read_json<S: ModelSource>(src: &S, name: &str) -> Result<Option<Value>> {
    match src.read_all(name, 64 << 20).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::format(&src.describe(name), format!("not valid JSON: {e}"))),
    }
}

/// The template of `tokenizer_config.json`: a string, or a list of named
/// templates of which "default" is the chat one.
fn config_template(tok_cfg: &Value) -> Option<String> {
    match tok_cfg.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .iter()
            .find(|x| x.get("name").and_then(Value::as_str) == Some("default"))
            .or(a.first())
            .and_then(|x| x.get("template"))
            .and_then(Value::as_str)
            .map(String::from),
        _ => None,
    }
}

fn f32_of(v: Option<&Value>) -> Option<f32> {
    v.and_then(Value::as_f64).map(|x| x as f32)
}

impl GenerationDefaults {
    fn from_generation_config(g: &Value) -> Self {
        // `do_sample: false` (or absent, transformers' default) means greedy
        // whatever temperature says; only a sampling config recommends one.
        let sampling = g.get("do_sample").and_then(Value::as_bool).unwrap_or(false);
        let mut d = GenerationDefaults {
            temperature: f32_of(g.get("temperature")),
            top_p: f32_of(g.get("top_p")),
            top_k: g.get("top_k").and_then(Value::as_u64).map(|k| k as u32),
            min_p: f32_of(g.get("min_p")),
            repetition_penalty: f32_of(g.get("repetition_penalty")),
        };
        if !sampling && d.temperature.is_some() {
            d.temperature = Some(0.0);
        }
        d
    }

    fn from_gguf(h: &GgufHeader) -> Self {
        let f = |k: &str| h.get(k).and_then(MetaValue::as_f64).map(|x| x as f32);
        GenerationDefaults {
            temperature: f("general.sampling.temp"),
            top_p: f("general.sampling.top_p"),
            top_k: h.get("general.sampling.top_k").and_then(MetaValue::as_u64).map(|k| k as u32),
            min_p: f("general.sampling.min_p"),
            repetition_penalty: f("general.sampling.penalty_repeat"),
        }
    }
}

impl ModelText {
    /// The text side of a model without its weights: a GGUF's header (the
    /// first part holds the tokenizer; vocab-only files work) or a folder.
    pub async fn load<S: ModelSource>(src: &S, gguf_name: Option<&str>) -> Result<ModelText> {
        match gguf_name {
            Some(name) => {
                let head = crate::parse::gguf::read_header(src, name).await?;
                Self::from_gguf(&head, &src.describe(name))
            }
            None => Self::load_hf(src).await,
        }
    }

    /// A Hugging Face folder: `tokenizer.json` (else `tekken.json`, else
    /// `tokenizer.model`), `tokenizer_config.json`, `generation_config.json`,
    /// `chat_template.jinja`, and `config.json` for BOS/EOS ids when present.
    pub async fn load_hf<S: ModelSource>(src: &S) -> Result<ModelText> {
        let mut tokenizer = Self::hf_tokenizer(src).await?;
        let cfg = read_json(src, "config.json").await?;
        let tok_cfg = read_json(src, "tokenizer_config.json").await?;
        let gen_cfg = read_json(src, "generation_config.json").await?;
        let tc = |k: &str| tok_cfg.as_ref().and_then(|t| t.get(k));
        let bos_text = special_text(tc("bos_token")).or_else(|| tokenizer.bos_text.clone());
        let eos_text = special_text(tc("eos_token")).or_else(|| tokenizer.eos_text.clone());

        let mut eos = tokenizer.eos.clone();
        eos.extend(token_ids(gen_cfg.as_ref().and_then(|g| g.get("eos_token_id"))));
        eos.extend(token_ids(cfg.as_ref().and_then(|c| c.get("eos_token_id"))));
        eos.extend(eos_text.as_deref().and_then(|t| tokenizer.token_id(t)));
        eos.sort_unstable();
        eos.dedup();
        tokenizer.eos = eos;
        let cfg_bos = token_ids(cfg.as_ref().and_then(|c| c.get("bos_token_id"))).first().copied();
        tokenizer.bos = bos_text.as_deref().and_then(|t| tokenizer.token_id(t)).or(cfg_bos).or(tokenizer.bos);
        tokenizer.bos_text = bos_text.clone().or_else(|| tokenizer.bos.and_then(|b| tokenizer.inner().id_to_token(b)));
        tokenizer.eos_text = eos_text.clone();
        Self::hf_special_rule(&mut tokenizer, tok_cfg.as_ref());

        let template_src = match src.read_all("chat_template.jinja", 4 << 20).await? {
            Some(b) => Some(String::from_utf8(b).map_err(|_| Error::format(&src.describe("chat_template.jinja"), "not UTF-8"))?),
            None => tok_cfg.as_ref().and_then(config_template),
        };
        let defaults = gen_cfg.as_ref().map(GenerationDefaults::from_generation_config).unwrap_or_default();
        Ok(Self::assemble(tokenizer, template_src.as_deref(), defaults))
    }

    async fn hf_tokenizer<S: ModelSource>(src: &S) -> Result<Tokenizer> {
        if let Some(b) = src.read_all("tokenizer.json", 256 << 20).await? {
            return Tokenizer::from_json(&b, &src.describe("tokenizer.json"));
        }
        if let Some(b) = src.read_all("tekken.json", 256 << 20).await? {
            return super::tekken::from_tekken_json(&b, &src.describe("tekken.json"));
        }
        if let Some(b) = src.read_all("tokenizer.model", 64 << 20).await? {
            return super::spm_model::from_sentencepiece_model(&b, &src.describe("tokenizer.model"));
        }
        Err(Error::MissingFile {
            file: src.describe("tokenizer.json"),
            what: "the tokenizer (tokenizer.json, tekken.json or tokenizer.model)".into(),
        })
    }

    /// BOS/EOS for text prompts, as transformers' `tokenizer(text)` adds them:
    /// what the post-processor adds, unless `tokenizer_config.json` says
    /// `add_bos_token` / `add_eos_token` explicitly (transformers rebuilds the
    /// post-processor from those flags).
    fn hf_special_rule(tok: &mut Tokenizer, tok_cfg: Option<&Value>) {
        let full = tok.inner().encode("a", true).map(|e| e.get_ids().to_vec());
        let plain = tok.inner().encode("a", false).map(|e| e.get_ids().to_vec());
        if let (Ok(full), Ok(plain)) = (full, plain) {
            // Where the plain ids sit inside the processed ones: what is before
            // them the post-processor prepends, what is after it appends.
            if let Some(at) = (0..=full.len().saturating_sub(plain.len())).find(|&i| full[i..].starts_with(&plain)) {
                if let Some(&first) = full[..at].first() {
                    tok.bos = tok.bos.or(Some(first));
                    tok.add_bos = true;
                }
                if let Some(&last) = full[at + plain.len()..].last() {
                    if !tok.eos.contains(&last) {
                        tok.eos.push(last);
                    }
                    tok.add_eos = true;
                }
            }
        }
        let flag = |k: &str| tok_cfg.and_then(|t| t.get(k)).and_then(Value::as_bool);
        if let Some(b) = flag("add_bos_token") {
            tok.add_bos = b && tok.bos.is_some();
        }
        if let Some(e) = flag("add_eos_token") {
            tok.add_eos = e && !tok.eos.is_empty();
        }
    }

    /// A GGUF's tokenizer from its header alone (vocab-only files work).
    pub fn from_gguf(head: &GgufHeader, file: &str) -> Result<ModelText> {
        let mut tokenizer = gguf_tokenizer::from_gguf(head, file)?;
        // Ids that name no token are ignored (as in gguf_tokenizer::from_gguf).
        let n_tokens = head.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map_or(0, <[MetaValue]>::len) as u64;
        let tok = |k: &str| head.get(k).and_then(MetaValue::as_u64).filter(|&v| v < n_tokens).map(|v| v as u32);
        let mut eos: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .iter()
            .filter_map(|k| tok(k))
            .collect();
        eos.extend(EOG_TEXTS.iter().filter_map(|t| tokenizer.token_id(t)));
        eos.sort_unstable();
        eos.dedup();
        tokenizer.eos = eos;
        let template = head.get("tokenizer.chat_template").and_then(MetaValue::as_str);
        Ok(Self::assemble(tokenizer, template, GenerationDefaults::from_gguf(head)))
    }

    fn assemble(tokenizer: Tokenizer, template_src: Option<&str>, defaults: GenerationDefaults) -> ModelText {
        let mut text =
            ModelText { tokenizer, template: None, template_error: None, defaults, tool_format: None, tool_args_form: false, renders_tools: false };
        if let Some(src) = template_src {
            text.set_template(src);
        }
        text
    }

    /// Use `source` as the chat template (a model's own, or an override). A
    /// template that does not compile is remembered as the reason chat fails.
    pub fn set_template(&mut self, source: &str) {
        self.tool_format = ToolFormat::detect(source);
        self.tool_args_form = source.contains("[ARGS]");
        self.renders_tools = source.contains("tools");
        match ChatTemplate::new(source, self.tokenizer.bos_text.as_deref(), self.tokenizer.eos_text.as_deref()) {
            Ok(t) => {
                self.template = Some(t);
                self.template_error = None;
            }
            Err(e) => {
                self.template = None;
                self.template_error = Some(e.to_string());
            }
        }
    }

    /// The format tool calls are parsed (and constrained) in: the template's,
    /// else Hermes (the tools were described in that format: `chat_text`).
    pub fn effective_tool_format(&self) -> ToolFormat {
        self.tool_format.unwrap_or(ToolFormat::Hermes)
    }

    /// How this model writes tool calls, for constrained decoding.
    pub fn tool_syntax(&self) -> crate::constrain::ToolSyntax {
        let special = |t: &str| self.tokenizer.token_id(t);
        crate::constrain::ToolSyntax {
            format: self.effective_tool_format(),
            mistral_args: self.tool_args_form,
            tool_calls_token: special("[TOOL_CALLS]"),
            args_token: special("[ARGS]"),
        }
    }

    /// The prompt text a chat request renders to. Tools a template does not
    /// render are described in the system message (a new one first if there
    /// is none; in the first user message for templates that refuse a system
    /// role), so the model knows them and how to call them.
    pub fn chat_text(&self, req: &ChatRequest) -> Result<String> {
        let t = match (&self.template, &self.template_error) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(Error::Template(format!("the model's chat template cannot be used ({e}); completions still work"))),
            (None, None) => {
                return Err(Error::Unsupported(
                    "this model has no chat template: give one (--chat-template, the `chatTemplate` load option) or use completions".into(),
                ))
            }
        };
        let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty() && !self.renders_tools) else { return t.render(req) };
        let text = describe_tools(tools);
        // Prepended to the content of the first message with `role`, or
        // (`insert`) a new message of that role first.
        let with = |role: &str, insert: bool| {
            let mut r = req.clone();
            let at = r.messages.iter().position(|m| m.get("role").and_then(Value::as_str) == Some(role));
            match at.and_then(|i| r.messages[i].get_mut("content")) {
                // After a system message's own words; before a user's.
                Some(Value::String(c)) if role == "system" => *c = format!("{c}\n\n{text}"),
                Some(Value::String(c)) => *c = format!("{text}\n\n{c}"),
                _ if insert => r.messages.insert(0, serde_json::json!({"role": role, "content": text})),
                _ => {}
            }
            r
        };
        match t.render(&with("system", true)) {
            Err(Error::Template(_)) => t.render(&with("user", false)),
            other => other,
        }
    }

    /// Token ids of a chat request: exactly what the template writes (its BOS
    /// included), special-token texts recognized, nothing added.
    pub fn chat_ids(&self, req: &ChatRequest) -> Result<Vec<u32>> {
        let text = self.chat_text(req)?;
        self.tokenizer.encode_with(&text, false, true)
    }

    /// What callers report about the model's text side (JS `info()`, CLI).
    pub fn describe(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("bos".into(), self.tokenizer.bos.into());
        m.insert("eos".into(), self.tokenizer.eos.clone().into());
        m.insert("addBos".into(), self.tokenizer.add_bos.into());
        m.insert("addEos".into(), self.tokenizer.add_eos.into());
        m.insert("hasChatTemplate".into(), self.template.is_some().into());
        m.insert("chatTemplateError".into(), self.template_error.clone().into());
        m.insert("generationDefaults".into(), serde_json::to_value(&self.defaults).unwrap_or(Value::Null));
        m.insert("toolFormat".into(), serde_json::to_value(self.tool_format).unwrap_or(Value::Null));
        m.insert("tokenizerWarnings".into(), self.tokenizer.warnings.clone().into());
        m
    }
}
