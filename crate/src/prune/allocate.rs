//! Allocation (methods.md §3): how many structures each layer loses, and which. `uniform` removes the same
//! fraction of KV groups and MLP channels from every layer of a range, with LLM-Pruner's rounding; a parameter
//! target is met by searching the ratio.

use std::ops::Range;

use super::importance::LayerScores;
use super::plan::{LayerPlan, Plan};
use super::structure::StructureKind;
use crate::error::{Error, Result};
use crate::model::params::count_params;
use crate::model::ModelConfig;

/// `(kv groups, mlp channels)` layer `shape` loses at ratio `r`: `n = C − ⌊C·(1−r)⌋` channels, then whole groups.
pub fn uniform_counts(
    cfg: &ModelConfig,
    layer: usize,
    r: f64,
    kinds: &[StructureKind],
) -> (usize, usize) {
    let s = &cfg.layers[layer];
    let pruned = |c: usize| c - (c as f64 * (1.0 - r)).floor() as usize;
    let kv = match kinds.contains(&StructureKind::KvGroups) {
        true => (pruned(s.num_kv_heads * cfg.head_dim) / cfg.head_dim)
            .min(s.num_kv_heads.saturating_sub(1)),
        false => 0,
    };
    let mlp = match kinds.contains(&StructureKind::Mlp) {
        true => pruned(s.intermediate_size).min(s.intermediate_size.saturating_sub(1)),
        false => 0,
    };
    (kv, mlp)
}

/// The config after removing `uniform_counts` in `layers` (for parameter accounting before scoring).
pub fn uniform_shapes(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    r: f64,
    kinds: &[StructureKind],
) -> ModelConfig {
    let mut out = cfg.clone();
    for l in layers.clone() {
        let (kv, mlp) = uniform_counts(cfg, l, r, kinds);
        let s = &mut out.layers[l];
        let n_rep = s.n_rep();
        s.num_kv_heads -= kv;
        s.num_heads -= kv * n_rep;
        s.intermediate_size -= mlp;
    }
    out
}

/// The smallest ratio (to 1e-4) whose uniform plan removes at least `fraction` of all parameters.
pub fn ratio_for_target(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    fraction: f64,
    kinds: &[StructureKind],
) -> Result<f64> {
    let total = count_params(cfg).total as f64;
    let removed =
        |r: f64| 1.0 - count_params(&uniform_shapes(cfg, layers, r, kinds)).total as f64 / total;
    let max = removed(0.9999);
    if fraction > max {
        return Err(Error::Invalid(format!(
            "a target of {:.1}% of parameters is out of reach: pruning layers {}..{} at most removes {:.1}%",
            fraction * 100.0,
            layers.start,
            layers.end,
            max * 100.0
        )));
    }
    let (mut lo, mut hi) = (0.0f64, 0.9999f64);
    while hi - lo > 1e-4 {
        let mid = (lo + hi) / 2.0;
        if removed(mid) >= fraction {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// Indices of the `n` lowest scores (ties: lower index first), sorted.
pub fn lowest(scores: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut out = order[..n].to_vec();
    out.sort_unstable();
    out
}

/// The uniform plan: in each scored layer, the lowest-scoring KV groups and MLP channels go.
pub fn uniform_plan(
    cfg: &ModelConfig,
    scores: &[LayerScores],
    r: f64,
    kinds: &[StructureKind],
) -> Plan {
    let layers = scores
        .iter()
        .map(|s| {
            let (kv, mlp) = uniform_counts(cfg, s.layer, r, kinds);
            LayerPlan {
                layer: s.layer,
                kv_groups: lowest(&s.kv_groups, kv),
                mlp_channels: lowest(&s.mlp_channels, mlp),
            }
        })
        .collect();
    Plan::new(cfg, layers)
}
