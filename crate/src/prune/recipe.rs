//! The [`Recipe`]: the one description of a run (structures, score, allocation, layers, calibration, seed,
//! evaluation). CLI flags and recipe files are two spellings of it; every report embeds it.

use serde::{Deserialize, Serialize};

use super::adapruner::AdaprunerSettings;
use super::allocate::Allocation;
use super::calib::{check_windows, CalibSource};
use super::compensate::Compensation;
use super::importance::Importance;
use super::linalg::Linalg;
use super::plan::Plan;
use super::structure::{Aggregation, StructureKind};
use crate::error::{parse_json, Error, Result};
use crate::eval::PerplexityOptions;
use crate::model::params::count_params;
use crate::model::ModelConfig;

/// Layers `[start, end)` that are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRange {
    pub start: usize,
    pub end: usize,
}

impl LayerRange {
    /// Parses `START..END`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("--layers {s:?}: expected START..END, e.g. 4..28"));
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        Ok(Self {
            start: a.trim().parse().map_err(|_| bad())?,
            end: b.trim().parse().map_err(|_| bad())?,
        })
    }

    /// LLM-Pruner's default proportions: keep the first eighth and the last sixteenth of the layers
    /// (layers 4..30 of LLaMA-7B's 32).
    pub fn default_for(n_layers: usize) -> Self {
        Self {
            start: n_layers / 8,
            end: n_layers - n_layers / 16,
        }
    }
}

/// Whole layers removed first in a run that also narrows (`--depth-ratio`): the layers that stay are then
/// narrowed by the run's structures, ratio or parameter target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthFirst {
    /// Fraction of the range's `C` layers removed: `C − ⌊C·(1−r)⌋` of them.
    pub ratio: f64,
    /// The whole-layer score (default `block-influence`).
    #[serde(default = "block_influence")]
    pub importance: Importance,
}

fn block_influence() -> Importance {
    Importance::BlockInfluence
}

/// Perplexity measured before and after pruning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    pub seq_len: usize,
    pub max_windows: Option<usize>,
}

impl EvalSpec {
    /// The windows the spec evaluates, in batches of the default size.
    pub fn options(&self) -> PerplexityOptions {
        PerplexityOptions {
            seq_len: self.seq_len,
            max_windows: self.max_windows,
            ..PerplexityOptions::default()
        }
    }
}

/// Everything that defines a pruning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recipe {
    pub structures: Vec<StructureKind>,
    pub importance: Importance,
    pub aggregation: Aggregation,
    /// How removals are spread over layers and modules.
    pub allocation: Allocation,
    /// Fraction of each pruned layer's KV groups (and, uniform, MLP channels) to remove (LLM-Pruner's ratio).
    pub ratio: Option<f64>,
    /// Fraction of all parameters to remove (the ratio is searched to reach it). Excludes `ratio`.
    pub target_params: Option<f64>,
    /// Pruned layers; default [`LayerRange::default_for`].
    pub layers: Option<LayerRange>,
    pub calibration: CalibSource,
    /// Calibration windows run through each decoder layer at a time by the layer-wise passes (activation
    /// scores, repairs) and through one backward by gradient scores; unset: as many as keep one batch's MLP
    /// activations under [`CHUNK_BYTES`](super::activations::CHUNK_BYTES), and for a backward all windows
    /// unless batches under [`BACKWARD_BYTES`](super::gradients::BACKWARD_BYTES) hold less. The search's and
    /// AdaPruner's losses run their held-out windows in batches of it too, by default as many as keep the
    /// logits under `CHUNK_BYTES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calib_batch: Option<usize>,
    /// Repair of `o_proj` / `down_proj` after removal (sequential pipeline when not `none`).
    pub compensation: Compensation,
    /// Ridge of least squares (and of `obs`) as a fraction of mean(diag G).
    pub ridge: f64,
    /// Gather the MLP's statistics after the same layer's attention was pruned and repaired (else from the
    /// layer as it came, like the attention's).
    pub mlp_stats_after_attention: bool,
    /// Where scores and compensation do their linear algebra; unset: f64 on the host, except that the CLI
    /// chooses the device for `--backend cuda`.
    pub linalg: Option<Linalg>,
    pub seed: u64,
    pub eval: Option<EvalSpec>,
    /// Whole layers removed (and repaired) before the structures narrow the layers that stay; a parameter
    /// target then counts both steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<DepthFirst>,
    /// The search of importance `adapruner` (unset: its defaults); refused with any other importance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapruner: Option<AdaprunerSettings>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            structures: vec![StructureKind::KvGroups, StructureKind::Mlp],
            // Training-free and the most robust across text domains of what we measured (README).
            importance: Importance::Numerical,
            aggregation: Aggregation::Correct,
            allocation: Allocation::Uniform,
            ratio: None,
            target_params: None,
            layers: None,
            calibration: CalibSource::Sampled {
                samples: 32,
                length: 128,
            },
            calib_batch: None,
            compensation: Compensation::Ls,
            ridge: 0.01,
            mlp_stats_after_attention: false,
            linalg: None,
            seed: 42,
            eval: None,
            depth: None,
            adapruner: None,
        }
    }
}

