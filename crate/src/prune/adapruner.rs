//! The `adapruner` score (AdaPruner, "Sample-aware Adaptive Structured Pruning for Large Language Models";
//! methods.md §3): Bayesian optimisation (TPE) over which calibration windows the scores are computed on and how
//! several per-weight scores are mixed, each trial pruned by the recipe's allocation and measured.
//!
//! The first `fitness_windows` calibration windows are held out: a trial's fitness is the unrepaired loss they
//! give ([`Fitness`]). The other windows (the pool) are split into `blocks` consecutive blocks. A trial picks a
//! non-empty set of blocks and a weight in [0, 1] per mixed score. Its score of a structure is
//! `Σ_m w_m · s_m / mean_m`, with `w` scaled to sum to 1 and `mean_m` the mean of score `m` over the layer's
//! structures of that kind (a scale-free mix: one score alone ranks exactly as it does unmixed). The scores of a
//! set of blocks are computed once (backward passes over its windows in batches, `prune/gradients.rs`; one per
//! window more when a score needs the Fisher diagonal) and kept for the trials that pick it again.
//!
//! Trial 0 is the first mixed score alone on the whole pool (`taylor-first` by default: LLM-Pruner's), then come
//! a few random trials, then TPE proposals (one univariate estimator per parameter, as Optuna's default, with the
//! best quarter as the good set). The winner is the trial with the lowest loss, the earliest among equals, so it
//! is never worse than trial 0 on the held-out windows.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use rand_tpe::rngs::StdRng;
use rand_tpe::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tpe::density_estimation::DefaultEstimatorBuilder;
use tpe::range::Range as ParamRange;
use tpe::{TpeOptimizer, TpeOptimizerBuilder};

use super::fitness::{windows_per_fitness, Fitness};
use super::gradients::{gradient_stats, windows_per_backward};
use super::importance::{score_layers, GradStats, Importance, LayerScores, Objective};
use super::plan::Plan;
use super::recipe::Recipe;
use crate::error::{Error, Result};
use crate::model::Llama;
use crate::progress::{checkpoint, Progress, ProgressEvent};

/// How AdaPruner searches (recipe field `adapruner`; every field has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaprunerSettings {
    /// Trials, each one prune and one fitness measurement (trial 0 included).
    pub trials: usize,
    /// Blocks the calibration pool is split into; a trial's scores come from a non-empty set of them.
    pub blocks: usize,
    /// Calibration windows held out to measure the trials (the first ones).
    pub fitness_windows: usize,
    /// The scores mixed; the first one alone on the whole pool is trial 0.
    pub metrics: Vec<Importance>,
}

impl Default for AdaprunerSettings {
    fn default() -> Self {
        Self {
            trials: 16,
            blocks: 4,
            fitness_windows: 4,
            metrics: vec![
                Importance::TaylorFirst,
                Importance::TaylorVector,
                Importance::L2,
            ],
        }
    }
}

impl AdaprunerSettings {
    /// The most blocks: a trial's block set is one of `2^blocks − 1`.
    pub const MAX_BLOCKS: usize = 6;

    /// Refuses settings that cannot search.
    pub fn check(&self) -> Result<()> {
        if self.trials == 0 || self.fitness_windows == 0 {
            return Err(Error::Invalid(format!(
                "adapruner needs at least 1 trial and 1 fitness window (got {} and {})",
                self.trials, self.fitness_windows
            )));
        }
        if !(1..=Self::MAX_BLOCKS).contains(&self.blocks) {
            return Err(Error::Invalid(format!(
                "adapruner splits the calibration pool into 1 to {} blocks (got {})",
                Self::MAX_BLOCKS,
                self.blocks
            )));
        }
        if self.metrics.is_empty() {
            return Err(Error::Invalid(
                "adapruner needs at least one score to mix".into(),
            ));
        }
        if let Some(m) = self.metrics.iter().find(|m| !m.mixable()) {
            return Err(Error::Invalid(format!(
                "adapruner mixes per-weight scores (l1, l2, taylor-vector, taylor-first, taylor-second, \
                 taylor-mix, ntk), not {}",
                m.name()
            )));
        }
        if let Some((_, m)) = self
            .metrics
            .iter()
            .enumerate()
            .find(|(i, m)| self.metrics[..*i].contains(m))
        {
            return Err(Error::Invalid(format!(
                "adapruner: score {} is listed twice",
                m.name()
            )));
        }
        Ok(())
    }
}

/// What the search found (in `report.json` as `adapruner`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuned {
    pub metrics: Vec<Importance>,
    /// The winner's weight of each score, summing to 1.
    pub weights: Vec<f64>,
    /// The pool blocks the winner's scores came from (0-based, of `settings.blocks`).
    pub blocks: Vec<usize>,
    /// Every trial's fitness, in order (trial 0: the first score alone on the whole pool).
    pub losses: Vec<f64>,
    /// The winner's index in `losses`.
    pub best: usize,
}

