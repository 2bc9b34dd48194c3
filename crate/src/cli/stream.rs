//! `prunelab prune --stream`: the training-free pipeline layer by layer from the input files to the output
//! files ([`Streamed`]), for models that do not fit in memory twice (or at all). Whole layers and width in one
//! run chain two streamed passes: the width pass reads the depth pass as its input.

use std::cell::RefCell;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use web_time::Instant;

use super::convert::dtypes;
use super::files::ModelInput;
use super::output::{write_model_with, Extras, Format, Target};
use super::progress::Bars;
use super::prune::{extras_of, pruning_footprints, report_files};
use super::run_on::BackendJob;
use crate::backend::Precision;
use crate::error::Result;
use crate::eval::streamed::{streamed_perplexity, streamed_resident};
use crate::eval::Perplexity;
use crate::model::footprint::Footprint;
use crate::model::resident::Resident;
use crate::model::{ModelConfig, WeightSource};
use crate::prune::activations::pass_bytes;
use crate::prune::allocate::{global_plan, ratio_for_target, Allocation};
use crate::prune::compensate::Compensation;
use crate::prune::depth::depth_plan;
use crate::prune::importance::LayerScores;
use crate::prune::pipeline::Steps;
use crate::prune::plan::Plan;
use crate::prune::recipe::Recipe;
use crate::prune::report::{EvalReport, Report, StageTime};
use crate::prune::streaming::{streamed_scores, Phases, Streamed};

pub(super) struct StreamJob<'a> {
    pub input: &'a ModelInput,
    pub recipe: Recipe,
    pub calib: Vec<Vec<u32>>,
    /// A saved plan to apply instead of scoring.
    pub plan: Option<Plan>,
    /// `--eval`'s text tokenized, or `--eval-ids`.
    pub eval_ids: Option<Vec<u32>>,
    pub out: &'a Path,
    pub format: Option<Format>,
    pub dtype: &'a str,
}

/// What a streamed pass applies, decided before it runs.
struct PassPlan {
    /// The fraction each layer loses, decided layer by layer in the pass; `None` when `fixed` decides.
    ratio: Option<f64>,
    fixed: Option<Plan>,
    /// The scores of a first pass that ranked every layer (`global`, whole layers), and its seconds.
    scores: Vec<LayerScores>,
    seconds: Option<f64>,
}

impl PassPlan {
    /// Whether the pass needs a first pass of scores: `global` and whole layers rank every layer before
    /// anything is removed (a saved plan needs none).
    fn ranks_first(recipe: &Recipe, fixed: &Option<Plan>) -> bool {
        fixed.is_none() && (recipe.allocation == Allocation::Global || recipe.prunes_depth())
    }

    /// A saved plan, or the per-layer fraction (given, or for the parameter target over the recipe's range).
    fn without_scores(cfg: &ModelConfig, recipe: &Recipe, fixed: Option<Plan>) -> Result<Self> {
        let ratio = match (&fixed, recipe.ratio) {
            (Some(_), _) => None,
            (None, Some(r)) => Some(r),
            (None, None) => Some(ratio_for_target(
                cfg,
                &recipe.layer_range(cfg),
                recipe.target_params.unwrap_or(0.0),
                &recipe.structures,
                recipe.allocation,
            )?),
        };
        Ok(Self {
            ratio,
            fixed,
            scores: vec![],
            seconds: None,
        })
    }

    /// The pass's plan, scores (its own, then the first pass's) and repairs, once everything was read.
    fn results<B: Backend>(&self, pass: &Streamed<B>) -> Steps {
        let (plan, mut scores, reconstruction) = pass.take_results();
        scores.extend(self.scores.iter().cloned());
        Steps {
            plan,
            scores,
            reconstruction,
        }
    }

    /// The ratio the report gives: a whole-layer ratio for a scored depth pass, else the per-layer fraction.
    fn reported(&self, recipe: &Recipe) -> Option<f64> {
        match recipe.prunes_depth() && self.seconds.is_some() {
            true => recipe.ratio,
            false => self.ratio,
        }
    }
}

