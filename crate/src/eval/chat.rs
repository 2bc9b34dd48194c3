//! A conversation as a prompt: its messages (an optional system message, then user and assistant turns, ending
//! with the user's) rendered with the model's chat template, as transformers' `apply_chat_template(…,
//! add_generation_prompt=True)` renders them: Jinja with `trim_blocks` and `lstrip_blocks`, loop controls,
//! `tojson`, `raise_exception`, Python's string methods, and the tokenizer's `bos_token` / `eos_token` text.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{context, Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::side_files::{chat_template, special_token, SideFile};

/// One message of a conversation: `role` `system`, `user` or `assistant`, and its text (JSON `{"role", "content"}`,
/// as transformers takes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The messages of a turn: `system` (if any), then `user`.
pub fn turn(system: Option<&str>, user: &str) -> Vec<ChatMessage> {
    system
        .map(|s| ChatMessage::new("system", s))
        .into_iter()
        .chain([ChatMessage::new("user", user)])
        .collect()
}

/// Refuses a conversation a model cannot answer: no messages, a role other than `system` (first only), `user`
/// and `assistant`, or a last message that is not a non-empty one of the user's.
fn check(messages: &[ChatMessage]) -> Result<()> {
    for (i, m) in messages.iter().enumerate() {
        let allowed = match i {
            0 => ["system", "user", "assistant"].as_slice(),
            _ => ["user", "assistant"].as_slice(),
        };
        if !allowed.contains(&m.role.as_str()) {
            return Err(Error::Invalid(format!(
                "chat message {}: role {:?} (expected {}; a system message comes first)",
                i + 1,
                m.role,
                allowed.join(", ")
            )));
        }
    }
    match messages.last() {
        Some(m) if m.role == "user" && !m.content.is_empty() => Ok(()),
        Some(m) if m.role == "user" => Err(Error::Text(
            "the chat message is empty: give a message".into(),
        )),
        _ => Err(Error::Invalid(
            "a conversation ends with the user's message, which the model answers".into(),
        )),
    }
}

/// The prompt text the chat template in a model's side files makes of `messages`, ending where the assistant's
/// answer starts. `model` names the model in errors.
pub fn chat_prompt(
    side_files: &[SideFile],
    messages: &[ChatMessage],
    model: &str,
) -> Result<String> {
    check(messages)?;
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
    let (bos_token, eos_token) = (
        special_token(side_files, "bos_token")?,
        special_token(side_files, "eos_token")?,
    );
    env.template_from_str(&template)
        .map_err(bad)?
        .render(context! { messages => Value::from(Serde(messages)), add_generation_prompt => true, bos_token, eos_token })
        .map_err(bad)
}
