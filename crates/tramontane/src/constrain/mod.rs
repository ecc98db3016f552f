//! Constrained decoding: JSON Schema, JSON mode, regexes, Lark grammars and
//! tool calls, by llguidance (the engine llama.cpp, vLLM and SGLang use).
//!
//! A model gets a [`Constrainer`] on its first constrained request: the token
//! trie of its vocabulary (`vocab.rs`) and llguidance's parser factory.
//! [`Constrainer::compile`] turns a request's [`Constraint`] into a
//! [`Session`] (compiled grammars are cached by their text, so a schema sent
//! again starts at once). Each step the session computes the bitmask of
//! allowed tokens on the CPU while the GPU runs the forward pass; the
//! sampling kernel applies it (`shaders/sample.wgsl`, `MASK`), and the token
//! it picks is committed back.

mod closing;
mod grammar;
mod tools;
mod vocab;

use llguidance::api::ParserLimits;
use llguidance::{Matcher, ParserFactory};
use toktrie::TokEnv;
use serde_json::{json, Value};
use web_time::Instant;

use crate::error::{Error, Result};
use crate::text::Tokenizer;
pub use tools::ToolSyntax;
pub use vocab::token_bytes;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {type: "json_object"}`).
    JsonObject,
    /// A JSON value valid for this JSON Schema.
    JsonSchema(Value),
    /// Text matching this regex (Rust `regex` syntax), whole.
    Regex(String),
    /// Text of this grammar, in llguidance's Lark syntax.
    Lark(String),
    /// Tool calls in the model's own format (see [`ToolConstraint`]).
    Tools(ToolConstraint),
}

/// Which tool calls a request allows or requires.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConstraint {
    /// OpenAI tools: `{type: "function", function: {name, parameters}}`.
    pub tools: Vec<Value>,
    pub choice: ToolChoice,
    /// Several calls in one answer (OpenAI's `parallel_tool_calls`).
    pub parallel: bool,
    /// With [`ToolChoice::Auto`]: what an answer that is not a call must be
    /// (the request's `response_format`), instead of free text.
    pub content: Option<Box<Constraint>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text or calls, as the model decides; a call it opens must be valid.
    Auto,
    /// At least one call, to any of the tools.
    Required,
    /// One call to this function.
    Named(String),
}

impl Constraint {
    /// The request field the constraint came from, for error messages.
    pub fn field(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "response_format (json_object)",
            Constraint::JsonSchema(_) => "response_format.json_schema.schema",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "grammar",
            Constraint::Tools(_) => "tools",
        }
    }

    /// The cache key: the constraint's whole description.
    fn key(&self) -> String {
        fn describe(c: &Constraint) -> Value {
            match c {
                Constraint::JsonObject => json!(["json_object"]),
                Constraint::JsonSchema(s) => json!(["json_schema", s]),
                Constraint::Regex(r) => json!(["regex", r]),
                Constraint::Lark(g) => json!(["lark", g]),
                Constraint::Tools(t) => {
                    let choice = match &t.choice {
                        ToolChoice::Auto => json!("auto"),
                        ToolChoice::Required => json!("required"),
                        ToolChoice::Named(n) => json!({"name": n}),
                    };
                    json!(["tools", t.tools, choice, t.parallel, t.content.as_deref().map(describe)])
                }
            }
        }
        describe(self).to_string()
    }
}

/// How long compiling may take, as llguidance counts it: the size of a
/// compiled grammar and the work ("fuel") spent building its lexer, and per
/// token the lexer and parser work of one mask. A hostile schema or grammar
/// fails with INVALID_REQUEST instead of hanging the engine.
pub fn limits() -> ParserLimits {
    ParserLimits {
        max_grammar_size: 500_000,
        initial_lexer_fuel: 1_000_000,
        step_lexer_fuel: 200_000,
        step_max_items: 50_000,
        max_lexer_states: 250_000,
        ..ParserLimits::default()
    }
}

/// Compiled constraints kept (most recently used first out last).
const CACHE_ENTRIES: usize = 32;

struct Cached {
    key: String,
    matcher: Matcher,
    compile_seconds: f64,
    warnings: Vec<String>,
}

/// llguidance set up for one model's vocabulary, with compiled constraints.
pub struct Constrainer {
    factory: ParserFactory,
    /// The model's token ids (the sampler's vocabulary: mask bits beyond the
    /// tokenizer's own tokens stay 0).
    n_vocab: usize,
    eos: Vec<u32>,
    cache: Vec<Cached>,
    /// Seconds spent building the token trie and the factory.
    pub setup_seconds: f64,
}

/// Constraints whose output is JSON with nothing around it but markers
/// without quotes or unbalanced brackets (what `closing.rs` can finish):
/// JSON, and forced tool calls (free text around `auto` calls could hold
/// anything).
fn is_json(c: &Constraint) -> bool {
    match c {
        Constraint::JsonObject | Constraint::JsonSchema(_) => true,
        Constraint::Tools(t) => t.choice != ToolChoice::Auto,
        _ => false,
    }
}

/// Errors of llguidance that say the schema uses something it does not
/// implement (as opposed to a schema that is wrong).
fn unimplemented(msg: &str) -> bool {
    ["Unimplemented keys", "Unknown format", "oneOf constraints are not supported", "min/maxProperties only supported"]
        .iter()
        .any(|m| msg.contains(m))
}

impl Constrainer {
    pub fn new(tok: &Tokenizer, n_vocab: usize) -> Result<Self> {
        let t0 = Instant::now();
        let env = vocab::tok_env(tok, n_vocab)?;
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::Internal(format!("setting up constrained decoding: {e}")))?;
        factory.quiet();
        *factory.limits_mut() = limits();
        let eos = tok.eos.iter().copied().filter(|&e| (e as usize) < n_vocab).collect();
        Ok(Constrainer { factory, n_vocab, eos, cache: Vec::new(), setup_seconds: t0.elapsed().as_secs_f64() })
    }

    fn build(&self, c: &Constraint, syntax: &ToolSyntax, lenient: bool) -> Result<(Matcher, Vec<String>)> {
        let grammar = grammar::to_grammar(c, syntax, lenient)?;
        let bad = |e: String| Error::InvalidRequest(format!("{} does not compile: {e}", c.field()));
        let parser = self.factory.create_parser(grammar).map_err(|e| bad(e.to_string()))?;
        let mut m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(bad(e));
        }
        let warnings = m.grammar_warnings();
        Ok((m, warnings))
    }

    /// A fresh session for `c` (tool calls written as `syntax` says):
    /// compiled now, or taken from the cache.
    pub fn compile(&mut self, c: &Constraint, syntax: &ToolSyntax) -> Result<Session> {
        let key = match c {
            Constraint::Tools(_) => format!("{}{syntax:?}", c.key()),
            _ => c.key(),
        };
        let stats = |compile_seconds, cached, warnings| ConstraintStats { compile_seconds, cached, warnings, ..Default::default() };
        if let Some(i) = self.cache.iter().position(|e| e.key == key) {
            let e = self.cache.remove(i);
            let s = Session::new(e.matcher.clone(), self, is_json(c), stats(e.compile_seconds, true, e.warnings.clone()));
            self.cache.push(e);
            return Ok(s);
        }
        let t0 = Instant::now();
        let (matcher, warnings) = match self.build(c, syntax, false) {
            Ok(r) => r,
            // A keyword or format llguidance does not implement is ignored
            // rather than refused: the output still follows the rest.
            Err(Error::InvalidRequest(msg)) if unimplemented(&msg) && !matches!(c, Constraint::Regex(_) | Constraint::Lark(_)) => {
                let (m, mut w) = self.build(c, syntax, true)?;
                w.insert(0, msg);
                (m, w)
            }
            Err(e) => return Err(e),
        };
        let compile_seconds = t0.elapsed().as_secs_f64();
        let s = Session::new(matcher.clone(), self, is_json(c), stats(compile_seconds, false, warnings.clone()));
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.remove(0);
        }
        self.cache.push(Cached { key, matcher, compile_seconds, warnings });
        Ok(s)
    }
}

/// What a generation's constraint cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConstraintStats {
    /// Compiling it (for a cached one: when it was compiled).
    pub compile_seconds: f64,
    /// It came from the cache of compiled constraints.
    pub cached: bool,
    /// Computing masks, all steps together.
    pub mask_seconds: f64,
    pub masks: usize,
    /// What llguidance approximated (keywords it ignored, `oneOf` as `anyOf`).
    pub warnings: Vec<String>,
    /// The model repeated itself and was steered to finish the JSON (see
    /// `closing.rs`).
    pub steered: bool,
}

impl ConstraintStats {
    /// What callers report (`usage.extra.constraint`, `run --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "compile_seconds": self.compile_seconds,
            "cached": self.cached,
            "mask_ms_per_token": self.mask_ms_per_token(),
            "masks": self.masks,
            "warnings": self.warnings,
            "steered": self.steered,
        })
    }

    pub fn mask_ms_per_token(&self) -> f64 {
        if self.masks == 0 {
            0.0
        } else {
            self.mask_seconds * 1e3 / self.masks as f64
        }
    }
}

