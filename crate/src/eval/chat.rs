//! A chat turn as a prompt: one user message (after an optional system message) rendered with the model's chat
//! template, as
//! transformers' `apply_chat_template(…, add_generation_prompt=True)` renders it: Jinja with `trim_blocks` and
//! `lstrip_blocks`, loop controls, `tojson`, `raise_exception`, Python's string methods, and the tokenizer's
//! `bos_token` / `eos_token` text.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{context, Environment, ErrorKind, Value};
use serde_json::{json, Value as Json};

use crate::error::{Error, Result};
use crate::io::side_files::{chat_template, special_token, SideFile};

/// The prompt text the chat template in a model's side files makes of `system` and `user`, ending where the
/// assistant's answer starts. `model` names the model in errors.
pub fn chat_prompt(
    side_files: &[SideFile],
    system: Option<&str>,
    user: &str,
    model: &str,
) -> Result<String> {
    if user.is_empty() {
        return Err(Error::Text(
            "the chat message is empty: give a message".into(),
        ));
    }
    let template = chat_template(side_files)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{model} has no chat template (chat_template.jinja, tokenizer_config.json or the GGUF's \
             tokenizer.chat_template): give the whole prompt as text instead"
        ))
    })?;
    let bad =
        |e: minijinja::Error| Error::Invalid(format!("the chat template of {model} fails: {e:#}"));
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(bad)?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    let messages: Vec<Json> = system
        .map(|s| json!({"role": "system", "content": s}))
        .into_iter()
        .chain([json!({"role": "user", "content": user})])
        .collect();
    let (bos_token, eos_token) = (
        special_token(side_files, "bos_token")?,
        special_token(side_files, "eos_token")?,
    );
    env.template_from_str(&template)
        .map_err(bad)?
        .render(context! { messages => Value::from(Serde(messages)), add_generation_prompt => true, bos_token, eos_token })
        .map_err(bad)
}
