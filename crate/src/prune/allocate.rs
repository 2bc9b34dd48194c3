//! Allocation (methods.md §3): how many structures each layer loses, and which.
//! * `uniform` removes the same fraction `r` of KV groups and MLP channels from every layer of a range, with
//!   LLM-Pruner's rounding;
//! * `attn-mlp-ratio` (NIRVANA) removes `r` of the KV groups and `γ·r` of the MLP channels, kept MLP widths
//!   rounded up to a multiple of 8;
//! * `global` (FLAP) z-normalises scores per layer and module and removes the lowest across all layers until a
//!   running count of removed parameters reaches the target.
//!
//! A parameter target is met by searching `r` (uniform, attn-mlp-ratio) or by the running count (global).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::importance::LayerScores;
use super::plan::{LayerPlan, Plan};
use super::structure::StructureKind;
use crate::error::{Error, Result};
use crate::model::params::count_params;
use crate::model::ModelConfig;

/// How removals are spread over layers and modules.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Allocation {
    /// The same fraction of every pruned layer's KV groups and MLP channels.
    #[default]
    Uniform,
    /// MLP pruned fraction = γ × the attention's (NIRVANA); kept MLP width a multiple of 8.
    AttnMlpRatio { gamma: f64 },
    /// One threshold on per-layer z-normalised scores, by a running count of removed parameters (FLAP).
    Global,
}

impl Allocation {
    /// One line for a user choosing an allocation.
    pub fn describe(self) -> &'static str {
        match self {
            Allocation::Uniform => "every pruned layer loses the same fraction (LLM-Pruner)",
            Allocation::AttnMlpRatio { .. } => {
                "MLP fraction = γ × attention fraction, MLP widths multiples of 8 (NIRVANA)"
            }
            Allocation::Global => {
                "z-normalised scores ranked across layers, cut at the parameter target (FLAP)"
            }
        }
    }

    /// `(kv groups, mlp channels)` that `layer` loses at fraction `r` (not for `global`, which has no `r`).
    pub fn counts(
        self,
        cfg: &ModelConfig,
        layer: usize,
        r: f64,
        kinds: &[StructureKind],
    ) -> (usize, usize) {
        let (kv, mlp) = uniform_counts(cfg, layer, r, kinds);
        match self {
            Allocation::Uniform | Allocation::Global => (kv, mlp),
            Allocation::AttnMlpRatio { gamma } => {
                let c = cfg.layers[layer].intermediate_size;
                let frac = (gamma * r).clamp(0.0, 1.0);
                let kept = ((c as f64 * (1.0 - frac) / 8.0).ceil() as usize * 8).clamp(1, c);
                let mlp = match kinds.contains(&StructureKind::Mlp) {
                    true => c - kept,
                    false => 0,
                };
                (kv, mlp)
            }
        }
    }
}

/// How many of `c` structures go at ratio `r` (LLM-Pruner's rounding): `C − ⌊C·(1−r)⌋`.
pub fn pruned_count(c: usize, r: f64) -> usize {
    c - (c as f64 * (1.0 - r)).floor() as usize
}

/// `(kv groups, mlp channels)` layer `shape` loses at ratio `r`: `n = C − ⌊C·(1−r)⌋` channels, then whole groups.
pub fn uniform_counts(
    cfg: &ModelConfig,
    layer: usize,
    r: f64,
    kinds: &[StructureKind],
) -> (usize, usize) {
    let s = &cfg.layers[layer];
    let pruned = |c: usize| pruned_count(c, r);
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

/// `cfg` after layer `l` loses `kv` KV groups (with their query heads) and `mlp` MLP channels.
fn shrink(cfg: &mut ModelConfig, l: usize, kv: usize, mlp: usize) {
    let s = &mut cfg.layers[l];
    let n_rep = s.n_rep();
    s.num_kv_heads -= kv;
    s.num_heads -= kv * n_rep;
    s.intermediate_size -= mlp;
}

/// The config after `alloc` removes its counts at fraction `r` in `layers` (parameter accounting before scoring).
pub fn shapes_at(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    r: f64,
    kinds: &[StructureKind],
    alloc: Allocation,
) -> ModelConfig {
    let mut out = cfg.clone();
    for l in layers.clone() {
        let (kv, mlp) = alloc.counts(cfg, l, r, kinds);
        shrink(&mut out, l, kv, mlp);
    }
    out
}

/// The smallest fraction `r` (to 1e-4) at which `alloc` removes at least `fraction` of all parameters.
pub fn ratio_for_target(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    fraction: f64,
    kinds: &[StructureKind],
    alloc: Allocation,
) -> Result<f64> {
    let total = count_params(cfg).total as f64;
    let removed =
        |r: f64| 1.0 - count_params(&shapes_at(cfg, layers, r, kinds, alloc)).total as f64 / total;
    let max = removed(0.9999);
    if fraction > max {
        return Err(out_of_reach(fraction, layers, max));
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

pub(super) fn out_of_reach(fraction: f64, layers: &Range<usize>, max: f64) -> Error {
    Error::Invalid(format!(
        "a target of {:.1}% of parameters is out of reach: pruning layers {}..{} at most removes {:.1}%",
        fraction * 100.0,
        layers.start,
        layers.end,
        max * 100.0
    ))
}

/// Indices from the lowest score to the highest (ties: lower index first): the pruning order.
pub fn lowest_order<T: Copy + Into<f64>>(scores: &[T]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y): (f64, f64) = (scores[a].into(), scores[b].into());
        x.total_cmp(&y).then(a.cmp(&b))
    });
    order
}