/// What a run's passes share: the calibration windows, the device and the progress bars.
struct Passes<'c, B: Backend> {
    calib: &'c [Vec<u32>],
    device: B::Device,
    bars: &'c Bars,
}

impl<'c, B: Backend> Passes<'c, B> {
    /// A streamed pass over `src` (see [`Streamed::new`]).
    fn pass<'a>(
        &self,
        src: &'a dyn WeightSource,
        cfg: &ModelConfig,
        recipe: &'a Recipe,
        ratio: Option<f64>,
        fixed: Option<&'a Plan>,
    ) -> Result<Streamed<'a, B>>
    where
        'c: 'a,
    {
        Streamed::new(
            src,
            cfg,
            recipe,
            ratio,
            fixed,
            self.calib,
            self.device.clone(),
            self.bars,
        )
    }

    /// What a pass over `src` applies: `fixed`, or the plan of a first pass of scores over `src` (its layers
    /// one at a time, before any is pruned by this step; nothing is read otherwise), or a per-layer fraction.
    fn plan(
        &self,
        src: &dyn WeightSource,
        cfg: &ModelConfig,
        recipe: &Recipe,
        fixed: Option<Plan>,
    ) -> Result<PassPlan> {
        match PassPlan::ranks_first(recipe, &fixed) {
            true => self.scored(src, cfg, recipe),
            false => PassPlan::without_scores(cfg, recipe, fixed),
        }
    }

    fn scored(
        &self,
        src: &dyn WeightSource,
        cfg: &ModelConfig,
        recipe: &Recipe,
    ) -> Result<PassPlan> {
        let start = Instant::now();
        let scores = streamed_scores::<B>(src, cfg, recipe, self.calib, &self.device, self.bars)?;
        let plan = match recipe.prunes_depth() {
            true => depth_plan(cfg, &scores, recipe.ratio, recipe.target_params)?,
            false => global_plan(
                cfg,
                &scores,
                recipe.target_params.unwrap_or(0.0),
                &recipe.structures,
            )?,
        };
        Ok(PassPlan {
            ratio: None,
            fixed: Some(plan),
            scores,
            seconds: Some(start.elapsed().as_secs_f64()),
        })
    }
}

/// A report stage, when it ran.
fn stage(name: &str, seconds: Option<f64>) -> Option<StageTime> {
    seconds.map(|seconds| StageTime {
        stage: name.into(),
        seconds,
    })
}

/// A pass's three phases as report stages, named with `prefix`.
fn phase_stages(prefix: &str, p: Phases) -> Vec<StageTime> {
    [
        ("load layers", p.load),
        ("compute", p.compute),
        ("read back", p.read_back),
    ]
    .into_iter()
    .map(|(stage, seconds)| StageTime {
        stage: format!("{prefix}{stage}"),
        seconds,
    })
    .collect()
}

