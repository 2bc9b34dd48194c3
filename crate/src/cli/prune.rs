//! `prunelab prune MODEL --out PATH [...]`: score, allocate, slice, evaluate, and write the smaller model with its
//! `report.json`, `plan.json` and `recipe.json`.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::{ArgGroup, Args};
use web_time::Instant;

use super::convert::dtypes;
use super::files::{read, read_ids, read_text, ModelInput};
use super::output::{write_model, Extras, Format, ModelWeights, NamedFiles, Target};
use super::parse_enum;
use super::progress::Bars;
use super::run_on::{run_on, BackendJob, DeviceArgs};
use crate::backend::{BackendKind, Precision};
use crate::error::{parse_json, Error, Result};
use crate::eval::choice::{EncodedTask, Task};
use crate::eval::perplexity::check_ids;
use crate::eval::{perplexity, ChoiceAccuracy, Perplexity};
use crate::model::footprint::Footprint;
use crate::model::resident::Resident;
use crate::model::{Llama, ModelConfig};
use crate::prune::activations::pass_bytes;
use crate::prune::allocate::Allocation;
use crate::prune::calib::{calibration_footprint, sample_windows, CalibSource};
use crate::prune::compensate::Compensation;
use crate::prune::gradients::backward_peak_bytes;
use crate::prune::linalg::Linalg;
use crate::prune::pipeline::{apply_plan, prune};
use crate::prune::plan::Plan;
use crate::prune::recipe::{DepthFirst, EvalSpec, LayerRange, Recipe};
use crate::prune::report::{EvalReport, Report, StageTime, TasksReport};
use crate::prune::search::{uniform_candidate_params, SearchSettings};
use crate::prune::structure::{Aggregation, StructureKind};
use crate::prune::Importance;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("evaluation").args(["eval", "eval_ids"])))]
pub struct PruneArgs {
    /// HF model folder or .gguf file.
    model: PathBuf,
    /// Output: a new folder (hf) or file (gguf); with --plan-only, the plan file.
    #[arg(long)]
    out: PathBuf,
    /// Recipe JSON; the flags below override its fields.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// random, l1, l2, taylor-vector, taylor-first, taylor-second, taylor-mix, ntk, wanda-sp, flap, obs,
    /// numerical, block-influence, perplexity (whole layers only), adapruner.
    #[arg(long)]
    importance: Option<String>,
    /// uniform, global (needs --target-params), attn-mlp-ratio (with --gamma) or search (needs --target-params).
    #[arg(long)]
    allocation: Option<String>,
    /// attn-mlp-ratio: MLP pruned fraction = γ × attention pruned fraction.
    #[arg(long)]
    gamma: Option<f64>,
    /// search: candidates per generation (default 12).
    #[arg(long)]
    population: Option<usize>,
    /// search: generations bred after the first (default 6).
    #[arg(long)]
    generations: Option<usize>,
    /// search and adapruner: calibration windows each candidate's loss is measured on (default 4; adapruner
    /// holds them out of its pool).
    #[arg(long)]
    fitness_windows: Option<usize>,
    /// adapruner: trials (default 16).
    #[arg(long)]
    trials: Option<usize>,
    /// adapruner: blocks the calibration pool is split into, 1 to 6 (default 4).
    #[arg(long)]
    blocks: Option<usize>,
    /// adapruner: comma-separated scores to mix, the first alone being trial 0 (default
    /// taylor-first,taylor-vector,l2).
    #[arg(long)]
    mix: Option<String>,
    /// Comma-separated: kv-groups or query-heads (the same number from every KV group), mlp; or layers (whole
    /// decoder layers alone; with width, use --depth-ratio).
    #[arg(long)]
    structures: Option<String>,
    /// Fraction of each pruned layer's KV groups and MLP channels to remove (with layers: of the range's layers).
    #[arg(long)]
    ratio: Option<f64>,
    /// Remove this fraction of the range's layers whole first (repaired with --compensation), then narrow the
    /// layers that stay by --structures at --ratio or to --target-params (which counts both steps).
    #[arg(long)]
    depth_ratio: Option<f64>,
    /// The whole-layer score of --depth-ratio or of the recipe's depth step (default block-influence).
    #[arg(long)]
    depth_importance: Option<String>,
    /// Pruned layers START..END (default: LLM-Pruner's proportions, 4..30 of 32).
    #[arg(long)]
    layers: Option<String>,
    /// Fraction of all parameters to remove (the ratio is searched).
    #[arg(long)]
    target_params: Option<f64>,
    /// Calibration text (sampled: --calib-samples windows of --calib-len tokens).
    #[arg(long, conflicts_with = "calib_ids")]
    calib: Option<PathBuf>,
    /// Calibration windows as JSON [[ids…]…] (reproduces a published run exactly).
    #[arg(long)]
    calib_ids: Option<PathBuf>,
    /// Calibration windows sampled from --calib (default: the recipe's, else 32).
    #[arg(long, conflicts_with = "calib_ids")]
    calib_samples: Option<usize>,
    /// Tokens per calibration window sampled from --calib (default: the recipe's, else 128).
    #[arg(long, conflicts_with = "calib_ids")]
    calib_len: Option<usize>,
    /// Calibration windows run through each layer at a time by activation scores and repairs, through one
    /// backward by gradient scores, and through one forward by the search's and adapruner's losses (default: as
    /// many as keep one batch's MLP activations — for those losses also its logits — under 1 GiB; for a
    /// backward all, unless batches of about 4 GiB hold less; fewer hold less, the same results to rounding).
    #[arg(long)]
    calib_batch: Option<usize>,
    /// Seed of the calibration windows' offsets, the random score, the search's and adapruner's draws
    /// (default: the recipe's, else 42).
    #[arg(long)]
    seed: Option<u64>,
    /// Repair after removal: none, ls, bias, ls-bias (sequential pipeline unless none).
    #[arg(long)]
    compensation: Option<String>,
    /// Ridge of least squares / obs, as a fraction of mean(diag G) (default 0.01).
    #[arg(long)]
    ridge: Option<f64>,
    /// Where scores and compensation do their linear algebra: host-f64 (exact) or device (the backend's f32;
    /// default for --backend cuda, where the host would dominate a 7B run).
    #[arg(long)]
    linalg: Option<String>,
    /// `llm-pruner`: score GQA heads as the published code does (query head h → KV group h mod n_kv).
    #[arg(long)]
    compat: Option<String>,
    /// Output format (default: gguf for a .gguf path, else hf).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Storage type of the output (f32, f16, bf16 for hf; f32, f16, q8_0 for gguf).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Evaluation text: perplexity before and after.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Pre-tokenized evaluation input instead of --eval: JSON `[id, …]` or `[[id, …], …]` (windows are
    /// concatenated), as `eval --ids`.
    #[arg(long)]
    eval_ids: Option<PathBuf>,
    /// Tokens per evaluation window (default: the recipe's, else 128).
    #[arg(long, requires = "evaluation")]
    eval_len: Option<usize>,
    /// Evaluate only the first N windows (default: the recipe's, else 64, as the reference numbers).
    #[arg(long, requires = "evaluation")]
    eval_windows: Option<usize>,
    /// A multiple-choice task (JSON lines, see `eval --tasks`): accuracy before and after.
    #[arg(long)]
    tasks: Option<PathBuf>,
    /// Score only the first N items of --tasks.
    #[arg(long, requires = "tasks")]
    tasks_items: Option<usize>,
    /// Write only the plan (JSON) to --out; apply it later with --plan.
    #[arg(long, conflicts_with_all = ["format", "dtype"])]
    plan_only: bool,
    /// Apply a saved plan instead of scoring (no --ratio needed), repaired with the recipe's compensation; the
    /// flags that choose what goes (score, allocation, amount, structures) are refused beside it.
    #[arg(long, conflicts_with_all = [
        "plan_only", "importance", "allocation", "gamma", "population", "generations", "fitness_windows",
        "trials", "blocks", "mix", "structures", "ratio", "depth_ratio", "depth_importance", "target_params",
        "compat",
    ])]
    plan: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Prune layer by layer from disk to disk: peak memory ≈ one layer + the calibration activations, per
    /// pass (whole layers and width chain two) (training-free scores, any allocation — global scores every
    /// layer in a first streamed pass — or --plan; --eval or --eval-ids reads the input, then the output as
    /// written, one layer at a time, with the embeddings and head resident; no --tasks).
    #[arg(long, conflicts_with_all = ["tasks", "plan_only"])]
    pub(super) stream: bool,
}

