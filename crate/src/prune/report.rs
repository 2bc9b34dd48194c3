//! The [`Report`] of a run: recipe, plan, parameters before/after (total and per module), per-layer shapes, score
//! summaries, time per stage and evaluation. Written as `report.json` (`schema_version` 1).

use serde::Serialize;

use super::adapruner::Tuned;
use super::importance::LayerScores;
use super::plan::Plan;
use super::recipe::Recipe;
use super::search::SearchRecord;
use super::sequential::Reconstruction;
use super::structure::StructureKind;
use crate::eval::{ChoiceAccuracy, Perplexity};
use crate::model::params::{count_params, ParamCount};
use crate::model::LayerShape;
use crate::model::ModelConfig;

pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// Wall time of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// Min / mean / max of a layer's scores of one structure kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub min: f32,
    pub mean: f32,
    pub max: f32,
}

impl Summary {
    fn of(v: &[f32]) -> Self {
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Self {
            min,
            mean: v.iter().sum::<f32>() / v.len().max(1) as f32,
            max,
        }
    }
}

/// Score summary of one layer (the full scores are in the page's heatmap).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub kv_groups: Vec<f32>,
    /// One per query head, when query heads were pruned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_heads: Vec<f32>,
    /// Absent when whole layers were ranked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_channels: Option<Summary>,
    /// The whole layer's score (depth pruning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole: Option<f64>,
}

/// Perplexity before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub before: Perplexity,
    pub after: Perplexity,
}

/// Multiple-choice accuracy before and after, on the task file named.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TasksReport {
    pub task: String,
    pub before: ChoiceAccuracy,
    pub after: ChoiceAccuracy,
}

/// Everything a run produced, except the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub recipe: Recipe,
    /// The per-layer ratio used (given, or found for the parameter target); `None` for global allocation. For
    /// whole layers, the fraction of the range's layers given (`None` for a parameter target).
    pub ratio: Option<f64>,
    pub params_before: ParamCount,
    pub params_after: ParamCount,
    /// Fraction of all parameters removed.
    pub removed_fraction: f64,
    pub layers_before: Vec<LayerShape>,
    pub layers_after: Vec<LayerShape>,
    pub plan: Plan,
    pub scores: Vec<LayerSummary>,
    /// Per layer and compensated module: relative output error before and after the repair.
    pub reconstruction: Vec<Reconstruction>,
    pub timings: Vec<StageTime>,
    pub eval: Option<EvalReport>,
    /// Set by the CLI's `prune --tasks` and by the browser lab's multiple-choice option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TasksReport>,
    /// What AdaPruner's search found (importance `adapruner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapruner: Option<Tuned>,
    /// How the `search` allocation went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchRecord>,
}

impl Report {
    /// The report of a run on a model of config `before` that produced `after`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        recipe: &Recipe,
        ratio: Option<f64>,
        before: &ModelConfig,
        after: &ModelConfig,
        plan: Plan,
        scores: &[LayerScores],
        reconstruction: Vec<Reconstruction>,
        timings: Vec<StageTime>,
        eval: Option<EvalReport>,
    ) -> Self {
        let (pb, pa) = (count_params(before), count_params(after));
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            recipe: recipe.clone(),
            ratio,
            removed_fraction: 1.0 - pa.total as f64 / pb.total as f64,
            params_before: pb,
            params_after: pa,
            layers_before: before.layers.clone(),
            layers_after: after.layers.clone(),
            plan,
            scores: summarise(scores, recipe),
            reconstruction,
            timings,
            eval,
            tasks: None,
            adapruner: None,
            search: None,
        }
    }
}

/// Summaries of the per-layer scores (query heads' only when the recipe prunes them).
fn summarise(scores: &[LayerScores], recipe: &Recipe) -> Vec<LayerSummary> {
    let heads = recipe.structures.contains(&StructureKind::QueryHeads);
    scores
        .iter()
        .map(|s| LayerSummary {
            layer: s.layer,
            kv_groups: s.kv_groups.clone(),
            query_heads: match heads {
                true => s.query_heads.clone(),
                false => vec![],
            },
            mlp_channels: (!s.mlp_channels.is_empty()).then(|| Summary::of(&s.mlp_channels)),
            whole: s.whole,
        })
        .collect()
}
