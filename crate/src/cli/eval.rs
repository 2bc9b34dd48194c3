//! `prunelab eval MODEL --text FILE | --ids FILE.json | --tasks FILE.jsonl [--seq-len 128] [--max-windows N]
//! [--max-items N] [--batch B] [--backend cpu|wgpu|cuda] [--stream] [--json]`: perplexity, or multiple-choice
//! accuracy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::{ArgGroup, Args};

use super::files::{read, read_ids, read_text, ModelInput};
use super::progress::Bars;
use super::run_on::{run_on, BackendJob};
use crate::backend::{BackendKind, Precision};
use crate::error::{Error, Result};
use crate::eval::choice::{parse_items, ChoiceBatches, ChoiceScores};
use crate::eval::streamed::{streamed_perplexity, streamed_resident};
use crate::eval::{perplexity, ChoiceOptions, Perplexity, PerplexityOptions};
use crate::io::tokenizer::Tokenizer;
use crate::model::footprint::Footprint;
use crate::model::resident::Resident;
use crate::model::Llama;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "ids", "tasks"])))]
pub struct EvalArgs {
    /// HF model folder (config.json + *.safetensors, tokenizer.json for --text / --tasks) or a .gguf file.
    model: PathBuf,
    /// Text to evaluate, tokenized with the model's tokenizer (no special tokens).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Pre-tokenized input: JSON `[id, …]` or `[[id, …], …]` (windows are concatenated).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// A multiple-choice task instead of perplexity: JSON lines `{"context": …, "choices": […], "gold": i}`,
    /// scored as lm-evaluation-harness does (acc, acc_norm).
    #[arg(long)]
    tasks: Option<PathBuf>,
    /// Score only the first N items of --tasks.
    #[arg(long, conflicts_with_all = ["text", "ids"])]
    max_items: Option<usize>,
    /// Tokens per window (perplexity; a task scores whole items, see --max-items).
    #[arg(long, default_value_t = 128, conflicts_with = "tasks")]
    seq_len: usize,
    /// Evaluate only the first N windows (perplexity; for a task, --max-items).
    #[arg(long, conflicts_with = "tasks")]
    max_windows: Option<usize>,
    /// Windows (or choices) per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Read the model one decoder layer at a time (peak memory ≈ embeddings and head, one layer and the
    /// windows' activations): the same perplexity, for models larger than memory.
    #[arg(long, conflicts_with = "tasks")]
    stream: bool,
    /// Print one JSON object (ppl, mean_nll, tokens, windows, seconds, backend; for --tasks acc, acc_norm,
    /// their standard errors, items, choices, tokens and every choice's log-likelihood).
    #[arg(long)]
    json: bool,
}

struct EvalJob<'a> {
    input: &'a ModelInput,
    ids: Vec<u32>,
    opts: PerplexityOptions,
    stream: bool,
}

impl BackendJob for EvalJob<'_> {
    type Output = Perplexity;
    fn footprints(&self, _precision: Precision) -> Vec<Footprint> {
        vec![self.opts.footprint(&self.input.config, self.ids.len())]
    }
    fn resident(&self, precision: Precision) -> Option<Resident> {
        let cfg = &self.input.config;
        Some(match self.stream {
            true => {
                let remedies = [
                    "evaluate on a machine with more memory",
                    "evaluate fewer windows (--max-windows), or on a machine with more memory",
                ];
                streamed_resident(cfg, &self.opts, self.ids.len(), precision, remedies)
            }
            false => {
                let remedy = "use --stream (one layer at a time)";
                Resident::of(cfg, "evaluation", precision, false, remedy)
            }
        })
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Perplexity> {
        let (cfg, bars) = (&self.input.config, Bars::default());
        self.input.with_weights(|w| match self.stream {
            true => streamed_perplexity::<B::InnerBackend>(
                w, cfg, &self.ids, &self.opts, &device, &bars,
            ),
            false => {
                let model = Llama::<B::InnerBackend>::load(cfg, w, &device)?;
                pollster::block_on(perplexity(&model, &self.ids, &self.opts, &device, &bars))
            }
        })
    }
}