/// What may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Tokens (and, where the constraint can end, the end-of-generation ids).
    Tokens,
    /// The constraint is complete and nothing may follow: the generation ends.
    End,
}

/// One generation's constraint: its parser state and what it cost.
pub struct Session {
    matcher: Matcher,
    env: TokEnv,
    n_vocab: usize,
    eos: Vec<u32>,
    /// For JSON constraints: where the output stands, to finish it if the
    /// model loops; the tokens so far, to see the loop.
    json: Option<closing::JsonState>,
    history: Vec<u32>,
    pub stats: ConstraintStats,
}

impl Session {
    fn new(matcher: Matcher, c: &Constrainer, json: bool, stats: ConstraintStats) -> Self {
        let json = json.then(closing::JsonState::default);
        Session { matcher, env: c.factory.tok_env().clone(), n_vocab: c.n_vocab, eos: c.eos.clone(), json, history: Vec::new(), stats }
    }

    /// Words of the sampler's mask: bit `i % 32` of word `i / 32` for token `i`.
    pub fn mask_words(n_vocab: usize) -> usize {
        n_vocab.div_ceil(32)
    }

    /// The mask of the tokens allowed next, into `words`.
    pub fn mask(&mut self, words: &mut Vec<u32>) -> Result<Next> {
        if self.matcher.is_stopped() {
            self.check_stop()?;
            return Ok(Next::End);
        }
        let t0 = Instant::now();
        let r = self.matcher.compute_mask();
        self.stats.mask_seconds += t0.elapsed().as_secs_f64();
        self.stats.masks += 1;
        let vob = r.map_err(|e| self.failed(e.to_string()))?;
        let n = Session::mask_words(self.n_vocab);
        words.clear();
        words.extend(vob.as_slice().iter().take(n));
        words.resize(n, 0);
        if self.n_vocab % 32 != 0 {
            if let Some(last) = words.last_mut() {
                *last &= (1u32 << (self.n_vocab % 32)) - 1;
            }
        }
        // Every end-of-generation id may end it when the constraint can.
        let bit = |w: &[u32], t: u32| w[t as usize / 32] >> (t % 32) & 1 == 1;
        let accepting = self.eos.iter().any(|&e| bit(words, e)) || self.matcher.is_accepting().unwrap_or(false);
        for &e in &self.eos {
            let (w, b) = (e as usize / 32, 1u32 << (e % 32));
            if accepting {
                words[w] |= b;
            } else {
                words[w] &= !b;
            }
        }
        let any_token = words.iter().enumerate().any(|(i, &w)| {
            let eos_bits = self.eos.iter().filter(|&&e| e as usize / 32 == i).fold(0u32, |m, &e| m | 1 << (e % 32));
            w & !eos_bits != 0
        });
        if !any_token {
            if accepting {
                return Ok(Next::End);
            }
            return Err(self.failed("no token of the vocabulary can continue the output".into()));
        }
        if let Some(state) = self.json.as_ref().filter(|_| self.stats.steered) {
            let allowed = |t: u32| (t as usize) < self.n_vocab && words[t as usize / 32] >> (t % 32) & 1 == 1;
            let end = self.eos.first().copied().filter(|_| accepting);
            if let Some(keep) = closing::steer(state, self.env.tok_trie(), allowed, end) {
                let ends = self.eos.contains(&keep);
                words.iter_mut().for_each(|w| *w = 0);
                for t in if ends { self.eos.clone() } else { vec![keep] } {
                    words[t as usize / 32] |= 1 << (t % 32);
                }
            } else if accepting && self.eos.is_empty() {
                return Ok(Next::End);
            } else if let Some(t) = self.path_to_candidate(words) {
                // A few characters make a closer possible: take the first.
                words.iter_mut().for_each(|w| *w = 0);
                words[t as usize / 32] |= 1 << (t % 32);
            } else if let Some(t) = closing::loop_next(&self.history) {
                // No way to close here: at least do not go round the loop again,
                // if anything else is allowed.
                let bit = 1u32 << (t % 32);
                let w = t as usize / 32;
                if words[w] & bit != 0 && words.iter().enumerate().any(|(i, &x)| x & !if i == w { bit } else { 0 } != 0) {
                    words[w] &= !bit;
                }
            }
        }
        Ok(Next::Tokens)
    }

