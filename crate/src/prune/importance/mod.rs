//! Importance scores: how much each structure matters. One file per family, one entry per score in
//! [`Importance`]; [`score_layer`] turns per-channel member scores into scores per KV group, query head and MLP
//! channel.

pub mod activation;
pub mod block_influence;
pub mod magnitude;
pub mod ntk;
pub mod random;
pub mod taylor;

use std::collections::HashMap;

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use super::linalg::column_sums;
use super::structure::{fold_query_channels, Aggregation};
use crate::error::Result;
use crate::model::llama::Block;
use crate::model::tensors::layer_tensor;
use crate::model::{LayerShape, Llama};
use crate::progress::{checkpoint, Progress, ProgressEvent};
use crate::readback::to_vec;

/// The registry of scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    Random,
    L1,
    L2,
    TaylorVector,
    TaylorFirst,
    TaylorSecond,
    TaylorMix,
    /// NIRVANA: `Σ |W ⊙ ∂f/∂W|` with `f` a functional of the logits, not the loss.
    Ntk,
    /// Training-free, from calibration activations of o_proj / down_proj inputs (sequential pipeline).
    WandaSp,
    Flap,
    Obs,
    Numerical,
    /// Whole layers only: ShortGPT's Block Influence, from calibration activations of the unpruned model.
    BlockInfluence,
    /// Whole layers only: "Shortened LLaMA"'s PPL criterion, the calibration perplexity with the layer skipped.
    Perplexity,
    /// AdaPruner: a mix of gradient and magnitude scores, and the calibration windows they are computed on,
    /// chosen by Bayesian optimisation ([`crate::prune::adapruner`]).
    Adapruner,
}

impl Importance {
    /// Every score, in the order the page lists them.
    pub const ALL: [Importance; 15] = [
        Importance::Random,
        Importance::L1,
        Importance::L2,
        Importance::TaylorVector,
        Importance::TaylorFirst,
        Importance::TaylorSecond,
        Importance::TaylorMix,
        Importance::Ntk,
        Importance::WandaSp,
        Importance::Flap,
        Importance::Obs,
        Importance::Numerical,
        Importance::BlockInfluence,
        Importance::Perplexity,
        Importance::Adapruner,
    ];

    /// The score's name as recipes and flags spell it (`taylor-first`, `block-influence`, …).
    pub fn name(self) -> String {
        crate::prune::spelled(self)
    }