/// One trial's choice: a set of blocks (bit `b` for block `b`) and unnormalised weights.
#[derive(Debug, Clone)]
struct Trial {
    blocks: u32,
    weights: Vec<f64>,
}

impl Trial {
    /// The weights scaled to sum to 1 (equal when all are 0).
    fn normalised(&self) -> Vec<f64> {
        let sum: f64 = self.weights.iter().sum();
        match sum > 0.0 {
            true => self.weights.iter().map(|w| w / sum).collect(),
            false => vec![1.0 / self.weights.len() as f64; self.weights.len()],
        }
    }
}

/// `Σ_m w_m · s_m / mean_m` per structure, `per_metric[m][layer]` (`w` summing to 1).
pub fn mix(per_metric: &[Vec<LayerScores>], weights: &[f64]) -> Vec<LayerScores> {
    let first = &per_metric[0];
    let kind = |i: usize, of: fn(&LayerScores) -> &Vec<f32>| -> Vec<f32> {
        let mut out = vec![0.0f64; of(&first[i]).len()];
        for (scores, &w) in per_metric.iter().zip(weights) {
            let v = of(&scores[i]);
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
            if w == 0.0 || !(mean > 0.0 && mean.is_finite()) {
                continue;
            }
            for (o, &x) in out.iter_mut().zip(v) {
                *o += w * x as f64 / mean;
            }
        }
        out.into_iter().map(|x| x as f32).collect()
    };
    (0..first.len())
        .map(|i| LayerScores {
            layer: first[i].layer,
            kv_groups: kind(i, |s| &s.kv_groups),
            query_heads: kind(i, |s| &s.query_heads),
            mlp_channels: kind(i, |s| &s.mlp_channels),
            whole: None,
        })
        .collect()
}

/// Every mixed score of `layers` on `windows`: the backward passes the scores need, shared between them.
#[allow(clippy::too_many_arguments)]
async fn scores_on<B: AutodiffBackend>(
    model: &Llama<B>,
    inner: &Llama<B::InnerBackend>,
    windows: &[Vec<u32>],
    layers: Range<usize>,
    recipe: &Recipe,
    metrics: &[Importance],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Vec<Vec<LayerScores>>> {
    let by = |o: Objective| metrics.iter().any(|m| m.gradient_of() == Some(o));
    let fisher = metrics.iter().any(|m| m.needs_fisher());
    let len = windows.first().map_or(1, Vec::len);
    let per_batch =
        windows_per_backward(&model.config, len, windows.len(), recipe, model.precision());
    let of_loss = match by(Objective::Loss) || fisher {
        true => gradient_stats(
            model,
            windows,
            layers.clone(),
            by(Objective::Loss).then_some(Objective::Loss),
            fisher,
            per_batch,
            device,
            progress,
        )?,
        false => GradStats::default(),
    };
    let of_output = match by(Objective::Output) {
        true => gradient_stats(
            model,
            windows,
            layers.clone(),
            Some(Objective::Output),
            false,
            per_batch,
            device,
            progress,
        )?,
        false => GradStats::default(),
    };
    let mut out = Vec::with_capacity(metrics.len());
    for &m in metrics {
        let stats = match m.gradient_of() {
            Some(Objective::Output) => &of_output,
            _ => &of_loss,
        };
        let scores = score_layers(
            inner,
            layers.clone(),
            stats,
            m,
            recipe.aggregation,
            recipe.seed,
            progress,
        )
        .await?;
        out.push(scores);
    }
    Ok(out)
}

/// Maps a TPE error (only a broken invariant of ours can raise one) to ours.
/// The report at trial `done` of `total`: the last trial's held-out loss and the best so far.
fn trial_event(
    done: usize,
    total: usize,
    losses: &[f64],
    best: &Option<(f64, Trial)>,
) -> ProgressEvent<'static> {
    let event = ProgressEvent::new("adapruner", done, total);
    match (losses.last(), best) {
        (Some(last), Some((best, _))) => event.saying(format!(
            "trial {}: loss {last:.4}, best {best:.4}",
            done - 1
        )),
        _ => event,
    }
}

fn tpe_error(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("adapruner: TPE: {e}"))
}