/// The recipe the flags spell (on top of `--recipe`).
fn recipe(args: &PruneArgs) -> Result<Recipe> {
    let mut r = match &args.recipe {
        Some(p) => Recipe::from_json(&read(p)?)?,
        None => Recipe::default(),
    };
    if let Some(k) = &args.importance {
        r.importance = parse_enum(k, "--importance", &Importance::ALL)?;
    }
    match (args.allocation.as_deref(), args.gamma) {
        (Some("uniform"), None) => r.allocation = Allocation::Uniform,
        (Some("global"), None) => r.allocation = Allocation::Global,
        (Some("search"), None) => {
            if !matches!(r.allocation, Allocation::Search(_)) {
                r.allocation = Allocation::Search(SearchSettings::default());
            }
        }
        (Some("attn-mlp-ratio") | None, Some(gamma)) => {
            r.allocation = Allocation::AttnMlpRatio { gamma }
        }
        (Some("attn-mlp-ratio"), None) => {
            return Err(Error::Invalid(
                "--allocation attn-mlp-ratio needs --gamma (MLP fraction = γ × attention fraction)"
                    .into(),
            ))
        }
        (Some(a @ ("uniform" | "global" | "search")), Some(_)) => {
            return Err(Error::Invalid(format!(
                "--gamma applies to --allocation attn-mlp-ratio, not {a}"
            )))
        }
        (Some(other), _) => {
            return Err(Error::Invalid(format!(
                "--allocation {other:?}: expected one of uniform, global, attn-mlp-ratio, search"
            )))
        }
        (None, None) => {}
    }
    let searching = [args.population, args.generations, args.fitness_windows];
    let tuning = args.trials.is_some() || args.blocks.is_some() || args.mix.is_some();
    match (&mut r.allocation, r.importance) {
        (Allocation::Search(s), _) => {
            s.population = args.population.unwrap_or(s.population);
            s.generations = args.generations.unwrap_or(s.generations);
            s.fitness_windows = args.fitness_windows.unwrap_or(s.fitness_windows);
        }
        (_, Importance::Adapruner) if args.population.is_none() && args.generations.is_none() => {
            let mut s = r.adapruner.take().unwrap_or_default();
            s.trials = args.trials.unwrap_or(s.trials);
            s.blocks = args.blocks.unwrap_or(s.blocks);
            s.fitness_windows = args.fitness_windows.unwrap_or(s.fitness_windows);
            if let Some(mix) = &args.mix {
                s.metrics = mix
                    .split(',')
                    .map(|m| parse_enum(m.trim(), "--mix", &Importance::ALL))
                    .collect::<Result<_>>()?;
            }
            r.adapruner = Some(s);
        }
        _ if searching.iter().any(Option::is_some) => {
            return Err(Error::Invalid(
                "--population, --generations and --fitness-windows apply to --allocation search \
                 (--fitness-windows also to --importance adapruner)"
                    .into(),
            ))
        }
        _ => {}
    }
    if tuning && r.importance != Importance::Adapruner {
        return Err(Error::Invalid(
            "--trials, --blocks and --mix apply to --importance adapruner".into(),
        ));
    }
    if let Some(s) = &args.structures {
        r.structures = s
            .split(',')
            .map(|x| {
                StructureKind::parse(x).ok_or_else(|| {
                    Error::Invalid(format!(
                        "--structures: unknown structure {x:?} (kv-groups, query-heads, mlp, layers)"
                    ))
                })
            })
            .collect::<Result<_>>()?;
    }
    if args.ratio.is_some() || args.target_params.is_some() {
        r.ratio = args.ratio;
        r.target_params = args.target_params;
    }
    let depth_importance = match &args.depth_importance {
        Some(k) => Some(parse_enum(k, "--depth-importance", &Importance::ALL)?),
        None => None,
    };
    match (args.depth_ratio, depth_importance, &mut r.depth) {
        (Some(ratio), importance, given) => {
            let importance = importance
                .or(given.map(|d| d.importance))
                .unwrap_or(Importance::BlockInfluence);
            r.depth = Some(DepthFirst { ratio, importance });
        }
        (None, Some(importance), Some(depth)) => depth.importance = importance,
        (None, Some(_), None) => {
            return Err(Error::Invalid(
                "--depth-importance scores the whole layers of a depth step: give --depth-ratio (or a recipe \
                 with one)"
                    .into(),
            ))
        }
        (None, None, _) => {}
    }
    if let Some(l) = &args.layers {
        r.layers = Some(LayerRange::parse(l)?);
    }
    if let Some(c) = &args.compat {
        r.aggregation = match c.as_str() {
            "llm-pruner" => Aggregation::LlmPruner,
            other => {
                return Err(Error::Invalid(format!(
                    "--compat {other:?}: the only compatibility mode is llm-pruner"
                )))
            }
        };
    }
    if let Some(c) = &args.compensation {
        r.compensation = parse_enum(c, "--compensation", &Compensation::ALL)?;
    }
    if let Some(x) = args.ridge {
        r.ridge = x;
    }
    if let Some(l) = &args.linalg {
        r.linalg = Some(parse_enum(l, "--linalg", &Linalg::ALL)?);
    }
    if r.linalg.is_none() {
        r.linalg = Some(match BackendKind::parse(&args.device.backend)? {
            BackendKind::Cuda => Linalg::Device,
            _ => Linalg::HostF64,
        });
    }
    if let Some(s) = args.seed {
        r.seed = s;
    }
    if let (Some(_), CalibSource::Ids { windows }) = (&args.calib, &r.calibration) {
        // A text replaces the recipe's fixed windows; it is sampled in windows of their count and length.
        r.calibration = CalibSource::Sampled {
            samples: windows.len(),
            length: windows.first().map_or(0, Vec::len),
        };
    }
    match &mut r.calibration {
        CalibSource::Sampled { samples, length } => {
            *samples = args.calib_samples.unwrap_or(*samples);
            *length = args.calib_len.unwrap_or(*length);
        }
        CalibSource::Ids { .. } if args.calib_samples.is_some() || args.calib_len.is_some() => {
            return Err(Error::Invalid(
                "--calib-samples and --calib-len sample --calib text, but the recipe's calibration is fixed \
                 windows of ids: pass --calib FILE to sample a text instead"
                    .into(),
            ))
        }
        CalibSource::Ids { .. } => {}
    }
    if let Some(b) = args.calib_batch {
        r.calib_batch = Some(b);
    }
    if let Some(p) = &args.calib_ids {
        let v: serde_json::Value = parse_json(&read(p)?, &p.display().to_string())?;
        let windows: Vec<Vec<u32>> = serde_json::from_value(v).map_err(|e| Error::Json {
            what: p.display().to_string(),
            message: format!("expected [[id, …], …]: {e}"),
        })?;
        r.calibration = CalibSource::Ids { windows };
    }
    if args.eval.is_some() || args.eval_ids.is_some() {
        // The recipe's evaluation settings (a saved run's), else the reference numbers'; flags override both.
        let given = r.eval.unwrap_or(EvalSpec {
            seq_len: 128,
            max_windows: Some(64),
        });
        r.eval = Some(EvalSpec {
            seq_len: args.eval_len.unwrap_or(given.seq_len),
            max_windows: args.eval_windows.or(given.max_windows),
        });
    }
    Ok(r)
}

