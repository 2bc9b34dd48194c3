//! `prunelab train --recipe RECIPE --text TRAIN --heldout HELDOUT --out DIR`: trains a BPE tokenizer and a
//! LLaMA-family model from scratch (the built-in demo model), evaluates it against a unigram baseline on the
//! held-out text, and writes an HF folder with `train-report.json`.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use web_time::Instant;

use super::files::{read, read_text};
use super::output::{write_model, Extras, Format, ModelWeights, Target};
use super::progress::Bars;
use super::run_on::{run_on, BackendJob};
use crate::backend::{BackendKind, Precision};
use crate::error::{parse_json, Error, Result};
use crate::eval::perplexity::windows;
use crate::eval::{perplexity, Perplexity, PerplexityOptions};
use crate::io::gguf::GgufDtype;
use crate::io::safetensors_out::StDtype;
use crate::model::footprint::Footprint;
use crate::model::params::count_params;
use crate::model::random::RandomWeights;
use crate::model::{Llama, ModelConfig};
use crate::train::bpe::{train_bpe, END_OF_TEXT};
use crate::train::unigram::unigram_perplexity;
use crate::train::{train, Schedule, StepLog};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training recipe (JSON): model config, vocabulary size, schedule, evaluation.
    #[arg(long)]
    recipe: PathBuf,
    /// Training text.
    #[arg(long)]
    text: PathBuf,
    /// Held-out text (never trained on): perplexity of the model and of the unigram baseline.
    #[arg(long)]
    heldout: PathBuf,
    /// Output HF folder (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Override the recipe's number of steps (e.g. a quick trial).
    #[arg(long)]
    steps: Option<usize>,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRecipe {
    /// An HF `config.json` (LLaMA family); its `vocab_size` is set from the trained tokenizer.
    pub model: Json,
    pub vocab_size: usize,
    /// Standard deviation of the initial weights.
    pub init_std: f64,
    pub schedule: Schedule,
    /// Held-out evaluation: window length and at most this many windows.
    pub eval_seq_len: usize,
    pub eval_windows: Option<usize>,
}

/// `train-report.json`.
#[derive(Debug, Serialize)]
struct TrainReport {
    recipe: TrainRecipe,
    parameters: usize,
    train_tokens: usize,
    heldout: Perplexity,
    unigram_ppl: f64,
    seconds_tokenizer: f64,
    seconds_training: f64,
    tokens_per_second: f64,
    threads: usize,
    backend: String,
    /// Loss of every step.
    log: Vec<StepLog>,
}

struct TrainJob<'a> {
    cfg: &'a ModelConfig,
    recipe: &'a TrainRecipe,
    train_ids: &'a [u32],
    heldout_ids: &'a [u32],
    unigram_ppl: f64,
    seconds_tokenizer: f64,
    backend: String,
    target: Target<'a>,
    extras: Extras,
}

impl BackendJob for TrainJob<'_> {
    type Output = (Perplexity, f64);
    fn footprints(&self, _precision: Precision) -> Vec<Footprint> {
        let s = &self.recipe.schedule;
        vec![
            Footprint::forward(self.cfg, "training", s.batch, s.seq_len),
            eval_options(self.recipe).footprint(self.cfg, self.heldout_ids.len()),
        ]
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let init = RandomWeights::new(self.cfg, self.recipe.schedule.seed, self.recipe.init_std);
        let model = Llama::<B>::load(self.cfg, &init, &device)?;
        let bars = Bars::default();
        let start = Instant::now();
        let (model, log) = pollster::block_on(train(
            model,
            self.train_ids,
            &self.recipe.schedule,
            &device,
            &bars,
        ))?;
        let seconds = start.elapsed().as_secs_f64();
        let model = model.into_valid();
        let opts = eval_options(self.recipe);
        let heldout =
            pollster::block_on(perplexity(&model, self.heldout_ids, &opts, &device, &bars))?;
        let s = &self.recipe.schedule;
        let report = TrainReport {
            recipe: self.recipe.clone(),
            parameters: count_params(self.cfg).total,
            train_tokens: self.train_ids.len(),
            heldout: heldout.clone(),
            unigram_ppl: self.unigram_ppl,
            seconds_tokenizer: self.seconds_tokenizer,
            seconds_training: seconds,
            tokens_per_second: (s.steps * s.batch * s.seq_len) as f64 / seconds,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: self.backend,
            log,
        };
        let mut extras = self.extras;
        extras.files.push((
            "train-report.json".into(),
            serde_json::to_vec_pretty(&report).expect("serialisable report"),
        ));
        write_model(
            &self.target,
            self.cfg,
            &ModelWeights::of(&model),
            &extras,
            &bars,
        )?;
        Ok((heldout, seconds))
    }
}

