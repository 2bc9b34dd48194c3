//! `prunelab eval MODEL --text FILE | --ids FILE.json [--seq-len 128] [--max-windows N] [--batch B]
//! [--backend cpu|wgpu|cuda] [--json]`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use super::files::{read, read_text, ModelInput};
use super::progress::Bars;
use super::run_on::{run_on, BackendJob};
use crate::backend::{BackendKind, Precision};
use crate::error::{Error, Result};
use crate::eval::{perplexity, Perplexity, PerplexityOptions};
use crate::io::tokenizer::ids_from_json;
use crate::model::Llama;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// HF model folder (config.json + *.safetensors, tokenizer.json for --text) or a .gguf file.
    model: PathBuf,
    /// Text to evaluate, tokenized with the model's tokenizer (no special tokens).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    text: Option<PathBuf>,
    /// Pre-tokenized input: JSON `[id, …]` or `[[id, …], …]` (windows are concatenated).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Tokens per window.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Evaluate only the first N windows.
    #[arg(long)]
    max_windows: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Print one JSON object (ppl, mean_nll, tokens, windows, seconds, backend).
    #[arg(long)]
    json: bool,
}

struct EvalJob<'a> {
    input: &'a ModelInput,
    ids: Vec<u32>,
    opts: PerplexityOptions,
}

impl BackendJob for EvalJob<'_> {
    type Output = Perplexity;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Perplexity> {
        let model = self
            .input
            .with_weights(|w| Llama::<B::InnerBackend>::load(&self.input.config, w, &device))?;
        pollster::block_on(perplexity(
            &model,
            &self.ids,
            &self.opts,
            &device,
            &Bars::default(),
        ))
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let kind = BackendKind::parse(&args.backend)?;
    let input = ModelInput::open(&args.model)?;
    let ids = match (&args.text, &args.ids) {
        (Some(text), _) => {
            let tok = input.tokenizer()?.ok_or_else(|| {
                Error::Tokenizer(format!(
                    "{} has no tokenizer.json; pass pre-tokenized input with --ids",
                    args.model.display()
                ))
            })?;
            tok.encode(&read_text(text)?)?
        }
        (None, Some(ids)) => ids_from_json(&read(ids)?, &ids.display().to_string())?,
        (None, None) => unreachable!("clap requires --text or --ids"),
    };
    let opts = PerplexityOptions {
        seq_len: args.seq_len,
        max_windows: args.max_windows,
        batch: args.batch,
    };
    let start = Instant::now();
    let result = run_on(
        kind,
        Precision::F32,
        EvalJob {
            input: &input,
            ids,
            opts,
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&result).expect("serialisable");
        v["seconds"] = seconds.into();
        v["backend"] = kind.name().into();
        v["seq_len"] = args.seq_len.into();
        println!("{v}");
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.6}) over {} tokens in {} windows of {} · {:.2} s on {}",
            result.ppl,
            result.mean_nll,
            result.tokens,
            result.windows,
            args.seq_len,
            seconds,
            kind.name()
        );
    }
    Ok(())
}