    /// One line for a user choosing a score.
    pub fn describe(self) -> &'static str {
        match self {
            Importance::Random => "seeded random draw per structure (baseline)",
            Importance::L1 => "sum of |W| over the structure's weights",
            Importance::L2 => "sum of W² over the structure's weights",
            Importance::TaylorVector => "LLM-Pruner Vector: |Σ W·∂L/∂W| per channel",
            Importance::TaylorFirst => "LLM-Pruner Element¹: Σ |W·∂L/∂W| (its default)",
            Importance::TaylorSecond => "Hessian term alone: Σ W²·F, F from per-sample gradients",
            Importance::TaylorMix => "LLM-Pruner Element²: Σ |W·∂L/∂W − ½W²·F|",
            Importance::Ntk => {
                "NIRVANA: Σ |W·∂f/∂W|, f = mean over windows and vocabulary of each logit's max over positions"
            }
            Importance::WandaSp => "Wanda-sp: mean |W_ij| · ‖x_j‖ per input column",
            Importance::Flap => "FLAP fluctuation: var(x_j) · ‖W[:,j]‖²",
            Importance::Obs => {
                "OBS: error of removing column j after an optimal refit, Σ W_ij² / [(G+λI)⁻¹]_jj"
            }
            Importance::Numerical => {
                "Numerical Pruning: u = A⁻¹1, A = (WᵀW)∘G; the columns with the largest u go first"
            }
            Importance::BlockInfluence => {
                "ShortGPT Block Influence of a whole layer: 1 − mean cos(input, output) (whole layers only)"
            }
            Importance::Perplexity => {
                "Shortened LLaMA: calibration perplexity with the layer skipped (whole layers only)"
            }
            Importance::Adapruner => {
                "AdaPruner: TPE search over a mix of Taylor and magnitude scores and the calibration windows \
                 they come from, each trial pruned and measured on held-out windows"
            }
        }
    }

    /// What the score differentiates, if it needs a gradient: the calibration loss (Taylor scores) or the
    /// model's output (NTK).
    pub fn gradient_of(self) -> Option<Objective> {
        match self {
            Importance::TaylorVector | Importance::TaylorFirst | Importance::TaylorMix => {
                Some(Objective::Loss)
            }
            Importance::Ntk => Some(Objective::Output),
            _ => None,
        }
    }

    /// Whether the score needs a gradient (of the loss or of the output).
    pub fn needs_gradient(self) -> bool {
        self.gradient_of().is_some()
    }

    /// Whether the score is computed from calibration activations, layer by layer on the pruned prefix.
    pub fn needs_activations(self) -> bool {
        matches!(
            self,
            Importance::WandaSp | Importance::Flap | Importance::Obs | Importance::Numerical
        )
    }

    /// Whether the score needs the Fisher diagonal (N per-sample backward passes).
    pub fn needs_fisher(self) -> bool {
        matches!(self, Importance::TaylorSecond | Importance::TaylorMix)
    }

    /// Whether the score runs backward passes: a gradient, the Fisher diagonal, or AdaPruner's trials of both.
    pub fn needs_backward(self) -> bool {
        self.needs_gradient() || self.needs_fisher() || self == Importance::Adapruner
    }

    /// Whether the score reads calibration windows at all.
    pub fn needs_calibration(self) -> bool {
        self.needs_backward() || self.needs_activations() || self.ranks_only_layers()
    }

    /// Whether the score needs the whole model at once (a backward pass, or every later layer for each layer
    /// skipped), so that a streamed run cannot compute it.
    pub fn needs_whole_model(self) -> bool {
        self.needs_backward() || self == Importance::Perplexity
    }

    /// Whether the score can rank whole decoder layers: block influence, and every weight or gradient score
    /// (summed over the layer's structures, which together hold all its weights). The activation scores of
    /// `o_proj` / `down_proj` columns rank columns against each other only, and AdaPruner's mix is normalised
    /// within each layer.
    pub fn ranks_layers(self) -> bool {
        !self.needs_activations() && self != Importance::Adapruner
    }

    /// Whether AdaPruner can mix the score: a per-weight score (magnitude or gradient), not random.
    pub fn mixable(self) -> bool {
        matches!(
            self,
            Importance::L1
                | Importance::L2
                | Importance::TaylorVector
                | Importance::TaylorFirst
                | Importance::TaylorSecond
                | Importance::TaylorMix
                | Importance::Ntk
        )
    }

    /// Whether the score ranks nothing but whole layers.
    pub fn ranks_only_layers(self) -> bool {
        matches!(self, Importance::BlockInfluence | Importance::Perplexity)
    }

    fn member<B: Backend>(self, m: &Member<B>) -> Result<Option<Tensor<B, 1>>> {
        use taylor::Term;
        Ok(Some(match self {
            Importance::Random
            | Importance::WandaSp
            | Importance::Flap
            | Importance::Obs
            | Importance::Numerical
            | Importance::BlockInfluence
            | Importance::Perplexity
            | Importance::Adapruner => return Ok(None),
            Importance::L1 => magnitude::score(m, 1),
            Importance::L2 => magnitude::score(m, 2),
            Importance::TaylorVector => taylor::score(m, Term::Vector)?,
            Importance::TaylorFirst => taylor::score(m, Term::First)?,
            Importance::TaylorSecond => taylor::score(m, Term::Second)?,
            Importance::TaylorMix => taylor::score(m, Term::Mix)?,
            Importance::Ntk => ntk::score(m)?,
        }))
    }
}

/// Which axis of a weight the structure's channels index: output rows (q/k/v/gate/up) or input columns (o/down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Rows,
    Cols,
}

/// One weight of a structure with what the scores may need.
pub struct Member<B: Backend> {
    /// `[d_out, d_in]`
    pub weight: Tensor<B, 2>,
    /// The gradient of the score's objective (`∂L/∂W`, or `∂f/∂W` for NTK), same shape
    pub grad: Option<Tensor<B, 2>>,
    /// `(1/N) Σ_n (∂L_n/∂W)²`, same shape
    pub fisher: Option<Tensor<B, 2>>,
    pub axis: Axis,
}

/// Sums over the axis that is not the channel axis: `[d_out, d_in]` → `[d_out]` (rows) or `[d_in]` (columns).
pub fn reduce<B: Backend>(t: Tensor<B, 2>, axis: Axis) -> Tensor<B, 1> {
    let r = t.dims()[0];
    match axis {
        Axis::Rows => t.sum_dim(1).reshape([r]),
        Axis::Cols => column_sums(t),
    }
}

/// The scalar a gradient score differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The mean next-token cross-entropy of the calibration windows.
    Loss,
    /// NIRVANA's output functional ([`ntk::output_functional`]).
    Output,
}

/// Gradient statistics by HF weight name (matrices of the decoder layers).
#[derive(Default)]
pub struct GradStats<B: Backend> {
    pub grad: HashMap<String, Tensor<B, 2>>,
    pub fisher: HashMap<String, Tensor<B, 2>>,
}

/// Scores of one layer's structures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerScores {
    pub layer: usize,
    /// One per KV group (empty when whole layers are ranked).
    pub kv_groups: Vec<f32>,
    /// One per query head: its q rows and o_proj columns (empty when whole layers are ranked, and in files
    /// written before query heads could be pruned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_heads: Vec<f32>,
    /// One per MLP channel (empty when whole layers are ranked).
    pub mlp_channels: Vec<f32>,
    /// The score of the whole layer (depth pruning only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole: Option<f64>,
}

