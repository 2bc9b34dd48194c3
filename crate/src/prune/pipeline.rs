//! The orchestrator: gradients (when the score needs them) → scores per layer → allocation → plan → apply.
//! Whole layers (depth pruning) take the same road with whole-layer scores and [`super::depth`]'s choice and
//! repair. Backend-generic and asynchronous, so the CLI and the browser worker run the same code.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use web_time::Instant;

use super::adapruner::{tune, Tuned};
use super::allocate::{counted_plan, global_plan, ratio_for_target, Allocation};
use super::calib::check_windows;
use super::compensate::Compensation;
use super::depth::{depth_plan, layer_criterion_scores, remove_layers, whole_layer_scores};
use super::fitness::windows_per_fitness;
use super::gradients::{gradient_stats, windows_per_backward};
use super::importance::{score_layers, GradStats, Importance, LayerScores};
use super::plan::{apply, Plan};
use super::recipe::Recipe;
use super::report::StageTime;
use super::search::{search_plan, SearchRecord};
use super::sequential::{activation_scores, prune_sequential, Reconstruction, Sequential};
use crate::error::Result;
use crate::model::{Llama, ModelConfig};
use crate::progress::Progress;

/// What a pruning run returns besides the report's bookkeeping.
pub struct Pruned<B: AutodiffBackend> {
    pub model: Llama<B::InnerBackend>,
    pub plan: Plan,
    /// The per-layer fraction (given or searched); `None` for `global`.
    pub ratio: Option<f64>,
    pub scores: Vec<LayerScores>,
    pub reconstruction: Vec<Reconstruction>,
    pub timings: Vec<StageTime>,
    /// What AdaPruner's search found (importance `adapruner`).
    pub tuned: Option<Tuned>,
    /// How the `search` allocation went.
    pub search: Option<SearchRecord>,
}

/// What [`make_plan`] decides.
pub struct Planned {
    pub plan: Plan,
    /// The per-layer fraction (given or searched); `None` for `global` and `search`.
    pub ratio: Option<f64>,
    pub scores: Vec<LayerScores>,
    /// What AdaPruner's search found (importance `adapruner`).
    pub tuned: Option<Tuned>,
    /// How the `search` allocation went.
    pub search: Option<SearchRecord>,
}