fn eval_options(recipe: &TrainRecipe) -> PerplexityOptions {
    PerplexityOptions {
        seq_len: recipe.eval_seq_len,
        max_windows: recipe.eval_windows,
        batch: 8,
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let kind = BackendKind::parse(&args.backend)?;
    if args.out.exists() {
        return Err(Error::Invalid(format!(
            "{} exists: choose a new output folder",
            args.out.display()
        )));
    }
    let mut recipe: TrainRecipe =
        parse_json(&read(&args.recipe)?, &args.recipe.display().to_string())?;
    if let Some(steps) = args.steps {
        recipe.schedule.steps = steps;
        recipe.schedule.warmup = recipe.schedule.warmup.min(steps);
    }
    let std = recipe.init_std;
    if !(std > 0.0 && std.is_finite()) {
        return Err(Error::Invalid(format!(
            "init_std {std} must be a finite number > 0"
        )));
    }
    let text = read_text(&args.text)?;
    let heldout_text = read_text(&args.heldout)?;
    if heldout_text.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{} is empty",
            args.heldout.display()
        )));
    }
    let start = Instant::now();
    let tokenizer = train_bpe(&[text.as_str()], recipe.vocab_size)?;
    let seconds_tokenizer = start.elapsed().as_secs_f64();
    let vocab = tokenizer.vocab_size();
    let (train_ids, heldout_ids) = (tokenizer.encode(&text)?, tokenizer.encode(&heldout_text)?);
    let mut model = recipe.model.clone();
    let eot = tokenizer.inner().token_to_id(END_OF_TEXT);
    let fields = model.as_object_mut().ok_or_else(|| Error::Json {
        what: "the recipe's model".into(),
        message: "expected an HF config object".into(),
    })?;
    fields.insert("vocab_size".into(), vocab.into());
    fields.insert("bos_token_id".into(), eot.into());
    fields.insert("eos_token_id".into(), eot.into());
    let cfg = ModelConfig::from_json(&serde_json::to_vec(&model).expect("json"))?;
    let opts = eval_options(&recipe);
    let unigram_ppl = unigram_perplexity(&train_ids, vocab, &windows(&heldout_ids, &opts)?);
    note!(
        "tokenizer: {vocab} entries in {seconds_tokenizer:.1} s; {} training tokens, {} held-out; model: {} parameters",
        train_ids.len(),
        heldout_ids.len(),
        count_params(&cfg).total
    );
    let job = TrainJob {
        cfg: &cfg,
        recipe: &recipe,
        train_ids: &train_ids,
        heldout_ids: &heldout_ids,
        unigram_ppl,
        seconds_tokenizer,
        backend: args.backend.clone(),
        target: Target {
            out: &args.out,
            format: Format::Hf,
            hf_dtype: StDtype::F32,
            gguf_dtype: GgufDtype::F32,
        },
        extras: Extras {
            base_config: Some(model),
            tokenizer_json: Some(
                serde_json::from_str(&tokenizer.inner().to_string(false).map_err(|e| {
                    Error::Invalid(format!("the tokenizer does not serialise: {e}"))
                })?)
                .expect("tokenizers writes JSON"),
            ),
            gguf_metadata: vec![],
            side_files: vec![],
            files: vec![],
        },
    };
    let (heldout, seconds) = run_on(kind, Precision::F32, job)?;
    say!(
        "trained in {seconds:.0} s; held-out perplexity {:.3} ({} tokens) vs unigram {:.3} ({:.1}x lower)",
        heldout.ppl,
        heldout.tokens,
        unigram_ppl,
        unigram_ppl / heldout.ppl
    )?;
    say!("wrote {}", args.out.display())?;
    Ok(())
}