    /// The sampled token: the parser moves past it.
    pub fn commit(&mut self, token: u32) -> Result<()> {
        if self.eos.contains(&token) {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| self.failed(e.to_string()))?;
        if let Some(state) = self.json.as_mut() {
            state.push(self.env.tok_trie().token(token));
            self.history.push(token);
            if !self.stats.steered && closing::looping(&self.history) {
                self.stats.steered = true;
            }
        }
        self.check_stop()
    }

    /// A parser that stopped for a reason other than a complete output (its
    /// lexer or parser grew past the limits) is an error, not an end.
    fn check_stop(&self) -> Result<()> {
        let r = self.matcher.stop_reason();
        if r.is_ok() {
            Ok(())
        } else {
            Err(self.failed(match self.matcher.get_error() {
                Some(e) => e,
                None => format!("{r:?}"),
            }))
        }
    }

    /// While steering with no candidate allowed: the first token of the
    /// shortest run of plain characters after which one is (see
    /// `closing::path_to`).
    fn path_to_candidate(&mut self, words: &[u32]) -> Option<u32> {
        let state = self.json.as_ref()?;
        let trie = self.env.tok_trie();
        let targets = closing::candidate_ids(state, trie);
        let allowed = |t: u32| (t as usize) < self.n_vocab && words[t as usize / 32] >> (t % 32) & 1 == 1;
        let alphabet: Vec<u32> = closing::alphabet(trie);
        if !alphabet.iter().any(|&a| allowed(a)) {
            return None;
        }
        let m = &mut self.matcher;
        closing::path_to(&targets, &alphabet, |t| m.validate_tokens(t).unwrap_or(0))
    }

    /// `tokens_left` tokens may still be drawn after the one the next mask
    /// is for: when that is no more than JSON needs to close (see
    /// `closing::reserve`), steer the output to its end.
    pub fn budget(&mut self, tokens_left: usize, max_tokens: usize) {
        if self.json.is_some() && tokens_left < closing::reserve(max_tokens) {
            self.stats.steered = true;
        }
    }

    /// Nothing may follow what was generated.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    fn failed(&self, msg: String) -> Error {
        Error::InvalidRequest(format!("the output constraint failed: {msg}"))
    }
}
