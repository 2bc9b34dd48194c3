//! `prunelab generate MODEL --prompt TEXT | --prompt-ids FILE.json | --chat TEXT [--system TEXT] | --messages FILE.json
//! [--tokens 32] [--ignore-eos]
//! [--temperature T [--top-k K] [--top-p P] [--seed S]] [--backend cpu|wgpu|cuda] [--precision f32|bf16] [--json]`:
//! a greedy (or sampled) continuation, and how fast the model decodes it.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::Serialize;

use super::files::{read, read_ids, ModelInput};
use super::run_on::{run_on, BackendJob, DeviceArgs};
use crate::backend::Precision;
use crate::error::{parse_json, Error, Result};
use crate::eval::chat::{chat_prompt, turn, ChatMessage};
use crate::eval::generate::Decoder;
use crate::eval::sampling::{Chooser, Sampling};
use crate::model::footprint::Footprint;
use crate::model::resident::Resident;
use crate::model::Llama;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// HF model folder (config.json + *.safetensors, tokenizer.json for --prompt) or a .gguf file.
    model: PathBuf,
    /// Prompt text, tokenized with the model's tokenizer (special tokens written in it are matched; none added).
    #[arg(
        long,
        conflicts_with_all = ["prompt_ids", "chat"],
        required_unless_present_any = ["prompt_ids", "chat", "messages"]
    )]
    prompt: Option<String>,
    /// Pre-tokenized prompt: JSON `[id, …]`.
    #[arg(long, conflicts_with = "chat")]
    prompt_ids: Option<PathBuf>,
    /// A user message, put into the model's chat template (with the assistant's turn opened) to make the prompt.
    #[arg(long)]
    chat: Option<String>,
    /// A system message before `--chat`'s user message.
    #[arg(long)]
    system: Option<String>,
    /// A conversation to answer: JSON `[{"role": "system" | "user" | "assistant", "content": TEXT}, …]` ending
    /// with the user's message, put into the model's chat template (with the assistant's turn opened).
    #[arg(long, conflicts_with_all = ["prompt", "prompt_ids", "chat", "system"])]
    messages: Option<PathBuf>,
    /// Most tokens to generate; fewer when the model ends the text (an `eos_token_id` of `config.json` or
    /// `generation_config.json`, or a GGUF's end-of-sequence/turn/message token).
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Generate exactly `--tokens` tokens, past end-of-text (for timing).
    #[arg(long)]
    ignore_eos: bool,
    /// Sample from the softmax at this temperature instead of decoding greedily.
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, requires = "temperature", default_value_t = 0)]
    top_k: usize,
    /// Sample only among the fewest most likely tokens whose probability reaches P (1: all).
    #[arg(long, requires = "temperature", default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampling: the same seed gives the same continuation.
    #[arg(long, requires = "temperature", default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object (ids, text, prompt and decode times, tokens per second).
    #[arg(long)]
    json: bool,
}

/// A continuation and the time it took. Decoding is timed apart from the prompt: each of its steps runs one
/// position through every layer (batch 1), which is what removing layers or channels speeds up.
#[derive(Debug, Serialize)]
struct Generated {
    prompt_tokens: usize,
    ids: Vec<u32>,
    /// Seconds to run the prompt and choose the first token.
    prefill_seconds: f64,
    /// Seconds for the remaining `ids.len() − 1` tokens, one forward of one position each.
    decode_seconds: f64,
    decode_tokens_per_second: Option<f64>,
    /// `eos` when the last token ends the text, `length` when `--tokens` were generated.
    finish_reason: &'static str,
    /// The sampling settings; `None` for greedy decoding.
    sampling: Option<Sampling>,
}

struct GenerateJob<'a> {
    input: &'a ModelInput,
    prompt: Vec<u32>,
    tokens: usize,
    /// End-of-text ids (empty with `--ignore-eos`).
    stop: Vec<u32>,
    sampling: Option<Sampling>,
}

