//! Allocation (methods.md §3): how many structures each layer loses, and which.
//! * `uniform` removes the same fraction `r` of KV groups (or of each group's query heads) and MLP channels from
//!   every layer of a range, with LLM-Pruner's rounding;
//! * `attn-mlp-ratio` (NIRVANA) removes `r` of the attention and `γ·r` of the MLP channels, kept MLP widths
//!   rounded up to a multiple of 8;
//! * `global` (FLAP) z-normalises scores per layer and module and removes the lowest across all layers until a
//!   running count of removed parameters reaches the target. Query heads go there one "rank" at a time: the
//!   next-lowest head of every group of the layer together, scored by the sum of their scores.
//!
//! * `search` looks for per-layer counts by an evolutionary search (see [`super::search`]).
//!
//! A parameter target is met by searching `r` (uniform, attn-mlp-ratio), by the running count (global) or by
//! the search's budget.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::importance::LayerScores;
use super::plan::{LayerPlan, Plan};
use super::search::SearchSettings;
use super::structure::{even_query_heads, query_heads, Aggregation, StructureKind};
use crate::error::{Error, Result};
use crate::model::params::count_params;
use crate::model::{LayerShape, ModelConfig};

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
    /// Per-layer counts found by an evolutionary search on the calibration loss (Search for Efficient LLMs).
    Search(SearchSettings),
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
            Allocation::Search(_) => {
                "per-layer counts searched by evolution on the calibration loss, at the parameter target"
            }
        }
    }

    /// What `layer` loses at fraction `r` (not for `global` or `search`, which have no `r`).
    pub fn counts(
        self,
        cfg: &ModelConfig,
        layer: usize,
        r: f64,
        kinds: &[StructureKind],
    ) -> Counts {
        let uniform = uniform_counts(cfg, layer, r, kinds);
        match self {
            Allocation::Uniform | Allocation::Global | Allocation::Search(_) => uniform,
            Allocation::AttnMlpRatio { gamma } => {
                let c = cfg.layers[layer].intermediate_size;
                let frac = (gamma * r).clamp(0.0, 1.0);
                let kept = ((c as f64 * (1.0 - frac) / 8.0).ceil() as usize * 8).clamp(1, c);
                let mlp_channels = match kinds.contains(&StructureKind::Mlp) {
                    true => c - kept,
                    false => 0,
                };
                Counts {
                    mlp_channels,
                    ..uniform
                }
            }
        }
    }
}

/// How many structures of each kind one layer loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counts {
    pub kv_groups: usize,
    /// Query heads removed from each KV group that stays.
    pub query_heads_per_group: usize,
    pub mlp_channels: usize,
}

impl Counts {
    /// The plan of a layer of shape `shape`, scored `s`, that loses these counts: its lowest-scored KV groups and
    /// MLP channels, and the lowest query heads of each group that stays.
    pub fn lowest_of(self, s: &LayerScores, shape: &LayerShape) -> LayerPlan {
        let kv_groups = lowest(&s.kv_groups, self.kv_groups);
        LayerPlan {
            layer: s.layer,
            query_heads: even_query_heads(
                &s.query_heads,
                shape,
                self.query_heads_per_group,
                &kv_groups,
            ),
            kv_groups,
            mlp_channels: lowest(&s.mlp_channels, self.mlp_channels),
        }
    }
}

/// How many of `c` structures go at ratio `r` (LLM-Pruner's rounding): `C − ⌊C·(1−r)⌋`.
pub fn pruned_count(c: usize, r: f64) -> usize {
    c - (c as f64 * (1.0 - r)).floor() as usize
}

/// What layer `layer` loses at ratio `r`: `n = C − ⌊C·(1−r)⌋` channels, then whole groups (or whole heads of
/// each group's `n_rep · head_dim` query channels); every layer keeps a group, a head per group and a channel.
pub fn uniform_counts(cfg: &ModelConfig, layer: usize, r: f64, kinds: &[StructureKind]) -> Counts {
    let (s, hd) = (&cfg.layers[layer], cfg.head_dim);
    let heads = |n: usize| (pruned_count(n * hd, r) / hd).min(n.saturating_sub(1));
    let when = |kind, n: usize| match kinds.contains(&kind) {
        true => n,
        false => 0,
    };
    Counts {
        kv_groups: when(StructureKind::KvGroups, heads(s.num_kv_heads)),
        query_heads_per_group: when(StructureKind::QueryHeads, heads(s.n_rep())),
        mlp_channels: when(
            StructureKind::Mlp,
            pruned_count(s.intermediate_size, r).min(s.intermediate_size.saturating_sub(1)),
        ),
    }
}

/// `cfg` after layer `l` loses what `c` counts.
fn shrink(cfg: &mut ModelConfig, l: usize, c: Counts) {
    let s = &mut cfg.layers[l];
    let n_rep = s.n_rep();
    s.num_kv_heads -= c.kv_groups;
    s.num_heads = s.num_kv_heads * (n_rep - c.query_heads_per_group);
    s.intermediate_size -= c.mlp_channels;
}

