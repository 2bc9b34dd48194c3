//! Coupled structures (methods.md §1): what goes together when a KV group, a query head inside its group, an MLP
//! channel or a whole decoder layer is removed, and how query heads are credited to KV groups.

use serde::{Deserialize, Serialize};

use crate::model::LayerShape;

/// How query heads' scores are credited to KV groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Query head `h` belongs to KV group `h / n_rep`, as HF `repeat_kv` pairs them.
    #[default]
    Correct,
    /// The published LLM-Pruner code (`imp.view(len/min, min).sum(0)`): head `h`'s score is credited to group
    /// `h mod n_kv` (removal still takes the heads `h / n_rep`). Reproduces published numbers.
    LlmPruner,
}

/// Which structures a run prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StructureKind {
    /// A KV head with its query heads (rows of q/k/v, columns of o_proj).
    KvGroups,
    /// A query head inside its KV group (rows of q, columns of o_proj), the same number from every group of a
    /// layer so that HF `repeat_kv` still pairs the heads that stay with their groups (GQA only).
    QueryHeads,
    /// An MLP channel (rows of gate/up, a column of down_proj).
    Mlp,
    /// A whole decoder layer (depth pruning): every tensor of `model.layers.{l}`; the layers after it move up.
    Layers,
}

impl StructureKind {
    /// Parses `kv-groups`, `query-heads`, `mlp` or `layers`.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_string())).ok()
    }

    /// Whether the kind removes width inside a layer (KV groups, query heads, MLP channels) rather than whole
    /// layers.
    pub fn is_width(self) -> bool {
        self != StructureKind::Layers
    }

    /// Whether the kind narrows the attention (KV groups or query heads).
    pub fn is_attention(self) -> bool {
        matches!(self, StructureKind::KvGroups | StructureKind::QueryHeads)
    }
}

/// The query heads of KV group `g` in a layer of shape `s`.
pub fn query_heads(s: &LayerShape, g: usize, agg: Aggregation) -> Vec<usize> {
    let (n_rep, n_kv) = (s.n_rep(), s.num_kv_heads);
    match agg {
        Aggregation::Correct => (g * n_rep..(g + 1) * n_rep).collect(),
        Aggregation::LlmPruner => (0..n_rep).map(|r| r * n_kv + g).collect(),
    }
}

/// Folds a per-channel vector over query channels (`num_heads · head_dim`) onto KV channels
/// (`num_kv_heads · head_dim`) by summing each group's query heads channel by channel.
pub fn fold_query_channels(
    v: &[f32],
    s: &LayerShape,
    head_dim: usize,
    agg: Aggregation,
) -> Vec<f32> {
    let mut out = vec![0.0; s.num_kv_heads * head_dim];
    for g in 0..s.num_kv_heads {
        for h in query_heads(s, g, agg) {
            for d in 0..head_dim {
                out[g * head_dim + d] += v[h * head_dim + d];
            }
        }
    }
    out
}

/// Channel indices `[start·width, (start+1)·width)` for each of `blocks`.
pub fn expand(blocks: &[usize], width: usize) -> Vec<usize> {
    blocks
        .iter()
        .flat_map(|&b| b * width..(b + 1) * width)
        .collect()
}

/// The query heads that go when every KV group of a layer of shape `s` outside `removed_groups` loses its
/// `per_group` lowest-scored heads (`scores` has one entry per query head; ties: lower index first), sorted.
pub fn even_query_heads(
    scores: &[f32],
    s: &LayerShape,
    per_group: usize,
    removed_groups: &[usize],
) -> Vec<usize> {
    if per_group == 0 {
        return vec![];
    }
    let mut out: Vec<usize> = (0..s.num_kv_heads)
        .filter(|g| !removed_groups.contains(g))
        .flat_map(|g| {
            let heads = query_heads(s, g, Aggregation::Correct);
            let own: Vec<f32> = heads.iter().map(|&h| scores[h]).collect();
            super::allocate::lowest(&own, per_group)
                .into_iter()
                .map(move |i| heads[i])
        })
        .collect();
    out.sort_unstable();
    out
}