impl BackendJob for GenerateJob<'_> {
    type Output = Generated;
    /// The prompt's forward (each later step runs one token over the cache).
    fn footprints(&self, _precision: Precision) -> Vec<Footprint> {
        let prompt = self.prompt.len();
        vec![Footprint::forward(
            &self.input.config,
            "the prompt",
            1,
            prompt,
        )]
    }
    fn resident(&self, precision: Precision) -> Option<Resident> {
        let remedy = "use --precision bf16 (half), or a machine with more memory";
        Some(Resident::of(
            &self.input.config,
            "generation",
            precision,
            false,
            remedy,
        ))
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Generated> {
        let model = self
            .input
            .with_weights(|w| Llama::<B::InnerBackend>::load(&self.input.config, w, &device))?;
        let start = Instant::now();
        let chooser = match self.sampling {
            Some(s) => Chooser::sample(s)?,
            None => Chooser::Greedy,
        };
        let mut decoder =
            pollster::block_on(Decoder::start(&model, &self.prompt, chooser, &device))?;
        let prefill_seconds = start.elapsed().as_secs_f64();
        let mut ids = vec![decoder.next_token()];
        let start = Instant::now();
        while ids.len() < self.tokens && !decoder.stopped(&self.stop) {
            ids.push(pollster::block_on(decoder.step())?);
        }
        let decode_seconds = start.elapsed().as_secs_f64();
        let steps = ids.len() - 1;
        Ok(Generated {
            prompt_tokens: self.prompt.len(),
            ids,
            prefill_seconds,
            decode_seconds,
            decode_tokens_per_second: (steps > 0).then(|| steps as f64 / decode_seconds),
            finish_reason: match decoder.stopped(&self.stop) {
                true => "eos",
                false => "length",
            },
            sampling: self.sampling,
        })
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let (kind, precision) = args.device.parse()?;
    if args.tokens == 0 {
        return Err(Error::Invalid("--tokens must be at least 1".into()));
    }
    let sampling = args.temperature.map(|temperature| Sampling {
        temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    });
    if let Some(s) = &sampling {
        s.check()?;
    }
    let input = ModelInput::open(&args.model)?;
    let tokenizer = input.tokenizer()?;
    if args.system.is_some() && args.chat.is_none() {
        return Err(Error::Invalid(
            "--system goes with --chat (a system message before the user's)".into(),
        ));
    }
    let messages = match (&args.chat, &args.messages) {
        (Some(user), _) => Some(turn(args.system.as_deref(), user)),
        (None, Some(path)) => Some(parse_json::<Vec<ChatMessage>>(
            &read(path)?,
            &path.display().to_string(),
        )?),
        (None, None) => None,
    };
    let chat_text = match &messages {
        Some(m) => Some(chat_prompt(
            &input.side_files()?,
            m,
            &args.model.display().to_string(),
        )?),
        None => None,
    };
    let prompt = match (
        chat_text.as_ref().or(args.prompt.as_ref()),
        &args.prompt_ids,
    ) {
        (Some(text), _) if text.is_empty() => {
            return Err(Error::Text(
                "--prompt is empty: give text to continue".into(),
            ))
        }
        (Some(text), _) => tokenizer
            .as_ref()
            .ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{} has no tokenizer; pass a pre-tokenized prompt with --prompt-ids",
                    args.model.display()
                ))
            })?
            .encode(text)?,
        (None, Some(ids)) => read_ids(ids, input.config.vocab_size)?,
        (None, None) => unreachable!("clap requires --prompt, --prompt-ids, --chat or --messages"),
    };
    let out = run_on(
        kind,
        precision,
        GenerateJob {
            input: &input,
            prompt,
            tokens: args.tokens,
            stop: match args.ignore_eos {
                true => vec![],
                false => input.stop_ids()?,
            },
            sampling,
        },
    )?;
    let text = match &tokenizer {
        Some(t) => Some(t.decode(&out.ids)?),
        None => None,
    };
    let speed = match out.decode_tokens_per_second {
        Some(s) => format!(
            "decode {} tokens {:.3} s = {s:.1} tokens/s",
            out.ids.len() - 1,
            out.decode_seconds
        ),
        None => "no decode step".into(),
    };
    if args.json {
        let mut v = serde_json::to_value(&out).expect("serialisable");
        v["text"] = text.into();
        v["backend"] = kind.name().into();
        v["precision"] = serde_json::to_value(precision).expect("serialisable");
        v["chat_prompt"] = chat_text.into();
        say!("{v}")?;
    } else {
        match &text {
            Some(t) => say!("{}{t}", args.prompt.as_deref().unwrap_or_default()),
            None => say!("{:?}", out.ids),
        }?;
        note!(
            "prompt {} tokens {:.3} s · {speed} on {}{}",
            out.prompt_tokens,
            out.prefill_seconds,
            kind.name(),
            match out.finish_reason {
                "eos" => " · stopped at end-of-text",
                _ => "",
            }
        );
    }
    Ok(())
}