/// Runs the search on the recipe's layers of `model`: the winner's mixed scores, and what was found. `plan_of`
/// is the recipe's allocation (uniform, attention:MLP ratio or global).
pub async fn tune<B: AutodiffBackend>(
    model: &Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    plan_of: &dyn Fn(&[LayerScores]) -> Result<Plan>,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<(Vec<LayerScores>, Tuned)> {
    let settings = recipe.adapruner.clone().unwrap_or_default();
    settings.check()?;
    let (held, n_blocks) = (settings.fitness_windows, settings.blocks);
    let needed = held.saturating_add(n_blocks);
    if calib.len() < needed {
        return Err(Error::Invalid(format!(
            "adapruner holds out {held} calibration windows to measure trials and splits the rest into \
             {n_blocks} blocks: it needs at least {needed} windows, but only {} were given (raise --calib-samples, \
             or lower --fitness-windows or --blocks)",
            calib.len()
        )));
    }
    let layers = recipe.layer_range(&model.config);
    let metrics = &settings.metrics;
    let inner = model.valid();
    let per_batch = windows_per_fitness(&model.config, calib[0].len(), recipe);
    let fitness = Fitness::new(&inner, &calib[..held], per_batch);
    let pool = &calib[held..];
    let block = |b: usize| &pool[b * pool.len() / n_blocks..(b + 1) * pool.len() / n_blocks];
    let sets = (1u32 << n_blocks) - 1;

    let mut rng = StdRng::seed_from_u64(recipe.seed ^ 0xADA9);
    let build = |estimator: DefaultEstimatorBuilder, range: ParamRange| {
        TpeOptimizerBuilder::new()
            .gamma(0.25)
            .build(estimator, range)
            .map_err(tpe_error)
    };
    let mut pick_blocks = build(
        tpe::histogram_estimator(),
        tpe::categorical_range(sets as usize).map_err(tpe_error)?,
    )?;
    let mut pick_weights: Vec<TpeOptimizer> = metrics
        .iter()
        .map(|_| {
            build(
                tpe::parzen_estimator(),
                tpe::range(0.0, 1.0).map_err(tpe_error)?,
            )
        })
        .collect::<Result<_>>()?;
    let startup = ((settings.trials - 1) / 4).clamp(2, 8);

    let mut cache: HashMap<u32, Vec<Vec<LayerScores>>> = HashMap::new();
    let mut losses = Vec::new();
    let mut best: Option<(f64, Trial)> = None;
    for t in 0..settings.trials {
        progress.report(trial_event(t, settings.trials, &losses, &best));
        checkpoint(progress).await?;
        let trial = match t {
            // Weights are scale-free: (½, 0, …) is the first score alone.
            0 => Trial {
                blocks: sets,
                weights: (0..metrics.len())
                    .map(|m| if m == 0 { 0.5 } else { 0.0 })
                    .collect(),
            },
            t if t <= startup => Trial {
                blocks: rng.random_range(1..=sets),
                weights: metrics.iter().map(|_| rng.random_range(0.0..1.0)).collect(),
            },
            _ => {
                let set = pick_blocks.ask(&mut rng).map_err(tpe_error)?;
                let weights = pick_weights
                    .iter_mut()
                    .map(|o| o.ask(&mut rng).map_err(tpe_error))
                    .collect::<Result<_>>()?;
                Trial {
                    blocks: (set as u32).min(sets - 1) + 1,
                    weights,
                }
            }
        };
        let per_metric = match cache.entry(trial.blocks) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let windows: Vec<Vec<u32>> = (0..n_blocks)
                    .filter(|b| trial.blocks >> b & 1 == 1)
                    .flat_map(|b| block(b).iter().cloned())
                    .collect();
                let scores = scores_on(
                    model,
                    &inner,
                    &windows,
                    layers.clone(),
                    recipe,
                    metrics,
                    device,
                    progress,
                )
                .await?;
                new.insert(scores)
            }
        };
        let plan = plan_of(&mix(per_metric, &trial.normalised()))?;
        let loss = match fitness.loss(&plan).await? {
            l if l.is_nan() => f64::INFINITY,
            l => l,
        };
        pick_blocks
            .tell((trial.blocks - 1) as f64, loss)
            .map_err(tpe_error)?;
        for (o, &w) in pick_weights.iter_mut().zip(&trial.weights) {
            o.tell(w, loss).map_err(tpe_error)?;
        }
        losses.push(loss);
        if best.as_ref().is_none_or(|(b, _)| loss < *b) {
            best = Some((loss, trial));
        }
    }
    progress.report(trial_event(
        settings.trials,
        settings.trials,
        &losses,
        &best,
    ));
    let (best_loss, winner) = best.ok_or_else(|| tpe_error("no trial ran"))?;
    let weights = winner.normalised();
    let tuned = Tuned {
        metrics: metrics.clone(),
        weights: weights.clone(),
        blocks: (0..n_blocks)
            .filter(|b| winner.blocks >> b & 1 == 1)
            .collect(),
        best: losses.iter().position(|&l| l == best_loss).unwrap_or(0),
        losses,
    };
    Ok((mix(&cache[&winner.blocks], &weights), tuned))
}