/// `cfg` after each `(layer, counts)` is removed.
pub fn shrunk(cfg: &ModelConfig, layers: &[(usize, Counts)]) -> ModelConfig {
    let mut out = cfg.clone();
    for &(l, c) in layers {
        shrink(&mut out, l, c);
    }
    out
}

/// The config after `alloc` removes its counts at fraction `r` in `layers` (parameter accounting before scoring).
pub fn shapes_at(
    cfg: &ModelConfig,
    layers: &Range<usize>,
    r: f64,
    kinds: &[StructureKind],
    alloc: Allocation,
) -> ModelConfig {
    let counts: Vec<_> = layers
        .clone()
        .map(|l| (l, alloc.counts(cfg, l, r, kinds)))
        .collect();
    shrunk(cfg, &counts)
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
            alloc
                .counts(cfg, s.layer, r, kinds)
                .lowest_of(s, &cfg.layers[s.layer])
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

/// Per-rank scores of a layer's query heads: rank `i` is the `i`-th lowest head of every KV group together,
/// scored by their sum (non-decreasing in `i`, so ranks go in order).
fn head_rank_scores(scores: &[f32], s: &LayerShape) -> Vec<f32> {
    let sorted: Vec<Vec<f32>> = (0..s.num_kv_heads)
        .map(|g| {
            let mut v: Vec<f32> = query_heads(s, g, Aggregation::Correct)
                .iter()
                .map(|&h| scores[h])
                .collect();
            v.sort_by(f32::total_cmp);
            v
        })
        .collect();
    (0..s.n_rep())
        .map(|i| sorted.iter().map(|v| v[i]).sum())
        .collect()
}

/// The global plan: structures of all scored layers ranked together by z-normalised score; the lowest go, one
/// by one, until at least `fraction` of all parameters is removed. Every layer keeps one KV group, one query
/// head per group and one MLP channel.
pub fn global_plan(
    cfg: &ModelConfig,
    scores: &[LayerScores],
    fraction: f64,
    kinds: &[StructureKind],
) -> Result<Plan> {
    // The kinds a candidate can be, in the order ties are broken.
    const KINDS: [StructureKind; 3] = [
        StructureKind::KvGroups,
        StructureKind::QueryHeads,
        StructureKind::Mlp,
    ];
    let total = count_params(cfg).total;
    let need = (fraction * total as f64).ceil() as usize;
    // Per layer slot and kind: the candidates' scores and the parameters one of them carries.
    let units = |s: &LayerScores, k: StructureKind| -> (Vec<f32>, usize) {
        let shape = &cfg.layers[s.layer];
        let (v, one) = match k {
            StructureKind::KvGroups => (
                s.kv_groups.clone(),
                Counts {
                    kv_groups: 1,
                    ..Default::default()
                },
            ),
            StructureKind::QueryHeads => (
                head_rank_scores(&s.query_heads, shape),
                Counts {
                    query_heads_per_group: 1,
                    ..Default::default()
                },
            ),
            _ => (
                s.mlp_channels.clone(),
                Counts {
                    mlp_channels: 1,
                    ..Default::default()
                },
            ),
        };
        let mut smaller = cfg.clone();
        shrink(&mut smaller, s.layer, one);
        (v, total - count_params(&smaller).total)
    };
    let table: Vec<Vec<(Vec<f32>, usize)>> = scores
        .iter()
        .map(|s| {
            KINDS
                .iter()
                .map(|&k| match kinds.contains(&k) {
                    true => units(s, k),
                    false => (vec![], 0),
                })
                .collect()
        })
        .collect();
    // (z, layer slot, kind, index)
    let mut candidates: Vec<(f64, usize, usize, usize)> = vec![];
    for (slot, row) in table.iter().enumerate() {
        for (k, (v, _)) in row.iter().enumerate() {
            let z = z_normalise(v);
            candidates.extend(z.into_iter().enumerate().map(|(i, z)| (z, slot, k, i)));
        }
    }
    candidates.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    let mut removed = 0usize;
    let mut chosen: Vec<[Vec<usize>; 3]> = vec![Default::default(); scores.len()];
    for (_, slot, k, i) in candidates {
        if removed >= need {
            break;
        }
        let (v, cost) = &table[slot][k];
        let list = &mut chosen[slot][k];
        if list.len() + 1 < v.len() {
            list.push(i);
            removed += cost;
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
        .map(|(s, [mut kv, ranks, mut mlp])| {
            kv.sort_unstable();
            mlp.sort_unstable();
            let shape = &cfg.layers[s.layer];
            LayerPlan {
                layer: s.layer,
                query_heads: even_query_heads(&s.query_heads, shape, ranks.len(), &kv),
                kv_groups: kv,
                mlp_channels: mlp,
            }
        })
        .collect();
    Ok(Plan::new(cfg, layers))
}
