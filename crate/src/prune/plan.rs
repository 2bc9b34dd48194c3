//! A [`Plan`] says, per layer, which KV groups, query heads and MLP channels go, and which whole layers go (depth
//! pruning). It
//! is JSON (saved with every output, editable, applied later) and is checked against the model before anything
//! is sliced. [`apply`] slices every tensor a removed structure owns, drops removed layers (the ones after them
//! move up) and updates the per-layer config in the same step.

use burn::module::Param;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::structure::{expand, query_heads, Aggregation};
use crate::error::{parse_json, Error, Result};
use crate::model::linear::Linear;
use crate::model::llama::Block;
use crate::model::{LayerShape, Llama, ModelConfig};

/// Format tag and version of plan files.
pub const PLAN_FORMAT: &str = "prunelab-plan";
pub const PLAN_VERSION: u32 = 1;

/// What is removed from one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerPlan {
    pub layer: usize,
    /// KV groups removed (each with its query heads).
    pub kv_groups: Vec<usize>,
    /// Query heads removed from the groups that stay, the same number from each (indices of the original
    /// layer); absent from files without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_heads: Vec<usize>,
    /// MLP channels removed.
    pub mlp_channels: Vec<usize>,
}

impl LayerPlan {
    /// A plan that removes nothing from `layer`.
    pub fn keep_all(layer: usize) -> Self {
        Self {
            layer,
            kv_groups: vec![],
            query_heads: vec![],
            mlp_channels: vec![],
        }
    }

    /// Whether the layer loses nothing.
    pub fn is_empty(&self) -> bool {
        self.kv_groups.is_empty() && self.query_heads.is_empty() && self.mlp_channels.is_empty()
    }

    /// Checks the query heads against a layer of shape `s`: none in a removed group, every kept group losing the
    /// same number and keeping at least one (so that HF `repeat_kv` pairs the heads that stay with their group).
    fn check_query_heads(&self, s: &LayerShape) -> Result<()> {
        let l = self.layer;
        let n_rep = s.n_rep();
        if let Some(h) = self
            .query_heads
            .iter()
            .find(|&&h| self.kv_groups.contains(&(h / n_rep)))
        {
            return Err(Error::Invalid(format!(
                "plan layer {l}: query head {h} belongs to KV group {}, which is removed whole",
                h / n_rep
            )));
        }
        let kept_groups = (0..s.num_kv_heads).filter(|g| !self.kv_groups.contains(g));
        let lost: Vec<(usize, usize)> = kept_groups
            .map(|g| {
                (
                    g,
                    self.query_heads.iter().filter(|&&h| h / n_rep == g).count(),
                )
            })
            .collect();
        if let Some((g, _)) = lost.iter().find(|(_, n)| *n >= n_rep) {
            return Err(Error::Invalid(format!(
                "plan layer {l}: removes all {n_rep} query heads of KV group {g}; remove the group \
                 (kv_groups) instead"
            )));
        }
        if let (Some(a), Some(b)) = (lost.first(), lost.iter().find(|(_, n)| *n != lost[0].1)) {
            return Err(Error::Invalid(format!(
                "plan layer {l}: KV group {} loses {} query heads and group {} loses {}: every group must keep \
                 the same number of query heads, or transformers and llama.cpp cannot load the model",
                a.0, a.1, b.0, b.1
            )));
        }
        Ok(())
    }
}

/// The shapes a plan was made for: a plan only applies to the model it was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub hidden_size: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub layers: Vec<LayerShape>,
}

impl Fingerprint {
    /// The first way `self` (the plan's model) differs from `other` (the model at hand), in words.
    fn difference(&self, other: &Fingerprint) -> Option<String> {
        let sizes = [
            ("hidden_size", self.hidden_size, other.hidden_size),
            ("head_dim", self.head_dim, other.head_dim),
            ("vocab_size", self.vocab_size, other.vocab_size),
            ("layers", self.layers.len(), other.layers.len()),
        ];
        if let Some((what, a, b)) = sizes.iter().find(|(_, a, b)| a != b) {
            return Some(format!("{what} {a}, this model's {b}"));
        }
        let (l, (a, b)) = self
            .layers
            .iter()
            .zip(&other.layers)
            .enumerate()
            .find(|(_, (a, b))| a != b)?;
        Some(format!(
            "layer {l} has {} query heads, {} KV heads and MLP width {} there, {} / {} / {} here",
            a.num_heads,
            a.num_kv_heads,
            a.intermediate_size,
            b.num_heads,
            b.num_kv_heads,
            b.intermediate_size
        ))
    }
}

/// Which structures go, per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub model: Fingerprint,
    pub layers: Vec<LayerPlan>,
    /// Whole decoder layers removed (indices of the original model, sorted); absent from files without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_layers: Vec<usize>,
}

/// Rows and columns a layer keeps.
pub struct Kept {
    /// Query heads kept (rows of q, columns of o in units of `head_dim`).
    pub heads: Vec<usize>,
    pub kv_groups: Vec<usize>,
    pub mlp: Vec<usize>,
}

