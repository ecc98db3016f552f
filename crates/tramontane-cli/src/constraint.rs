//! `--json-schema FILE`, `--json-object`, `--grammar FILE`, `--regex RX`,
//! `--tool-choice`: what `run` (and `bench`) constrain the output to.

use clap::Args;
use serde_json::Value;
use tramontane::{Constraint, Error, Result, ToolChoice, ToolConstraint};

#[derive(Args, Default)]
pub struct ConstraintArgs {
    /// The output is a JSON value valid for this JSON Schema (a file, read verbatim).
    #[arg(long, value_name = "FILE", group = "output_format")]
    pub json_schema: Option<String>,
    /// The output is a JSON object.
    #[arg(long, group = "output_format")]
    pub json_object: bool,
    /// The output follows this grammar, in llguidance's Lark syntax (a file, read verbatim).
    #[arg(long, value_name = "FILE", group = "output_format")]
    pub grammar: Option<String>,
    /// The whole output matches this regex.
    #[arg(long, value_name = "REGEX", group = "output_format")]
    pub regex: Option<String>,
    /// With tools: `auto` (text or calls; a call must be valid), `required`
    /// (at least one call), `none`, or a function's name (that call).
    #[arg(long, value_name = "CHOICE")]
    pub tool_choice: Option<String>,
}

fn read(path: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io { file: path.to_string(), msg: e.to_string() })?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidRequest(format!("{path}: not UTF-8 text")))
}

impl ConstraintArgs {
    /// The answer's format, if one was given.
    pub fn format(&self) -> Result<Option<Constraint>> {
        Ok(if let Some(f) = &self.json_schema {
            let text = read(f)?;
            let schema: Value = serde_json::from_str(&text).map_err(|e| Error::InvalidRequest(format!("{f}: not valid JSON: {e}")))?;
            Some(Constraint::JsonSchema(schema))
        } else if self.json_object {
            Some(Constraint::JsonObject)
        } else if let Some(f) = &self.grammar {
            Some(Constraint::Lark(read(f)?))
        } else {
            self.regex.as_ref().map(|r| Constraint::Regex(r.clone()))
        })
    }

    /// `--tool-choice`: `None` for `none`.
    pub fn choice(&self) -> Option<ToolChoice> {
        match self.tool_choice.as_deref() {
            None | Some("auto") => Some(ToolChoice::Auto),
            Some("required") => Some(ToolChoice::Required),
            Some("none") => None,
            Some(name) => Some(ToolChoice::Named(name.to_string())),
        }
    }

    /// The constraint of a request offering `tools` (see
    /// `tramontane::openai::request_constraint`).
    pub fn constraint(&self, tools: Option<&[Value]>) -> Result<Option<Constraint>> {
        let format = self.format()?;
        match (tools.filter(|t| !t.is_empty()), self.choice()) {
            (Some(t), Some(choice)) => {
                let content = if choice == ToolChoice::Auto { format.map(Box::new) } else { None };
                Ok(Some(Constraint::Tools(ToolConstraint { tools: t.to_vec(), choice, parallel: true, content })))
            }
            (None, Some(ToolChoice::Required | ToolChoice::Named(_))) => Err(Error::InvalidRequest("--tool-choice needs tools (--tools or --messages with tools)".into())),
            _ => Ok(format),
        }
    }
}