impl Recipe {
    /// Parses a recipe file.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        parse_json(bytes, "recipe")
    }

    /// Whether the run removes whole decoder layers (`--structures layers`).
    pub fn prunes_depth(&self) -> bool {
        self.structures.contains(&StructureKind::Layers)
    }

    /// A run that removes whole layers and then narrows the rest ([`Self::depth`]) as two recipes: the depth
    /// step's (its ratio and score, uniform) and the width step's over the original model (see
    /// [`Self::narrowing_after`]).
    pub fn steps(&self) -> Option<(Recipe, Recipe)> {
        let d = self.depth?;
        let depth = Recipe {
            structures: vec![StructureKind::Layers],
            importance: d.importance,
            allocation: Allocation::Uniform,
            ratio: Some(d.ratio),
            target_params: None,
            depth: None,
            adapruner: None,
            ..self.clone()
        };
        let width = Recipe {
            depth: None,
            ..self.clone()
        };
        Some((depth, width))
    }

    /// This recipe and, for a run that removes whole layers first, its two [`Self::steps`]: every recipe one run
    /// applies, over which what the run holds at its peak is the largest.
    pub fn and_steps(&self) -> Vec<Recipe> {
        let steps = self
            .steps()
            .into_iter()
            .flat_map(|(depth, width)| [depth, width]);
        std::iter::once(self.clone()).chain(steps).collect()
    }

    /// The width step's recipe for the model left when `removed` layers of `cfg` went: the range loses them (its
    /// ends move up), and a parameter target `t` of the whole run becomes the share of the smaller model still
    /// to remove, `(t·P₀ − (P₀ − P₁)) / P₁`.
    pub fn narrowing_after(&self, cfg: &ModelConfig, removed: &[usize]) -> Result<Recipe> {
        let r = self.layer_range(cfg);
        let below = |l: usize| removed.iter().filter(|&&x| x < l).count();
        let target_params = match self.target_params {
            None => None,
            Some(t) => {
                let p0 = count_params(cfg).total as f64;
                let smaller = Plan::depth(cfg, removed.to_vec()).pruned_config(cfg);
                let p1 = count_params(&smaller).total as f64;
                let left = t * p0 - (p0 - p1);
                if left <= 0.0 {
                    return Err(Error::Invalid(format!(
                        "removing layers {removed:?} already takes {:.2}% of the parameters, the whole target \
                         {t}: lower the depth ratio or raise the target",
                        (p0 - p1) / p0 * 100.0
                    )));
                }
                Some(left / p1)
            }
        };
        Ok(Recipe {
            layers: Some(LayerRange {
                start: r.start - below(r.start),
                end: r.end - below(r.end),
            }),
            target_params,
            depth: None,
            ..self.clone()
        })
    }

    /// The pruned layer range for `cfg`.
    pub fn layer_range(&self, cfg: &ModelConfig) -> std::ops::Range<usize> {
        let r = self
            .layers
            .unwrap_or(LayerRange::default_for(cfg.num_layers()));
        r.start..r.end
    }

    /// Checks the recipe against the model before any work starts.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        self.check_run(cfg)?;
        self.check_amount(cfg)
    }

    /// Checks the recipe for applying a saved `plan` to the model (the plan replaces the ratio or target): every
    /// layer the plan removes from must lie in the recipe's layer range, which the sequential pass walks (a plan
    /// that removes whole layers and narrows others is applied in two steps, see [`Plan::split`]).
    pub fn check_with_plan(&self, cfg: &ModelConfig, plan: &Plan) -> Result<()> {
        plan.check(cfg)?;
        self.check_run(cfg)?;
        let r = self.layer_range(cfg);
        let outside = plan
            .layers
            .iter()
            .filter(|lp| !lp.is_empty())
            .map(|lp| lp.layer)
            .chain(plan.removed_layers.iter().copied())
            .find(|l| !r.contains(l));
        if let Some(l) = outside {
            return Err(Error::Invalid(format!(
                "the plan removes structures from layer {l}, outside the pruned layers {}..{} (set --layers)",
                r.start, r.end
            )));
        }
        Ok(())
    }

    /// Whether the run takes gradients: its score, or its depth step's, runs backward passes (unless a saved
    /// plan replaces the scores).
    pub fn runs_backward(&self) -> bool {
        let depth = self.depth.is_some_and(|d| d.importance.needs_backward());
        self.importance.needs_backward() || depth
    }

    /// Whether the run needs calibration windows: for its compensation, or for its score unless a saved plan
    /// replaces the scores.
    pub fn needs_calibration(&self, plan_given: bool) -> bool {
        let depth = self.depth.is_some_and(|d| d.importance.needs_calibration());
        let search = matches!(self.allocation, Allocation::Search(_));
        self.compensation != Compensation::None
            || (!plan_given && (self.importance.needs_calibration() || depth || search))
    }

    /// Whether the run solves with [`Self::ridge`]: a least-squares compensation, or the `obs` score unless a
    /// saved plan replaces the scores.
    pub fn uses_ridge(&self, plan_given: bool) -> bool {
        let solves = matches!(self.compensation, Compensation::Ls | Compensation::LsBias);
        solves || (!plan_given && self.importance == Importance::Obs)
    }

    /// Whether the run does linear algebra on calibration statistics (where [`Self::linalg`] says): the
    /// sequential pass's repairs and their errors, which run for any compensation and for an activation score
    /// unless a saved plan replaces the scores.
    pub fn uses_linalg(&self, plan_given: bool) -> bool {
        self.compensation != Compensation::None
            || (!plan_given && self.importance.needs_activations())
    }

    /// How much goes: one ratio or one parameter target, and an allocation that can use it (after
    /// [`Self::check_run`], so the layer range is valid).
    fn check_amount(&self, cfg: &ModelConfig) -> Result<()> {
        match (self.ratio, self.target_params) {
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give either a ratio or a parameter target, not both".into(),
                ))
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "give a ratio (--ratio) or a parameter target (--target-params)".into(),
                ))
            }
            (Some(r), None) if !(0.0..1.0).contains(&r) => {
                return Err(Error::Invalid(format!("ratio {r} is outside [0, 1)")))
            }
            (None, Some(t)) if !(t > 0.0 && t < 1.0) => {
                return Err(Error::Invalid(format!(
                    "parameter target {t} is outside (0, 1)"
                )))
            }
            _ => {}
        }
        match self.allocation {
            Allocation::Global if self.target_params.is_none() => {
                return Err(Error::Invalid(
                    "global allocation needs a parameter target (--target-params), not a ratio"
                        .into(),
                ))
            }
            Allocation::Search(_) if self.target_params.is_none() => {
                return Err(Error::Invalid(
                    "search allocation needs a parameter target (--target-params), not a ratio".into(),
                ))
            }
            Allocation::Search(settings) => settings.check()?,
            Allocation::AttnMlpRatio { gamma } if !(gamma > 0.0 && gamma.is_finite()) => {
                return Err(Error::Invalid(format!(
                    "attention:MLP ratio γ = {gamma} must be a finite number > 0"
                )))
            }
            Allocation::AttnMlpRatio { .. }
                if !self.prunes_depth()
                    && (!self.structures.contains(&StructureKind::Mlp)
                        || !self.structures.iter().any(|k| k.is_attention())) =>
            {
                return Err(Error::Invalid(
                    "the attention:MLP ratio sets the MLP's fraction from the attention's: prune both, an \
                     attention structure (kv-groups or query-heads) and mlp"
                        .into(),
                ))
            }
            Allocation::AttnMlpRatio { gamma } if self.ratio.is_some_and(|r| gamma * r >= 1.0) =>
            {
                return Err(Error::Invalid(format!(
                    "attention:MLP ratio γ = {gamma} at ratio {} would remove the whole MLP (γ × ratio must be < 1)",
                    self.ratio.unwrap_or_default()
                )))
            }
            _ => {}
        }
        if self.structures.is_empty() {
            return Err(Error::Invalid(
                "no structures to prune (kv-groups, query-heads, mlp, layers)".into(),
            ));
        }
        self.check_adapruner()?;
        if let Some((depth, _)) = self.steps() {
            self.check_depth_first(cfg, &depth)?;
        }
        if self.prunes_depth() {
            return self.check_depth(cfg);
        }
        if self.importance.ranks_only_layers() {
            return Err(Error::Invalid(format!(
                "{} ranks whole layers: use it with --structures layers",
                self.importance.name()
            )));
        }
        let r = self.layer_range(cfg);
        if self.structures.contains(&StructureKind::KvGroups)
            && cfg.layers[r.clone()].iter().all(|s| s.num_kv_heads < 2)
        {
            return Err(Error::Invalid(
                "the pruned layers have a single KV group each: there is no KV group to remove"
                    .into(),
            ));
        }
        if self.structures.contains(&StructureKind::QueryHeads) {
            if self.structures.contains(&StructureKind::KvGroups) {
                return Err(Error::Invalid(
                    "kv-groups and query-heads are two ways to narrow the attention (whole groups, or the same \
                     number of query heads from every group): choose one per run"
                        .into(),
                ));
            }
            if cfg.layers[r].iter().all(|s| s.n_rep() < 2) {
                return Err(Error::Invalid(
                    "every KV group of the pruned layers has a single query head (multi-head attention): there \
                     is no query head to remove inside a group; prune kv-groups instead"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Depth pruning: whole layers alone (or as the first step of a depth ratio), a score that ranks them, an
    /// amount that leaves a layer, and a layer before every repaired one.
    fn check_depth(&self, cfg: &ModelConfig) -> Result<()> {
        if self.structures.iter().any(|k| k.is_width()) {
            return Err(Error::Invalid(
                "whole layers are pruned in a run of their own (--structures layers), or first with a depth \
                 ratio (--depth-ratio) before the structures (kv-groups, query-heads, mlp) narrow the rest"
                    .into(),
            ));
        }
        if let Allocation::AttnMlpRatio { .. } | Allocation::Search(_) = self.allocation {
            return Err(Error::Invalid(
                "the attention:MLP ratio and search allocations spread width over modules and layers; whole \
                 layers take uniform or global"
                    .into(),
            ));
        }
        if self.importance == Importance::Adapruner {
            return Err(Error::Invalid(
                "adapruner mixes scores normalised within each layer, which cannot rank whole layers: use \
                 block-influence, perplexity, a Taylor score, l1, l2 or random"
                    .into(),
            ));
        }
        if !self.importance.ranks_layers() {
            return Err(Error::Invalid(format!(
                "{} scores columns of o_proj / down_proj and cannot rank whole layers: use block-influence, \
                 perplexity, a Taylor score, l1, l2 or random",
                self.importance.name()
            )));
        }
        let r = self.layer_range(cfg);
        if let Some(ratio) = self.ratio {
            let n = super::allocate::pruned_count(r.len(), ratio);
            if n == 0 {
                return Err(Error::Invalid(format!(
                    "ratio {ratio} removes none of the {} layers of the range {}..{}",
                    r.len(),
                    r.start,
                    r.end
                )));
            }
            if n >= cfg.num_layers() {
                return Err(Error::Invalid(format!(
                    "ratio {ratio} removes {n} of the model's {} layers: at least one must stay",
                    cfg.num_layers()
                )));
            }
        }
        if r.start == 0 && self.compensation != Compensation::None {
            return Err(Error::Invalid(
                "the range starts at layer 0, which has no layer before it to absorb its removal: start the \
                 range at 1 (--layers 1..), or use --compensation none"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whole layers first, then width: the depth step must be a valid depth run that leaves a layer of the range
    /// to narrow and, under a parameter target, something to narrow; the structures must be width ones.
    fn check_depth_first(&self, cfg: &ModelConfig, depth: &Recipe) -> Result<()> {
        if self.prunes_depth() {
            return Err(Error::Invalid(
                "a depth ratio removes whole layers before the structures narrow the rest: list only kv-groups, \
                 query-heads or mlp in the structures"
                    .into(),
            ));
        }
        let ratio = depth.ratio.unwrap_or_default();
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(Error::Invalid(format!(
                "depth ratio {ratio} is outside (0, 1)"
            )));
        }
        depth.check_depth(cfg)?;
        let r = self.layer_range(cfg);
        if super::allocate::pruned_count(r.len(), ratio) >= r.len() {
            return Err(Error::Invalid(format!(
                "depth ratio {ratio} removes all {} layers of the range {}..{}, leaving none to narrow",
                r.len(),
                r.start,
                r.end
            )));
        }
        // A target the removed layers already meet, counted as the range's first ones (exact when the range's
        // layers have equal sizes; the run checks again with the layers it removes).
        let first: Vec<usize> = (r.start..)
            .take(super::allocate::pruned_count(r.len(), ratio))
            .collect();
        self.narrowing_after(cfg, &first)?;
        Ok(())
    }

    /// AdaPruner's settings are valid and belong to it; its trials are planned by a per-layer or global
    /// allocation, not by the search allocation's own candidates.
    fn check_adapruner(&self) -> Result<()> {
        match (&self.adapruner, self.importance) {
            (Some(_), i) if i != Importance::Adapruner => Err(Error::Invalid(format!(
                "adapruner settings apply to importance adapruner, not {}",
                i.name()
            ))),
            (_, Importance::Adapruner) if matches!(self.allocation, Allocation::Search(_)) => {
                Err(Error::Invalid(
                    "adapruner plans each trial with the allocation, and the search allocation is a search of \
                     its own: use uniform, attn-mlp-ratio or global"
                        .into(),
                ))
            }
            (settings, Importance::Adapruner) => settings.clone().unwrap_or_default().check(),
            _ => Ok(()),
        }
    }

    /// Everything but the amount: layer range, ridge, calibration.
    fn check_run(&self, cfg: &ModelConfig) -> Result<()> {
        let r = self.layer_range(cfg);
        if r.start >= r.end {
            return Err(Error::Invalid(format!(
                "layer range {}..{} is empty (START..END with START < END)",
                r.start, r.end
            )));
        }
        if r.end > cfg.num_layers() {
            return Err(Error::Invalid(format!(
                "layer range {}..{} is outside the model's {} layers",
                r.start,
                r.end,
                cfg.num_layers()
            )));
        }
        if self.calib_batch == Some(0) {
            return Err(Error::Invalid(
                "the calibration batch (--calib-batch) must be at least 1 window".into(),
            ));
        }
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            return Err(Error::Invalid(format!(
                "ridge {} must be a finite number ≥ 0",
                self.ridge
            )));
        }
        match &self.calibration {
            CalibSource::Sampled { samples, length } if *samples == 0 || *length < 2 => {
                Err(Error::Invalid(format!(
                    "calibration needs at least one window of at least 2 tokens (got {samples} × {length})"
                )))
            }
            CalibSource::Ids { windows } => check_windows(windows, cfg.vocab_size),
            CalibSource::Sampled { .. } => Ok(()),
        }
    }
}