impl Kept {
    /// What a layer of shape `s` keeps after losing KV `groups`, query `heads` (of the other groups) and MLP
    /// channels `mlp`.
    pub fn of(s: &LayerShape, groups: &[usize], heads: &[usize], mlp: &[usize]) -> Self {
        // A KV group always takes the query heads HF pairs with it (h / n_rep), whatever the scores credited:
        // the published LLM-Pruner code does the same, and any other choice would re-pair the heads that stay.
        let removed_heads: Vec<usize> = groups
            .iter()
            .flat_map(|&g| query_heads(s, g, Aggregation::Correct))
            .chain(heads.iter().copied())
            .collect();
        Kept {
            heads: (0..s.num_heads)
                .filter(|h| !removed_heads.contains(h))
                .collect(),
            kv_groups: (0..s.num_kv_heads)
                .filter(|g| !groups.contains(g))
                .collect(),
            mlp: (0..s.intermediate_size)
                .filter(|c| !mlp.contains(c))
                .collect(),
        }
    }

    /// The layer's shape afterwards.
    pub fn shape(&self) -> LayerShape {
        LayerShape {
            num_heads: self.heads.len(),
            num_kv_heads: self.kv_groups.len(),
            intermediate_size: self.mlp.len(),
        }
    }
}

impl Plan {
    /// A plan for `cfg`.
    pub fn new(cfg: &ModelConfig, layers: Vec<LayerPlan>) -> Self {
        Self {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            model: Fingerprint {
                hidden_size: cfg.hidden_size,
                head_dim: cfg.head_dim,
                vocab_size: cfg.vocab_size,
                layers: cfg.layers.clone(),
            },
            layers,
            removed_layers: vec![],
        }
    }

    /// A depth plan for `cfg`: the decoder layers `removed` go whole.
    pub fn depth(cfg: &ModelConfig, mut removed: Vec<usize>) -> Self {
        removed.sort_unstable();
        Self {
            removed_layers: removed,
            ..Self::new(cfg, vec![])
        }
    }

    /// Parses a plan file.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let plan: Plan = parse_json(bytes, "plan")?;
        if plan.format != PLAN_FORMAT || plan.version != PLAN_VERSION {
            return Err(Error::Invalid(format!(
                "plan: format {} version {} (expected {PLAN_FORMAT} version {PLAN_VERSION})",
                plan.format, plan.version
            )));
        }
        Ok(plan)
    }

    /// Checks the plan fits `cfg`: same shapes, indices in range and unique, no layer emptied, at least one layer
    /// left, and no layer both removed whole and narrowed.
    pub fn check(&self, cfg: &ModelConfig) -> Result<()> {
        let fp = Plan::new(cfg, vec![]).model;
        if let Some(difference) = self.model.difference(&fp) {
            return Err(Error::Invalid(format!(
                "the plan was made for another model: {difference}"
            )));
        }
        let mut seen = vec![false; cfg.num_layers()];
        for lp in &self.layers {
            let s = cfg.layers.get(lp.layer).ok_or_else(|| {
                Error::Invalid(format!(
                    "plan names layer {} but the model has {}",
                    lp.layer,
                    cfg.num_layers()
                ))
            })?;
            if std::mem::replace(&mut seen[lp.layer], true) {
                return Err(Error::Invalid(format!(
                    "plan names layer {} twice",
                    lp.layer
                )));
            }
            let check = |v: &[usize], n: usize, what: &str| -> Result<()> {
                let mut sorted = v.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != v.len() || v.iter().any(|&i| i >= n) || v.len() >= n {
                    return Err(Error::Invalid(format!(
                        "plan layer {}: {what} {v:?} must be distinct indices below {n}, leaving at least one",
                        lp.layer
                    )));
                }
                Ok(())
            };
            check(&lp.kv_groups, s.num_kv_heads, "KV groups")?;
            check(&lp.query_heads, s.num_heads, "query heads")?;
            lp.check_query_heads(s)?;
            check(&lp.mlp_channels, s.intermediate_size, "MLP channels")?;
            if !lp.is_empty() && self.removed_layers.contains(&lp.layer) {
                return Err(Error::Invalid(format!(
                    "plan layer {} is removed whole and also loses KV groups, query heads or MLP channels",
                    lp.layer
                )));
            }
        }
        let (n, removed) = (cfg.num_layers(), &self.removed_layers);
        let bad = |why: String| {
            Err(Error::Invalid(format!(
                "plan removed_layers {removed:?}: {why}"
            )))
        };
        if removed.windows(2).any(|w| w[0] >= w[1]) {
            return bad("layer indices must be distinct and increasing".into());
        }
        if let Some(l) = removed.iter().find(|&&l| l >= n) {
            return bad(format!("layer {l} is not below the model's {n} layers"));
        }
        if removed.len() >= n {
            return bad(format!("removes all {n} layers; at least one must stay"));
        }
        Ok(())
    }

    /// The layers of the original model that stay, in order (the pruned model's layer `i` is the `i`-th).
    pub fn kept_layers(&self, cfg: &ModelConfig) -> Vec<usize> {
        (0..cfg.num_layers())
            .filter(|l| !self.removed_layers.contains(l))
            .collect()
    }

    /// What layer `layer` keeps.
    pub fn kept(&self, cfg: &ModelConfig, layer: usize) -> Kept {
        match self.layers.iter().find(|p| p.layer == layer) {
            Some(p) => Kept::of(
                &cfg.layers[layer],
                &p.kv_groups,
                &p.query_heads,
                &p.mlp_channels,
            ),
            None => Kept::of(&cfg.layers[layer], &[], &[], &[]),
        }
    }

    /// This depth plan followed by `width`, a plan for the model it leaves: one plan for `cfg`, the width plan's
    /// layers renumbered to `cfg`'s.
    pub fn then(&self, cfg: &ModelConfig, width: Plan) -> Plan {
        let kept = self.kept_layers(cfg);
        let layers = width
            .layers
            .into_iter()
            .map(|lp| LayerPlan {
                layer: kept[lp.layer],
                ..lp
            })
            .collect();
        Plan {
            removed_layers: self.removed_layers.clone(),
            ..Plan::new(cfg, layers)
        }
    }

    /// The plan as its whole layers for `cfg` and then the rest for the model they leave (the inverse of
    /// [`Self::then`]).
    pub fn split(&self, cfg: &ModelConfig) -> (Plan, Plan) {
        let depth = Plan::depth(cfg, self.removed_layers.clone());
        let kept = depth.kept_layers(cfg);
        let layers = self
            .layers
            .iter()
            .filter_map(|lp| {
                let i = kept.iter().position(|&l| l == lp.layer)?;
                Some(LayerPlan {
                    layer: i,
                    ..lp.clone()
                })
            })
            .collect();
        let width = Plan::new(&depth.pruned_config(cfg), layers);
        (depth, width)
    }

    /// The configuration after the plan.
    pub fn pruned_config(&self, cfg: &ModelConfig) -> ModelConfig {
        let mut out = cfg.clone();
        out.layers = self
            .kept_layers(cfg)
            .into_iter()
            .map(|l| self.kept(cfg, l).shape())
            .collect();
        out
    }
}