/// Refuses `--linalg` where nothing is solved or scored on statistics and `--ridge` where nothing solves with
/// it; calibration flags on a run that reads no calibration get a note (a sweep over scores may pass one text
/// to every run) and are not used (a `--calib` text is not even read).
fn check_flags_used(args: &PruneArgs, recipe: &Recipe, plan_given: bool) -> Result<()> {
    let repair = recipe.compensation.name();
    let what = match plan_given {
        true => format!("a saved plan with compensation {repair}"),
        false => format!("{} with compensation {repair}", recipe.importance.name()),
    };
    if args.linalg.is_some() && !recipe.uses_linalg(plan_given) {
        return Err(Error::Invalid(format!(
            "--linalg: {what} solves nothing and scores no statistics"
        )));
    }
    if args.ridge.is_some() && !recipe.uses_ridge(plan_given) {
        return Err(Error::Invalid(format!(
            "--ridge: {what} solves no least squares (the ridge is for ls, ls-bias and obs)"
        )));
    }
    let calibration = [
        ("--calib", args.calib.is_some()),
        ("--calib-ids", args.calib_ids.is_some()),
        ("--calib-samples", args.calib_samples.is_some()),
        ("--calib-len", args.calib_len.is_some()),
        ("--calib-batch", args.calib_batch.is_some()),
    ];
    let given: Vec<&str> = calibration.iter().filter(|c| c.1).map(|c| c.0).collect();
    if !given.is_empty() && !recipe.needs_calibration(plan_given) {
        note!(
            "note: {what} reads no calibration: {} not used",
            given.join(", ")
        );
    }
    Ok(())
}