/// Indices of the `n` lowest scores (ties: lower index first), sorted.
pub fn lowest(scores: &[f32], n: usize) -> Vec<usize> {
    let mut out = lowest_order(scores)[..n].to_vec();
    out.sort_unstable();
    out
}

/// The plan of `alloc` at fraction `r`: in each scored layer, its count of lowest-scoring structures goes.
pub fn counted_plan(
    cfg: &ModelConfig,
    scores: &[LayerScores],
    r: f64,
    kinds: &[StructureKind],
    alloc: Allocation,
) -> Plan {
    let layers = scores
        .iter()
        .map(|s| {
            let (kv, mlp) = alloc.counts(cfg, s.layer, r, kinds);
            LayerPlan {
                layer: s.layer,
                kv_groups: lowest(&s.kv_groups, kv),
                mlp_channels: lowest(&s.mlp_channels, mlp),
            }
        })
        .collect();
    Plan::new(cfg, layers)
}

/// `(s − mean) / std` over one layer's structures of one kind (all zeros when they are all equal).
fn z_normalise(s: &[f32]) -> Vec<f64> {
    let n = s.len().max(1) as f64;
    let mean = s.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = s.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    s.iter()
        .map(|&x| match std > 0.0 {
            true => (x as f64 - mean) / std,
            false => 0.0,
        })
        .collect()
}

/// The global plan: structures of all scored layers ranked together by z-normalised score; the lowest go, one
/// by one, until at least `fraction` of all parameters is removed. Every layer keeps one KV group and one MLP
/// channel.
pub fn global_plan(
    cfg: &ModelConfig,
    scores: &[LayerScores],
    fraction: f64,
    kinds: &[StructureKind],
) -> Result<Plan> {
    let total = count_params(cfg).total;
    let need = (fraction * total as f64).ceil() as usize;
    // (z, layer slot, is_kv, index)
    let mut candidates: Vec<(f64, usize, bool, usize)> = vec![];
    for (slot, s) in scores.iter().enumerate() {
        if kinds.contains(&StructureKind::KvGroups) {
            let z = z_normalise(&s.kv_groups);
            candidates.extend(z.into_iter().enumerate().map(|(i, z)| (z, slot, true, i)));
        }
        if kinds.contains(&StructureKind::Mlp) {
            let z = z_normalise(&s.mlp_channels);
            candidates.extend(z.into_iter().enumerate().map(|(i, z)| (z, slot, false, i)));
        }
    }
    candidates.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then((a.1, !a.2, a.3).cmp(&(b.1, !b.2, b.3)))
    });
    // Parameters one structure of each kind carries in each layer.
    let cost = |l: usize, kv: bool| {
        let mut smaller = cfg.clone();
        shrink(&mut smaller, l, usize::from(kv), usize::from(!kv));
        total - count_params(&smaller).total
    };
    let costs: Vec<(usize, usize)> = scores
        .iter()
        .map(|s| (cost(s.layer, true), cost(s.layer, false)))
        .collect();
    let mut removed = 0usize;
    let mut chosen: Vec<(Vec<usize>, Vec<usize>)> = vec![(vec![], vec![]); scores.len()];
    for (_, slot, is_kv, i) in candidates {
        if removed >= need {
            break;
        }
        let shape = &cfg.layers[scores[slot].layer];
        let (kv, mlp) = &mut chosen[slot];
        let (list, limit, c) = match is_kv {
            true => (kv, shape.num_kv_heads, costs[slot].0),
            false => (mlp, shape.intermediate_size, costs[slot].1),
        };
        if list.len() + 1 < limit {
            list.push(i);
            removed += c;
        }
    }
    if removed < need {
        let layers =
            scores.first().map_or(0, |s| s.layer)..scores.last().map_or(0, |s| s.layer + 1);
        return Err(out_of_reach(
            fraction,
            &layers,
            removed as f64 / total as f64,
        ));
    }
    let layers = scores
        .iter()
        .zip(chosen)
        .map(|(s, (mut kv, mut mlp))| {
            kv.sort_unstable();
            mlp.sort_unstable();
            LayerPlan {
                layer: s.layer,
                kv_groups: kv,
                mlp_channels: mlp,
            }
        })
        .collect();
    Ok(Plan::new(cfg, layers))
}