impl BackendJob for StreamJob<'_> {
    type Output = Report;
    fn footprints(&self, precision: Precision) -> Vec<Footprint> {
        pruning_footprints(
            &self.input.config,
            &self.recipe,
            precision,
            &self.calib,
            &self.eval_ids,
            None,
        )
    }
    /// One decoder layer on the device (two while a depth repair, the recipe's or a saved plan's, keeps the
    /// layer before a removed run) and what the layer-wise calibration passes hold through a layer (a
    /// whole-layer and a width step, chained, each hold their own); or, when the evaluation (`--eval`,
    /// `--eval-ids`) holds more, the input's streamed evaluation. The output's comes after the pruning pass and is no larger (but for the zero biases
    /// `ls-bias` gives unpruned layers).
    fn resident(&self, precision: Precision) -> Option<Resident> {
        let (cfg, recipe) = (&self.input.config, &self.recipe);
        let removes_layers = match &self.plan {
            Some(plan) => !plan.removed_layers.is_empty(),
            None => recipe.and_steps().iter().any(Recipe::prunes_depth),
        };
        let repairs_depth = removes_layers && recipe.compensation != Compensation::None;
        let layers = if repairs_depth { 2 } else { 1 };
        let len = self.calib.first().map_or(0, Vec::len);
        let calibration = pass_bytes(
            cfg,
            recipe,
            self.plan.as_ref(),
            self.calib.len(),
            len,
            precision,
        )
        .streamed;
        let pass = Resident::streamed(
            cfg,
            "prune",
            precision,
            layers,
            "use --precision bf16 (half)",
        )
        .with_calibration(
            calibration,
            "use fewer calibration windows (--calib-samples) or shorter ones (--calib-len), or \
                 --precision bf16 (half)",
        );
        let eval = self
            .eval_ids
            .as_deref()
            .zip(recipe.eval)
            .map(|(ids, spec)| {
                let remedies = [
                    "use --precision bf16 (half)",
                    "evaluate fewer windows (--eval-windows), or use --precision bf16 (half)",
                ];
                streamed_resident(cfg, &spec.options(), ids.len(), precision, remedies)
            });
        Some(match eval {
            Some(eval) if eval.bytes() > pass.bytes() => eval,
            _ => pass,
        })
    }
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Report> {
        let (cfg, recipe) = (&self.input.config, &self.recipe);
        let format = Format::resolve(self.format, self.out);
        let (hf_dtype, gguf_dtype) = dtypes(format, self.dtype)?;
        let target = Target {
            out: self.out,
            format,
            hf_dtype,
            gguf_dtype,
        };
        let extras: Extras = extras_of(self.input)?;
        let bars = Bars::default();
        let start = Instant::now();
        let report = RefCell::new(None);
        // `--eval` / `--eval-ids`: the input's perplexity before any layer is pruned, the output's as written
        // last, both one layer at a time.
        let eval = self
            .eval_ids
            .as_deref()
            .zip(recipe.eval.map(|e| e.options()));
        let perplexity = |src: &dyn WeightSource, cfg: &ModelConfig| -> Result<_> {
            let (ids, opts) = eval.expect("evaluated only with --eval or --eval-ids");
            streamed_perplexity::<B::InnerBackend>(src, cfg, ids, &opts, &device, &bars)
        };
        let before = RefCell::new(None);
        // Called by the writer once the model is written (under a temporary name): the report, and its files.
        let finish =
            |steps: Steps, ratio, out: &ModelConfig, stages: Vec<StageTime>, written: &Path| {
                let before = before.borrow_mut().take();
                let first = before
                    .as_ref()
                    .map(|(_, stage): &(Perplexity, StageTime)| stage.clone());
                let mut timings: Vec<StageTime> = first.into_iter().chain(stages).collect();
                // What is left of the run's time after the stages counted: passing tensors through and writing.
                timings.push(StageTime {
                    stage: "copy + write".into(),
                    seconds: start.elapsed().as_secs_f64()
                        - timings.iter().map(|t| t.seconds).sum::<f64>(),
                });
                let eval = match before {
                    Some((before, _)) => {
                        let clock = Instant::now();
                        let input = match format {
                            Format::Gguf => ModelInput::gguf(written)?,
                            Format::Hf => ModelInput::open(written)?,
                        };
                        let after = input.with_weights(|w| perplexity(w, &input.config))?;
                        timings.push(StageTime {
                            stage: "eval after".into(),
                            seconds: clock.elapsed().as_secs_f64(),
                        });
                        Some(EvalReport { before, after })
                    }
                    None => None,
                };
                let r = Report::new(
                    recipe,
                    ratio,
                    cfg,
                    out,
                    steps.plan,
                    &steps.scores,
                    steps.reconstruction,
                    timings,
                    eval,
                );
                let files = report_files(&r);
                *report.borrow_mut() = Some(r);
                Ok(files)
            };
        let ctx = Passes::<B::InnerBackend> {
            calib: &self.calib,
            device: device.clone(),
            bars: &bars,
        };
        self.input.with_weights(|src| {
            // Once the passes are set up (every check passed), before the first layer is pruned.
            let evaluate_input = || -> Result<()> {
                if eval.is_some() {
                    let clock = Instant::now();
                    let p = perplexity(src, cfg)?;
                    let stage = StageTime {
                        stage: "eval before".into(),
                        seconds: clock.elapsed().as_secs_f64(),
                    };
                    *before.borrow_mut() = Some((p, stage));
                }
                Ok(())
            };
            let Some((depth, depth_fixed, width, width_fixed)) =
                two_steps(cfg, recipe, self.plan.clone())
            else {
                let plan = ctx.plan(src, cfg, recipe, self.plan.clone())?;
                let streamed = ctx.pass(src, cfg, recipe, plan.ratio, plan.fixed.as_ref())?;
                evaluate_input()?;
                let late = |written: &Path| {
                    let stages = stage("score", plan.seconds)
                        .into_iter()
                        .chain(phase_stages("", streamed.phases()))
                        .collect();
                    let steps = plan.results(&streamed);
                    finish(
                        steps,
                        plan.reported(recipe),
                        streamed.config(),
                        stages,
                        written,
                    )
                };
                return write_model_with(
                    &target,
                    streamed.config(),
                    &streamed,
                    &extras,
                    &late,
                    &bars,
                );
            };
            // The depth step's plan and pass, then the width step over the smaller model that pass streams.
            let first = ctx.plan(src, cfg, &depth, depth_fixed)?;
            let removed = &first
                .fixed
                .as_ref()
                .expect("a depth pass has a plan")
                .removed_layers;
            let width = width.narrowing_after(cfg, removed)?;
            let depth_pass = || ctx.pass(src, cfg, &depth, None, first.fixed.as_ref());
            let inner = depth_pass()?;
            let mid = inner.config().clone();
            // `global` ranks the smaller model's layers in a first pass over a depth pass of its own.
            let second = ctx.plan(&depth_pass()?, &mid, &width, width_fixed)?;
            // The width pass runs its activations through the layers below its range, which its writer copies too.
            let inner = match width.needs_calibration(second.fixed.is_some()) {
                true => inner.rereadable_below(width.layer_range(&mid).start),
                false => inner,
            };
            let outer = ctx.pass(&inner, &mid, &width, second.ratio, second.fixed.as_ref())?;
            evaluate_input()?;
            let late = |written: &Path| {
                // Each pass's phases are its own: the width pass's loads leave out the depth pass's work they
                // set off, which counts as the depth pass's, as does a repair the writer sets off.
                let stages = stage("depth: score", first.seconds)
                    .into_iter()
                    .chain(stage("score", second.seconds))
                    .chain(phase_stages("depth: ", inner.phases()))
                    .chain(phase_stages("", outer.phases()))
                    .collect();
                let steps = first.results(&inner).then(cfg, second.results(&outer));
                finish(steps, second.ratio, outer.config(), stages, written)
            };
            write_model_with(&target, outer.config(), &outer, &extras, &late, &bars)
        })?;
        Ok(report
            .into_inner()
            .expect("the report is made before the output appears"))
    }
}

/// A run of whole layers and width as its two steps: the depth step's recipe and saved plan, then the width
/// step's before its range and target follow the removed layers (from a depth ratio, or from a saved plan that
/// does both, split); `None` for a run of one kind.
fn two_steps(
    cfg: &ModelConfig,
    recipe: &Recipe,
    plan: Option<Plan>,
) -> Option<(Recipe, Option<Plan>, Recipe, Option<Plan>)> {
    match plan {
        Some(p) if !p.removed_layers.is_empty() && p.layers.iter().any(|lp| !lp.is_empty()) => {
            let (depth, width) = p.split(cfg);
            let unmeasured = Recipe {
                ratio: None,
                target_params: None,
                ..recipe.clone()
            };
            Some((recipe.clone(), Some(depth), unmeasured, Some(width)))
        }
        Some(_) => None,
        None => recipe
            .steps()
            .map(|(depth, width)| (depth, None, width, None)),
    }
}