struct PruneJob<'a> {
    args: &'a PruneArgs,
    input: &'a ModelInput,
    recipe: Recipe,
    /// A saved plan to apply instead of scoring.
    plan: Option<Plan>,
    calib: Vec<Vec<u32>>,
    eval_ids: Option<Vec<u32>>,
    tasks: Option<EncodedTask>,
    /// Parameters of a search candidate's pruned copy (0 without a search).
    candidate_params: usize,
}

/// `--tasks`: the accuracy of a model on the task.
fn accuracy<B: Backend>(
    task: &EncodedTask,
    model: &Llama<B>,
    device: &B::Device,
) -> Result<ChoiceAccuracy> {
    pollster::block_on(task.accuracy(model, device, &Bars::default()))
}

fn eval<B: Backend>(
    model: &Llama<B>,
    ids: &[u32],
    spec: &EvalSpec,
    device: &B::Device,
) -> Result<Perplexity> {
    pollster::block_on(perplexity(
        model,
        ids,
        &spec.options(),
        device,
        &Bars::default(),
    ))
}

/// What a pruning run held in memory holds: the model for its whole length and, beside it at its peak, a
/// gradient for every weight with what its backwards add over the `calib` windows when it runs them (a gradient
/// score, AdaPruner, or either as the depth step's score; not with a saved `plan`), a search candidate's copy
/// of `candidate_params` parameters, or what its layer-wise calibration passes hold through a layer.
fn pruning_resident(
    cfg: &ModelConfig,
    recipe: &Recipe,
    plan: Option<&Plan>,
    precision: Precision,
    calib: &[Vec<u32>],
    candidate_params: usize,
) -> Resident {
    let len = calib.first().map_or(0, Vec::len);
    let resident = match plan.is_none() && recipe.runs_backward() {
        true => {
            Resident::of(
                cfg,
                "prune",
                precision,
                true,
                "use --precision bf16 (half), fewer calibration windows (--calib-samples), or a training-free \
                 score with --stream (one layer at a time)",
            )
            .with_backward(backward_peak_bytes(cfg, len, calib.len(), recipe, precision))
        }
        false => Resident::of(
            cfg,
            "prune",
            precision,
            false,
            "use --stream (one layer at a time)",
        ),
    };
    resident
        .with_copy(
            candidate_params,
            "use --precision bf16 (half), or --allocation uniform with --stream (one layer at a time)",
        )
        .with_calibration(
            pass_bytes(cfg, recipe, plan, calib.len(), len, precision).in_memory,
            "use --stream (one layer of weights at a time), fewer calibration windows (--calib-samples) \
             or shorter ones (--calib-len), or --precision bf16 (half)",
        )
}