/// Slices one decoder layer to what it keeps: rows of q/k/v/gate/up, columns of o/down (and biases).
/// A module that keeps all its heads or channels is left untouched.
pub fn apply_layer<B: Backend>(block: &mut Block<B>, kept: &Kept) {
    let device = block.self_attn.q_proj.weight.device();
    let hd = block.self_attn.head_dim;
    let a = &mut block.self_attn;
    if kept.heads.len() < a.num_heads() {
        let q_rows = index::<B>(&expand(&kept.heads, hd), &device);
        let kv_rows = index::<B>(&expand(&kept.kv_groups, hd), &device);
        a.q_proj = keep_rows(a.q_proj.clone(), &q_rows);
        a.k_proj = keep_rows(a.k_proj.clone(), &kv_rows);
        a.v_proj = keep_rows(a.v_proj.clone(), &kv_rows);
        a.o_proj = keep_cols(a.o_proj.clone(), &q_rows);
    }
    let m = &mut block.mlp;
    if kept.mlp.len() < m.gate_proj.weight.dims()[0] {
        let mlp = index::<B>(&kept.mlp, &device);
        m.gate_proj = keep_rows(m.gate_proj.clone(), &mlp);
        m.up_proj = keep_rows(m.up_proj.clone(), &mlp);
        m.down_proj = keep_cols(m.down_proj.clone(), &mlp);
    }
}

/// `idx` as an index tensor.
pub(crate) fn index<B: Backend>(idx: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Keeps output rows `rows` of a linear (and of its bias).
fn keep_rows<B: Backend>(lin: Linear<B>, rows: &Tensor<B, 1, Int>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(lin.weight.val().select(0, rows.clone())),
        bias: lin
            .bias
            .map(|b| Param::from_tensor(b.val().select(0, rows.clone()))),
    }
}

/// Keeps input columns `cols` of a linear (its bias is per output row and stays).
fn keep_cols<B: Backend>(lin: Linear<B>, cols: &Tensor<B, 1, Int>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(lin.weight.val().select(1, cols.clone())),
        bias: lin.bias,
    }
}

/// Applies `plan` to `model`: slices q/k/v/gate/up rows, o/down columns (and biases), drops removed layers and
/// updates the config.
pub fn apply<B: Backend>(mut model: Llama<B>, plan: &Plan) -> Result<Llama<B>> {
    plan.check(&model.config)?;
    let cfg = model.config.clone();
    for lp in &plan.layers {
        apply_layer(&mut model.layers[lp.layer], &plan.kept(&cfg, lp.layer));
    }
    model.layers = std::mem::take(&mut model.layers)
        .into_iter()
        .enumerate()
        .filter(|(l, _)| !plan.removed_layers.contains(l))
        .map(|(_, block)| block)
        .collect();
    model.config = plan.pruned_config(&cfg);
    Ok(model)
}