impl LayerScores {
    /// The score of whole layer `layer` alone (depth pruning).
    pub fn whole_layer(layer: usize, whole: f64) -> Self {
        Self {
            layer,
            kv_groups: vec![],
            query_heads: vec![],
            mlp_channels: vec![],
            whole: Some(whole),
        }
    }
}

/// How member scores are combined into a structure's score.
fn mean_over_members(kind: Importance, agg: Aggregation) -> bool {
    // The published code averages magnitude scores across a group's members and sums Taylor ones.
    agg == Aggregation::LlmPruner && matches!(kind, Importance::L1 | Importance::L2)
}

/// Per-head sums of per-channel scores (`head_dim` channels a head).
fn head_sums(channels: &[f32], hd: usize) -> Vec<f32> {
    channels.chunks(hd).map(|c| c.iter().sum()).collect()
}

fn combine(members: Vec<Vec<f32>>, mean: bool) -> Vec<f32> {
    let n = members.len() as f32;
    let mut out = vec![0.0; members[0].len()];
    for m in &members {
        for (o, v) in out.iter_mut().zip(m) {
            *o += v;
        }
    }
    if mean {
        out.iter_mut().for_each(|o| *o /= n);
    }
    out
}

/// Scores every KV group, query head and MLP channel of layer `layer` (methods.md §2: member scores per channel,
/// query channels folded onto their KV group, combined over members, summed over a head's `head_dim` channels).
pub async fn score_layer<B: Backend>(
    layer: usize,
    block: &Block<B>,
    shape: &LayerShape,
    stats: &GradStats<B>,
    kind: Importance,
    agg: Aggregation,
    seed: u64,
) -> Result<LayerScores> {
    let hd = block.self_attn.head_dim;
    if kind == Importance::Random {
        return Ok(LayerScores {
            layer,
            kv_groups: random::scores(seed, layer, 1, shape.num_kv_heads),
            query_heads: random::scores(seed, layer, 4, shape.num_heads),
            mlp_channels: random::scores(seed, layer, 2, shape.intermediate_size),
            whole: None,
        });
    }
    let member = |suffix: &str, w: &Tensor<B, 2>, axis| {
        let name = layer_tensor(layer, suffix);
        Member {
            weight: w.clone(),
            grad: stats.grad.get(&name).cloned(),
            fisher: stats.fisher.get(&name).cloned(),
            axis,
        }
    };
    let channel = |m: Member<B>| async move {
        let t = kind.member(&m)?.ok_or_else(|| {
            crate::Error::Invalid(format!(
                "{} has no per-weight term: activation scores come from the sequential pipeline, \
                 adapruner mixes per-weight ones",
                kind.name()
            ))
        })?;
        to_vec(t).await
    };
    let a = &block.self_attn;
    let q = channel(member(
        "self_attn.q_proj.weight",
        &a.q_proj.weight.val(),
        Axis::Rows,
    ))
    .await?;
    let k = channel(member(
        "self_attn.k_proj.weight",
        &a.k_proj.weight.val(),
        Axis::Rows,
    ))
    .await?;
    let v = channel(member(
        "self_attn.v_proj.weight",
        &a.v_proj.weight.val(),
        Axis::Rows,
    ))
    .await?;
    let o = channel(member(
        "self_attn.o_proj.weight",
        &a.o_proj.weight.val(),
        Axis::Cols,
    ))
    .await?;
    let mean = mean_over_members(kind, agg);
    let kv = combine(
        vec![
            fold_query_channels(&q, shape, hd, agg),
            k,
            v,
            fold_query_channels(&o, shape, hd, agg),
        ],
        mean,
    );
    let heads = combine(vec![q, o], mean);
    let m = &block.mlp;
    let gate = channel(member(
        "mlp.gate_proj.weight",
        &m.gate_proj.weight.val(),
        Axis::Rows,
    ))
    .await?;
    let up = channel(member(
        "mlp.up_proj.weight",
        &m.up_proj.weight.val(),
        Axis::Rows,
    ))
    .await?;
    let down = channel(member(
        "mlp.down_proj.weight",
        &m.down_proj.weight.val(),
        Axis::Cols,
    ))
    .await?;
    Ok(LayerScores {
        layer,
        kv_groups: head_sums(&kv, hd),
        query_heads: head_sums(&heads, hd),
        mlp_channels: combine(vec![gate, up, down], mean),
        whole: None,
    })
}

/// [`score_layer`] for each layer of `layers`, reported as stage `score`.
pub async fn score_layers<B: Backend>(
    model: &Llama<B>,
    layers: std::ops::Range<usize>,
    stats: &GradStats<B>,
    kind: Importance,
    agg: Aggregation,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<LayerScores>> {
    let mut scores = Vec::with_capacity(layers.len());
    for (i, l) in layers.clone().enumerate() {
        checkpoint(progress).await?;
        let (block, shape) = (&model.layers[l], &model.config.layers[l]);
        scores.push(score_layer(l, block, shape, stats, kind, agg, seed).await?);
        progress
            .report(ProgressEvent::new("score", i + 1, layers.len()).saying(format!("layer {l}")));
    }
    Ok(scores)
}