struct ChoiceJob<'a> {
    input: &'a ModelInput,
    batches: ChoiceBatches,
}

impl BackendJob for ChoiceJob<'_> {
    type Output = ChoiceScores;
    fn footprints(&self, _precision: Precision) -> Vec<Footprint> {
        vec![self.batches.footprint(&self.input.config)]
    }
    fn resident(&self, precision: Precision) -> Option<Resident> {
        let remedy = "score the task on a machine with more memory";
        Some(Resident::of(
            &self.input.config,
            "task scoring",
            precision,
            false,
            remedy,
        ))
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<ChoiceScores> {
        let model = self
            .input
            .with_weights(|w| Llama::<B::InnerBackend>::load(&self.input.config, w, &device))?;
        pollster::block_on(self.batches.score(&model, &device, &Bars::default()))
    }
}

fn tokenizer(input: &ModelInput, args: &EvalArgs, instead: &str) -> Result<Tokenizer> {
    input.tokenizer()?.ok_or_else(|| {
        Error::Tokenizer(format!(
            "{} has no tokenizer.json{instead}",
            args.model.display()
        ))
    })
}

/// `--tasks`: scores every choice and prints the accuracy.
fn run_tasks(args: &EvalArgs, kind: BackendKind, input: &ModelInput, path: &Path) -> Result<()> {
    let items = parse_items(&read(path)?, &path.display().to_string())?;
    let opts = ChoiceOptions {
        batch: args.batch,
        max_items: args.max_items,
    };
    let tok = tokenizer(input, args, "")?;
    let batches = ChoiceBatches::new(&tok, &items, &opts, &input.config)?;
    let start = Instant::now();
    let scores = run_on(kind, Precision::F32, ChoiceJob { input, batches })?;
    let seconds = start.elapsed().as_secs_f64();
    let acc = scores.accuracy(&items[..scores.log_likelihoods.len()]);
    if args.json {
        let mut v = serde_json::to_value(&acc).expect("serialisable");
        v["log_likelihoods"] = serde_json::to_value(&scores.log_likelihoods).expect("serialisable");
        v["seconds"] = seconds.into();
        v["backend"] = kind.name().into();
        say!("{v}")?;
    } else {
        let stderr = |s: Option<f64>| s.map(|s| format!(" ± {:.4}", s)).unwrap_or_default();
        say!(
            "acc {:.4}{} · acc_norm {:.4}{} over {} items ({} choices, {} tokens scored) · {:.2} s on {}",
            acc.acc,
            stderr(acc.acc_stderr),
            acc.acc_norm,
            stderr(acc.acc_norm_stderr),
            acc.items,
            acc.choices,
            acc.tokens,
            seconds,
            kind.name()
        )?;
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let kind = BackendKind::parse(&args.backend)?;
    let input = ModelInput::open(&args.model)?;
    if let Some(path) = &args.tasks {
        return run_tasks(&args, kind, &input, path);
    }
    let ids = match (&args.text, &args.ids) {
        (Some(text), _) => tokenizer(&input, &args, "; pass pre-tokenized input with --ids")?
            .encode(&read_text(text)?)?,
        (None, Some(ids)) => read_ids(ids, input.config.vocab_size)?,
        (None, None) => unreachable!("clap requires --text, --ids or --tasks"),
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
            stream: args.stream,
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&result).expect("serialisable");
        v["seconds"] = seconds.into();
        v["backend"] = kind.name().into();
        v["seq_len"] = args.seq_len.into();
        say!("{v}")?;
    } else {
        say!(
            "perplexity {:.4} (mean NLL {:.6}) over {} tokens in {} windows of {} · {:.2} s on {}",
            result.ppl,
            result.mean_nll,
            result.tokens,
            result.windows,
            args.seq_len,
            seconds,
            kind.name()
        )?;
    }
    Ok(())
}