/// Parameters of the pruned copy a search holds beside the model while it measures a candidate (0 without a
/// search): the uniform candidate's, measured by every search.
fn search_candidate_params(cfg: &ModelConfig, recipe: &Recipe, plan_given: bool) -> Result<usize> {
    match (recipe.allocation, recipe.target_params) {
        (Allocation::Search(_), Some(target)) if !plan_given => {
            uniform_candidate_params(cfg, &recipe.layer_range(cfg), target, &recipe.structures)
        }
        _ => Ok(0),
    }
}

/// A pruning run's forwards: the calibration windows (in chunks, backward batches or held-out windows), a batch
/// of evaluation windows (`--eval`, `--eval-ids`) and the largest batch of `--tasks` choices.
pub(super) fn pruning_footprints(
    cfg: &ModelConfig,
    recipe: &Recipe,
    precision: Precision,
    calib: &[Vec<u32>],
    eval_ids: &Option<Vec<u32>>,
    tasks: Option<&EncodedTask>,
) -> Vec<Footprint> {
    let eval = match (eval_ids, &recipe.eval) {
        (Some(ids), Some(spec)) => Some(spec.options().footprint(cfg, ids.len())),
        _ => None,
    };
    let tasks = tasks.map(|t| t.batches.footprint(cfg));
    [
        Some(calibration_footprint(cfg, calib, recipe, precision)),
        eval,
        tasks,
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl BackendJob for PruneJob<'_> {
    type Output = Report;
    fn footprints(&self, precision: Precision) -> Vec<Footprint> {
        pruning_footprints(
            &self.input.config,
            &self.recipe,
            precision,
            &self.calib,
            &self.eval_ids,
            self.tasks.as_ref(),
        )
    }
    fn resident(&self, precision: Precision) -> Option<Resident> {
        Some(pruning_resident(
            &self.input.config,
            &self.recipe,
            self.plan.as_ref(),
            precision,
            &self.calib,
            self.candidate_params,
        ))
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Report> {
        let (args, cfg) = (self.args, &self.input.config);
        let start = Instant::now();
        let model = self
            .input
            .with_weights(|w| Llama::<B>::load(cfg, w, &device))?;
        let mut timings = vec![StageTime {
            stage: "load".into(),
            seconds: start.elapsed().as_secs_f64(),
        }];
        let spec = self.recipe.eval;
        let before = match (&self.eval_ids, &spec) {
            (Some(ids), Some(spec)) => Some(eval(&model.valid(), ids, spec, &device)?),
            _ => None,
        };
        let tasks_before = match &self.tasks {
            Some(t) => Some(accuracy(t, &model.valid(), &device)?),
            None => None,
        };
        let (pruned, plan, ratio, scores, reconstruction, tuned, search) = match self.plan {
            Some(plan) => {
                let out = pollster::block_on(apply_plan(
                    model.into_valid(),
                    &self.recipe,
                    Some(plan),
                    None,
                    &self.calib,
                    &device,
                    &Bars::default(),
                    &mut timings,
                ))?;
                (
                    out.model,
                    out.plan,
                    None,
                    vec![],
                    out.reconstruction,
                    None,
                    None,
                )
            }
            None => {
                let out = pollster::block_on(prune(
                    model,
                    &self.recipe,
                    &self.calib,
                    &device,
                    &Bars::default(),
                ))?;
                timings.extend(out.timings);
                (
                    out.model,
                    out.plan,
                    out.ratio,
                    out.scores,
                    out.reconstruction,
                    out.tuned,
                    out.search,
                )
            }
        };
        if args.plan_only {
            std::fs::write(
                &args.out,
                serde_json::to_vec_pretty(&plan).expect("serialisable"),
            )
            .map_err(|source| Error::Io {
                path: args.out.display().to_string(),
                source,
            })?;
        }
        let after = match (&self.eval_ids, &spec) {
            (Some(ids), Some(spec)) => Some(eval(&pruned, ids, spec, &device)?),
            _ => None,
        };
        let eval = before
            .zip(after)
            .map(|(before, after)| EvalReport { before, after });
        let tasks = match (&self.tasks, tasks_before) {
            (Some(t), Some(before)) => Some(TasksReport {
                task: t.name.clone(),
                before,
                after: accuracy(t, &pruned, &device)?,
            }),
            _ => None,
        };
        let mut report = Report::new(
            &self.recipe,
            ratio,
            cfg,
            &pruned.config,
            plan,
            &scores,
            reconstruction,
            timings,
            eval,
        );
        report.tasks = tasks;
        report.adapruner = tuned;
        report.search = search;
        if !args.plan_only {
            let start = Instant::now();
            let format = Format::resolve(args.format, &args.out);
            let (hf_dtype, gguf_dtype) = dtypes(format, &args.dtype)?;
            report.timings.push(StageTime {
                stage: "write".into(),
                seconds: 0.0,
            });
            let extras = Extras {
                files: report_files(&report),
                ..extras_of(self.input)?
            };
            let src = ModelWeights::of(&pruned);
            write_model(
                &Target {
                    out: &args.out,
                    format,
                    hf_dtype,
                    gguf_dtype,
                },
                &pruned.config,
                &src,
                &extras,
                &Bars::default(),
            )?;
            if let Some(t) = report.timings.last_mut() {
                t.seconds = start.elapsed().as_secs_f64();
            }
        }
        Ok(report)
    }
}

pub fn run(args: PruneArgs) -> Result<()> {
    let (kind, precision) = args.device.parse()?;
    let input = ModelInput::open(&args.model)?;
    let recipe = recipe(&args)?;
    let plan = match &args.plan {
        Some(p) => {
            let plan = Plan::from_json(&read(p)?)?;
            recipe.check_with_plan(&input.config, &plan)?;
            Some(plan)
        }
        None => {
            recipe.check(&input.config)?;
            None
        }
    };
    check_flags_used(&args, &recipe, plan.is_some())?;
    if !args.plan_only {
        dtypes(Format::resolve(args.format, &args.out), &args.dtype)?;
    }
    let candidate_params = search_candidate_params(&input.config, &recipe, plan.is_some())?;
    if args.out.exists() {
        return Err(Error::Invalid(format!(
            "{} exists; choose a new output path (prunelab never overwrites)",
            args.out.display()
        )));
    }
    let sampled = matches!(recipe.calibration, CalibSource::Sampled { .. });
    let calibrated = recipe.needs_calibration(plan.is_some());
    let needs_text = args.eval.is_some()
        || args.tasks.is_some()
        || (args.calib.is_some() && sampled && calibrated);
    let tokenizer = match needs_text {
        true => Some(input.tokenizer()?.ok_or_else(|| {
            Error::Tokenizer(format!("{} has no tokenizer", args.model.display()))
        })?),
        false => None,
    };
    let calib = match (&recipe.calibration, &args.calib) {
        _ if !calibrated => vec![],
        (CalibSource::Ids { windows }, _) => windows.clone(),
        (CalibSource::Sampled { samples, length }, Some(text)) => {
            let ids = tokenizer
                .as_ref()
                .expect("tokenizer loaded")
                .encode(&read_text(text)?)?;
            sample_windows(&ids, *samples, *length, recipe.seed)?
        }
        (CalibSource::Sampled { .. }, None) => {
            let (score, repair) = (recipe.importance.name(), recipe.compensation.name());
            let pass = "pass --calib FILE or --calib-ids FILE.json";
            return Err(Error::Invalid(match (plan.is_some(), &recipe.allocation) {
                (true, _) => format!(
                    "the plan is repaired with {repair}, which needs calibration text: {pass} (or --compensation none)"
                ),
                (false, Allocation::Search(_)) => {
                    format!("the search allocation measures candidates on calibration text: {pass}")
                }
                (false, _) => format!("{score} + {repair} needs calibration text: {pass}"),
            }));
        }
    };
    // Checked against the vocabulary before anything loads.
    let eval_ids = match (&args.eval, &args.eval_ids) {
        (Some(p), _) => {
            let tokenizer = tokenizer.as_ref().expect("tokenizer loaded");
            let ids = tokenizer.encode(&read_text(p)?)?;
            check_ids(&ids, input.config.vocab_size)?;
            Some(ids)
        }
        (None, Some(p)) => Some(read_ids(p, input.config.vocab_size)?),
        (None, None) => None,
    };
    let tasks = match &args.tasks {
        Some(p) => Some(
            Task::parse(&p.display().to_string(), &read(p)?, args.tasks_items)?
                .encode(tokenizer.as_ref().expect("tokenizer loaded"), &input.config)?,
        ),
        None => None,
    };
    let report = match args.stream {
        true => run_on(
            kind,
            precision,
            super::stream::StreamJob {
                input: &input,
                recipe,
                calib,
                plan,
                eval_ids,
                out: &args.out,
                format: args.format,
                dtype: &args.dtype,
            },
        )?,
        false => run_on(
            kind,
            precision,
            PruneJob {
                args: &args,
                input: &input,
                recipe,
                plan,
                calib,
                eval_ids,
                tasks,
                candidate_params,
            },
        )?,
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        )?;
    } else {
        print_summary(&report, &args.out)?;
    }
    Ok(())
}

/// What a pruned model carries from its input: config fields, tokenizer, GGUF metadata.
pub(super) fn extras_of(input: &ModelInput) -> Result<Extras> {
    Ok(Extras {
        base_config: input.hf_config_json()?,
        tokenizer_json: input.tokenizer_json()?,
        gguf_metadata: input.gguf_metadata()?,
        side_files: input.side_files()?,
        files: vec![],
    })
}

/// `report.json`, `plan.json` and `recipe.json`.
pub(super) fn report_files(report: &Report) -> NamedFiles {
    vec![
        ("report.json".into(), pretty(report)),
        ("plan.json".into(), pretty(&report.plan)),
        ("recipe.json".into(), pretty(&report.recipe)),
    ]
}

fn pretty<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialisable")
}