/// Scores every structure of the recipe's layers and makes the plan (nothing is applied). Activation scores
/// under a per-layer allocation are left to the sequential pass (each layer scored on the pruned prefix): the
/// plan is then empty.
pub async fn make_plan<B: AutodiffBackend>(
    model: &Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
    timings: &mut Vec<StageTime>,
) -> Result<Planned> {
    let cfg = &model.config;
    recipe.check(cfg)?;
    let layers = recipe.layer_range(cfg);
    let (alloc, kinds) = (recipe.allocation, &recipe.structures);
    let depth = recipe.prunes_depth();
    let ratio = match (alloc, recipe.ratio, recipe.target_params) {
        _ if depth => recipe.ratio,
        (Allocation::Global | Allocation::Search(_), _, _) => None,
        (_, Some(r), _) => Some(r),
        (_, None, Some(t)) => Some(ratio_for_target(cfg, &layers, t, kinds, alloc)?),
        (_, None, None) => unreachable!("Recipe::check requires one"),
    };
    let kind = recipe.importance;
    let target = recipe.target_params.unwrap_or(0.0);
    // The plan of the scores, and the search's record when the allocation searched.
    let plan_of = async |scores: &[LayerScores],
                         timings: &mut Vec<StageTime>|
           -> Result<(Plan, Option<SearchRecord>)> {
        match (depth, ratio, alloc) {
            (true, ..) => Ok((depth_plan(cfg, scores, ratio, recipe.target_params)?, None)),
            (false, Some(r), _) => Ok((counted_plan(cfg, scores, r, kinds, alloc), None)),
            (false, None, Allocation::Search(settings)) => {
                let start = Instant::now();
                let inner = model.valid();
                let found = search_plan(
                    &inner,
                    scores,
                    target,
                    kinds,
                    settings,
                    recipe.seed,
                    calib,
                    windows_per_fitness(cfg, calib.first().map_or(0, Vec::len), recipe),
                    progress,
                )
                .await?;
                timings.push(StageTime {
                    stage: "search".into(),
                    seconds: start.elapsed().as_secs_f64(),
                });
                Ok((found.plan, Some(found.record)))
            }
            (false, None, _) => Ok((global_plan(cfg, scores, target, kinds)?, None)),
        }
    };
    let planned = |(plan, search), scores| Planned {
        plan,
        ratio,
        scores,
        tuned: None,
        search,
    };
    if kind == Importance::Adapruner {
        let start = Instant::now();
        check_windows(calib, cfg.vocab_size)?;
        let width_plan = |scores: &[LayerScores]| match ratio {
            Some(r) => Ok(counted_plan(cfg, scores, r, kinds, alloc)),
            None => global_plan(cfg, scores, target, kinds),
        };
        let (scores, tuned) = tune(model, recipe, calib, &width_plan, device, progress).await?;
        timings.push(StageTime {
            stage: "adapruner".into(),
            seconds: start.elapsed().as_secs_f64(),
        });
        return Ok(Planned {
            tuned: Some(tuned),
            ..planned((width_plan(&scores)?, None), scores)
        });
    }
    if kind.ranks_only_layers() {
        let start = Instant::now();
        let scores =
            layer_criterion_scores(&model.valid(), recipe, calib, device, progress).await?;
        timings.push(StageTime {
            stage: "score".into(),
            seconds: start.elapsed().as_secs_f64(),
        });
        return Ok(planned(plan_of(&scores, timings).await?, scores));
    }
    if kind.needs_activations() {
        if ratio.is_some() {
            return Ok(planned((Plan::new(cfg, vec![]), None), vec![]));
        }
        let start = Instant::now();
        let scores = activation_scores(&model.valid(), recipe, calib, device, progress).await?;
        timings.push(StageTime {
            stage: "score".into(),
            seconds: start.elapsed().as_secs_f64(),
        });
        return Ok(planned(plan_of(&scores, timings).await?, scores));
    }
    let start = Instant::now();
    let stats = match kind.needs_gradient() || kind.needs_fisher() {
        true => {
            check_windows(calib, cfg.vocab_size)?;
            gradient_stats(
                model,
                calib,
                layers.clone(),
                kind.gradient_of(),
                kind.needs_fisher(),
                windows_per_backward(cfg, calib[0].len(), calib.len(), recipe, model.precision()),
                device,
                progress,
            )?
        }
        false => GradStats::default(),
    };
    timings.push(StageTime {
        stage: "gradients".into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    let start = Instant::now();
    let mut scores = score_layers(
        &model.valid(),
        layers,
        &stats,
        kind,
        recipe.aggregation,
        recipe.seed,
        progress,
    )
    .await?;
    // The range's gradients go before a search measures candidates beside the weights (model/resident.rs).
    drop(stats);
    timings.push(StageTime {
        stage: "score".into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    if depth {
        scores = whole_layer_scores(scores, recipe);
    }
    Ok(planned(plan_of(&scores, timings).await?, scores))
}

/// Runs the recipe on `model`: plan, then apply; with a depth ratio, whole layers first and then the width
/// structures on the model they leave.
pub async fn prune<B: AutodiffBackend>(
    model: Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Pruned<B>> {
    let Some((depth, width)) = recipe.steps() else {
        return prune_step(model, recipe, calib, device, progress).await;
    };
    recipe.check(&model.config)?;
    let cfg = model.config.clone();
    let first = prune_step(model, &depth, calib, device, progress).await?;
    let width = width.narrowing_after(&cfg, &first.plan.removed_layers)?;
    let model = Llama::<B>::from_inner(first.model);
    let second = prune_step(model, &width, calib, device, progress).await?;
    let timings = first
        .timings
        .into_iter()
        .map(|t| StageTime {
            stage: format!("depth: {}", t.stage),
            ..t
        })
        .chain(second.timings)
        .collect();
    let steps = Steps {
        plan: first.plan,
        scores: first.scores,
        reconstruction: first.reconstruction,
    }
    .then(
        &cfg,
        Steps {
            plan: second.plan,
            scores: second.scores,
            reconstruction: second.reconstruction,
        },
    );
    Ok(Pruned {
        model: second.model,
        plan: steps.plan,
        ratio: second.ratio,
        scores: steps.scores,
        reconstruction: steps.reconstruction,
        timings,
        tuned: second.tuned,
        search: second.search,
    })
}

/// What a step of a run leaves besides the model: its plan, scores and repair errors.
pub struct Steps {
    pub plan: Plan,
    pub scores: Vec<LayerScores>,
    pub reconstruction: Vec<Reconstruction>,
}

impl Steps {
    /// This depth step on `cfg` followed by `width`, a step on the model it left, as one run: the plan for
    /// `cfg`, and the width step's scores and repairs after the depth step's, numbered as in `cfg`.
    pub fn then(self, cfg: &ModelConfig, width: Steps) -> Steps {
        let kept = self.plan.kept_layers(cfg);
        let scores = width.scores.into_iter().map(|s| LayerScores {
            layer: kept[s.layer],
            ..s
        });
        let reconstruction = width.reconstruction.into_iter().map(|r| Reconstruction {
            layer: kept[r.layer],
            ..r
        });
        Steps {
            plan: self.plan.then(cfg, width.plan),
            scores: self.scores.into_iter().chain(scores).collect(),
            reconstruction: self
                .reconstruction
                .into_iter()
                .chain(reconstruction)
                .collect(),
        }
    }
}

/// One plan-and-apply over the recipe's structures (whole layers, or width).
async fn prune_step<B: AutodiffBackend>(
    model: Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Pruned<B>> {
    let mut timings = Vec::new();
    let Planned {
        plan,
        ratio,
        scores,
        tuned,
        search,
    } = make_plan(&model, recipe, calib, device, progress, &mut timings).await?;
    // Activation scores under a per-layer allocation are computed in the sequential pass, which makes the plan.
    let in_pass = recipe.importance.needs_activations() && ratio.is_some();
    let out = apply_plan(
        model.into_valid(),
        recipe,
        (!in_pass).then_some(plan),
        ratio,
        calib,
        device,
        progress,
        &mut timings,
    )
    .await?;
    Ok(Pruned {
        model: out.model,
        plan: out.plan,
        ratio,
        scores: if in_pass { out.scores } else { scores },
        reconstruction: out.reconstruction,
        timings,
        tuned,
        search,
    })
}

/// Applies `plan` (made by [`make_plan`], or saved) to `model` with the recipe's compensation: a plain slice
/// when nothing is repaired, else the sequential pass, which with no plan also scores each layer's activations
/// and removes the allocation's counts at fraction `ratio`. A plan that removes whole layers and narrows others
/// is repaired in two steps: the whole layers, then the rest on the model they leave.
#[allow(clippy::too_many_arguments)]
pub async fn apply_plan<B: Backend>(
    model: Llama<B>,
    recipe: &Recipe,
    plan: Option<Plan>,
    ratio: Option<f64>,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
    timings: &mut Vec<StageTime>,
) -> Result<Sequential<B>> {
    let plan = match plan {
        Some(p)
            if !p.removed_layers.is_empty()
                && p.layers.iter().any(|lp| !lp.is_empty())
                && recipe.compensation != Compensation::None =>
        {
            p
        }
        plan => {
            return apply_step(model, recipe, plan, ratio, calib, device, progress, timings).await
        }
    };
    recipe.check_with_plan(&model.config, &plan)?;
    let cfg = model.config.clone();
    let (depth, width) = plan.split(&cfg);
    let first = apply_step(
        model,
        recipe,
        Some(depth),
        None,
        calib,
        device,
        progress,
        timings,
    )
    .await?;
    let unmeasured = Recipe {
        ratio: None,
        target_params: None,
        ..recipe.clone()
    };
    let narrowing = unmeasured.narrowing_after(&cfg, &first.plan.removed_layers)?;
    let second = apply_step(
        first.model,
        &narrowing,
        Some(width),
        None,
        calib,
        device,
        progress,
        timings,
    )
    .await?;
    let steps = Steps {
        plan: first.plan,
        scores: vec![],
        reconstruction: first.reconstruction,
    }
    .then(
        &cfg,
        Steps {
            plan: second.plan,
            scores: vec![],
            reconstruction: second.reconstruction,
        },
    );
    Ok(Sequential {
        model: second.model,
        plan: steps.plan,
        scores: vec![],
        reconstruction: steps.reconstruction,
    })
}

/// [`apply_plan`] for a plan of one kind (whole layers, or width), or none.
#[allow(clippy::too_many_arguments)]
async fn apply_step<B: Backend>(
    model: Llama<B>,
    recipe: &Recipe,
    plan: Option<Plan>,
    ratio: Option<f64>,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
    timings: &mut Vec<StageTime>,
) -> Result<Sequential<B>> {
    if let Some(plan) = &plan {
        recipe.check_with_plan(&model.config, plan)?;
    }
    let start = Instant::now();
    let (out, stage) = match plan {
        Some(plan) if !plan.removed_layers.is_empty() => {
            let out = remove_layers(model, recipe, plan, calib, device, progress).await?;
            (out, "remove layers")
        }
        Some(plan) if recipe.compensation == Compensation::None => {
            let sliced = Sequential {
                model: apply(model, &plan)?,
                plan,
                scores: vec![],
                reconstruction: vec![],
            };
            (sliced, "apply")
        }
        plan => {
            let seq =
                prune_sequential(model, recipe, ratio, calib, plan.as_ref(), device, progress)
                    .await?;
            (seq, "sequential")
        }
    };
    timings.push(StageTime {
        stage: stage.into(),
        seconds: start.elapsed().as_secs_f64(),
    });
    Ok(out)
}
