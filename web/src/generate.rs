//! "Try the model": a continuation of a text, or the answer to a conversation put into the model's chat template,
//! from the loaded model or a run's pruned one, greedy or sampled, handed to the page token by token. The same
//! core `Decoder` and chat rendering as the CLI's `generate`, so the page and the CLI give the same tokens.

use burn::tensor::backend::Backend;
use prunelab::error::{parse_json, Error, Result};
use prunelab::eval::chat::{chat_prompt, ChatMessage};
use prunelab::eval::generate::Decoder;
use prunelab::eval::sampling::{Chooser, Sampling};
use prunelab::io::side_files::stop_ids;
use prunelab::io::Tokenizer;
use prunelab::model::footprint::Footprint;
use prunelab::model::Llama;
use prunelab::progress::{Progress, ProgressEvent};
use serde::Deserialize;
use wasm_bindgen::JsValue;
use web_time::Instant;

use crate::files::ModelFiles;
use crate::host::JsProgress;

/// What the page asks for (JSON): a `text` to continue or `messages` to answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The text to continue, as it is.
    #[serde(default)]
    pub text: Option<String>,
    /// A conversation ending with the user's message, put into the model's chat template with the assistant's
    /// turn opened.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Most tokens to generate; fewer when the model ends the text or the page says stop.
    pub max_tokens: usize,
    /// `None`: greedy decoding.
    #[serde(default)]
    pub sampling: Option<Sampling>,
}

/// The page's sink for the text so far: `on_text(text, tokens)` after every token.
pub struct OnText(pub js_sys::Function);

impl OnText {
    fn send(&self, text: &str, tokens: usize) {
        let _ = self
            .0
            .call2(&JsValue::NULL, &text.into(), &(tokens as u32).into());
    }
}

/// Generates for `request` with `model` (its weights), whose tokenizer, chat template and end-of-text ids are
/// those of `input` (the loaded model; a pruned model keeps them). Resolves to JSON: the prompt's token count,
/// the generated ids and text, the rendered chat prompt, why it ended (`eos`, `length` or `stopped`) and the
/// decoding speed.
pub async fn generate(
    input: &ModelFiles,
    model: &ModelFiles,
    request: &str,
    gpu: bool,
    on_text: &OnText,
    progress: &JsProgress,
) -> Result<String> {
    let req: Request = parse_json(request.as_bytes(), "the generation request")?;
    if req.max_tokens == 0 {
        return Err(Error::Invalid(
            "the number of tokens to generate must be at least 1".into(),
        ));
    }
    let chooser = match req.sampling {
        Some(s) => Chooser::sample(s)?,
        None => Chooser::Greedy,
    };
    let tokenizer = input.tokenizer.as_deref().ok_or_else(|| {
        Error::Tokenizer("the model has no tokenizer.json: texts cannot be tokenized".into())
    })?;
    let tok = Tokenizer::from_json(tokenizer)?;
    let chat = match &req.messages {
        Some(m) => Some(chat_prompt(&input.side_files, m, "the model")?),
        None => None,
    };
    let prompt = match (&req.text, &chat) {
        (Some(text), None) => tok.encode(text)?,
        (None, Some(chat)) => tok.encode(chat)?,
        _ => {
            return Err(Error::Invalid(
                "give a text to continue or chat messages to answer (one of the two)".into(),
            ))
        }
    };
    let stop = stop_ids(&input.config, input.base_config.as_ref(), &input.side_files)?;
    let job = Job {
        model,
        prompt: &prompt,
        max_tokens: req.max_tokens,
        stop: &stop,
        tok: &tok,
        on_text,
        progress,
    };
    Footprint::forward(&model.config, "the prompt", 1, prompt.len())
        .check(&crate::run::device_limit(gpu))?;
    let out = match gpu {
        true => {
            job.run::<prunelab::backend::Wgpu>(Default::default(), chooser)
                .await?
        }
        false => {
            job.run::<prunelab::backend::Cpu>(Default::default(), chooser)
                .await?
        }
    };
    let steps = out.ids.len() - 1;
    Ok(serde_json::json!({
        "prompt_tokens": prompt.len(),
        "chat_prompt": chat,
        "ids": out.ids,
        "text": tok.decode(&out.ids)?,
        "finish_reason": out.finish_reason,
        "load_seconds": out.load_seconds,
        "prefill_seconds": out.prefill_seconds,
        "decode_seconds": out.decode_seconds,
        "decode_tokens_per_second": (steps > 0).then(|| steps as f64 / out.decode_seconds),
        "sampling": req.sampling,
    })
    .to_string())
}

struct Job<'a> {
    model: &'a ModelFiles,
    prompt: &'a [u32],
    max_tokens: usize,
    stop: &'a [u32],
    tok: &'a Tokenizer,
    on_text: &'a OnText,
    progress: &'a JsProgress,
}

struct Generated {
    ids: Vec<u32>,
    finish_reason: &'static str,
    load_seconds: f64,
    prefill_seconds: f64,
    decode_seconds: f64,
}

impl Job<'_> {
    /// Loads the model on `B`, runs the prompt, then one token at a time, with a turn for the page (its Stop)
    /// between tokens.
    async fn run<B: Backend>(self, device: B::Device, chooser: Chooser) -> Result<Generated> {
        let start = Instant::now();
        let cfg = &self.model.config;
        let model = self
            .model
            .with_source(|src| Llama::<B>::load(cfg, src, &device))?;
        let load_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut decoder = Decoder::start(&model, self.prompt, chooser, &device).await?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let mut ids = vec![decoder.next_token()];
        let start = Instant::now();
        let mut finish_reason = "length";
        loop {
            self.on_text.send(&self.tok.decode(&ids)?, ids.len());
            self.progress
                .report(ProgressEvent::new("generate", ids.len(), self.max_tokens));
            if decoder.stopped(self.stop) {
                finish_reason = "eos";
                break;
            }
            if ids.len() == self.max_tokens {
                break;
            }
            if self.progress.turn().await {
                finish_reason = "stopped";
                break;
            }
            ids.push(decoder.step().await?);
        }
        Ok(Generated {
            ids,
            finish_reason,
            load_seconds,
            prefill_seconds,
            decode_seconds: start.elapsed().as_secs_f64(),
        })
    }
}