fn print_summary(r: &Report, out: &std::path::Path) -> Result<()> {
    say!(
        "parameters {} → {} ({:.2}% removed; {})",
        r.params_before.total,
        r.params_after.total,
        r.removed_fraction * 100.0,
        match (r.plan.removed_layers.is_empty(), r.ratio) {
            (false, Some(x)) if r.recipe.depth.is_some() => format!(
                "whole layers removed: {:?}, then per-layer ratio {x:.4}",
                r.plan.removed_layers
            ),
            (false, None) if r.recipe.depth.is_some() => format!(
                "whole layers removed: {:?}, then global allocation",
                r.plan.removed_layers
            ),
            (false, _) => format!("whole layers removed: {:?}", r.plan.removed_layers),
            (true, Some(x)) => format!("per-layer ratio {x:.4}"),
            (true, None) if r.search.is_some() => "searched allocation".into(),
            (true, None) => "global allocation".into(),
        }
    )?;
    let col = |f: fn(&crate::model::LayerShape) -> usize| {
        r.layers_after
            .iter()
            .map(f)
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    say!("query heads  {}", col(|l| l.num_heads))?;
    say!("kv heads     {}", col(|l| l.num_kv_heads))?;
    say!("mlp width    {}", col(|l| l.intermediate_size))?;
    if let (Some(e), Some(spec)) = (&r.eval, &r.recipe.eval) {
        say!(
            "perplexity   {:.3} → {:.3} ({} windows of {})",
            e.before.ppl,
            e.after.ppl,
            e.after.windows,
            spec.seq_len
        )?;
    }
    if let Some(t) = &r.tasks {
        say!(
            "accuracy     {:.4} → {:.4}, acc_norm {:.4} → {:.4} ({} items of {})",
            t.before.acc,
            t.after.acc,
            t.before.acc_norm,
            t.after.acc_norm,
            t.after.items,
            t.task
        )?;
    }
    if let Some(a) = &r.adapruner {
        let mix: Vec<String> = a
            .metrics
            .iter()
            .zip(&a.weights)
            .map(|(m, w)| format!("{w:.2} {}", m.name()))
            .collect();
        say!(
            "adapruner    trial {} of {}: loss {:.4} (trial 0: {:.4}); mix {}; blocks {:?}",
            a.best,
            a.losses.len(),
            a.losses[a.best],
            a.losses[0],
            mix.join(" + "),
            a.blocks
        )?;
    }
    if let Some(s) = &r.search {
        say!(
            "search       {} candidates: loss {:.4} (uniform: {:.4})",
            s.candidates,
            s.best_loss.last().copied().unwrap_or(s.uniform_loss),
            s.uniform_loss
        )?;
    }
    for t in &r.timings {
        say!("{:<12} {:.2} s", t.stage, t.seconds)?;
    }
    say!("wrote {}", out.display())
}
