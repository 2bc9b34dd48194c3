//! The sequential pipeline (methods.md §4): decoder layers are processed in order and calibration activations
//! flow through each layer after it has been pruned and repaired, so every layer's statistics are gathered on
//! the already-pruned prefix. Within a layer, attention goes first, then the MLP sees the repaired attention.
//! Memory: the model, the activations of one layer, and one module's statistics at a time.

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor};
use serde::Serialize;

use super::activations::{windows_per_chunk, Activations};
use super::allocate::{lowest, Counts};
use super::compensate::{
    self, bias_update, error_energy, least_squares, output_energy, Compensation,
};
use super::depth::layer_influence;
use super::importance::activation::column_scores;
use super::importance::{score_layer, GradStats, Importance, LayerScores};
use super::linalg::{at_least_f32, onto, to_host, Linalg};
use super::plan::{apply_layer, index, Kept, LayerPlan, Plan};
use super::recipe::Recipe;
use super::stats::InputStats;
use super::structure::{even_query_heads, expand, query_heads, Aggregation};
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::llama::Block;
use crate::model::{LayerShape, Llama, ModelConfig};
use crate::progress::{checkpoint, Progress, ProgressEvent};

/// How well one module's output survived: relative error `‖WX − W'X_K‖² / ‖WX‖²` on the calibration inputs
/// with the kept columns unchanged (`before`) and after the repair (`after`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconstruction {
    pub layer: usize,
    pub module: &'static str,
    pub before: f64,
    pub after: f64,
}

/// A repaired module on backend `C`: its kept columns, the bias change, and the relative errors.
struct Repaired<C: Backend> {
    /// `[d_out, |K|]`
    weight: Tensor<C, 2>,
    /// `Δb` `[d_out]`.
    bias: Option<Tensor<C, 1>>,
    before: f64,
    after: f64,
}

/// The repair of `w` `[d_out, n]` (o_proj or down_proj) keeping input columns `kept`, computed on `C`; the
/// ridge is the recipe's fraction of the mean of the first `ridge_over` entries of `diag G`.
async fn repaired<C: Backend>(
    w: Tensor<C, 2>,
    stats: &InputStats<C>,
    kept: &[usize],
    ridge_over: usize,
    recipe: &Recipe,
) -> Result<Repaired<C>> {
    let plain = compensate::columns(&w, kept);
    let full = output_energy(&w, stats).await?.max(f64::MIN_POSITIVE);
    let removed = error_energy(&w, stats, kept, None, None).await?;
    let pruned: Vec<usize> = (0..stats.n()).filter(|j| !kept.contains(j)).collect();
    let (weight, bias, left) = match recipe.compensation {
        Compensation::None => (plain, None, removed),
        Compensation::Bias => {
            let delta = bias_update(&w, stats, &pruned);
            let left = error_energy(&w, stats, kept, None, Some(&delta)).await?;
            (plain, Some(delta), left)
        }
        comp @ (Compensation::Ls | Compensation::LsBias) => {
            let lambda = stats.ridge_over(recipe.ridge, ridge_over).await?;
            let with_bias = comp == Compensation::LsBias;
            let r = least_squares(&w, stats, kept, &pruned, lambda, with_bias).await?;
            // Rounding can leave a perfect refit a hair below zero.
            (r.kept, r.bias, (removed - r.restored).max(0.0))
        }
    };
    let (before, after) = (removed / full, left / full);
    Ok(Repaired {
        weight,
        bias,
        before,
        after,
    })
}

/// Removes and repairs input columns of `lin` (o_proj or down_proj) whose weight before removal was `original`
/// (`[d_out, n]`, inputs with statistics `stats`), with the arithmetic where the recipe says; the ridge comes
/// from the first `ridge_over` inputs. Returns the reconstruction errors.
pub(super) async fn repair<B: Backend>(
    lin: &mut Linear<B>,
    original: Tensor<B, 2>,
    stats: &InputStats<B>,
    kept: &[usize],
    ridge_over: usize,
    recipe: &Recipe,
    device: &B::Device,
) -> Result<(f64, f64)> {
    let dtype = original.dtype();
    let r = match recipe.linalg.unwrap_or_default() {
        Linalg::Device => repaired(at_least_f32(original), stats, kept, ridge_over, recipe).await?,
        Linalg::HostF64 => {
            let (w, stats) = (to_host(original).await?, stats.to_host().await?);
            let r = repaired(w, &stats, kept, ridge_over, recipe).await?;
            Repaired {
                weight: onto(r.weight, device).await?,
                bias: match r.bias {
                    Some(b) => Some(onto(b, device).await?),
                    None => None,
                },
                before: r.before,
                after: r.after,
            }
        }
    };
    if let Some(delta) = r.bias {
        let delta = delta.cast(dtype);
        let bias = match &lin.bias {
            Some(b) => b.val() + delta,
            None => delta,
        };
        lin.bias = Some(Param::from_tensor(bias));
    }
    lin.weight = Param::from_tensor(r.weight.cast(dtype));
    Ok((r.before, r.after))
}

/// Result of the sequential pass.
pub struct Sequential<B: Backend> {
    pub model: Llama<B>,
    pub plan: Plan,
    pub scores: Vec<LayerScores>,
    pub reconstruction: Vec<Reconstruction>,
}

/// Calibration activations entering layer `start`, `per_chunk` windows a chunk.
pub(super) fn prefix<B: Backend>(
    model: &Llama<B>,
    calib: &[Vec<u32>],
    start: usize,
    per_chunk: usize,
    device: &B::Device,
) -> Result<Activations<B>> {
    let mut h = Activations::embed(model, calib, per_chunk, device)?;
    for block in &model.layers[..start] {
        h = h.through(block);
    }
    Ok(h)
}

/// The recipe's windows per chunk for `model` and `calib`.
pub(super) fn chunk<B: Backend>(model: &Llama<B>, calib: &[Vec<u32>], recipe: &Recipe) -> usize {
    let len = calib.first().map_or(0, Vec::len);
    windows_per_chunk(&model.config, len, recipe)
}

/// What the first pass over an unpruned layer takes from its MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MlpPass {
    /// Nothing: the MLP's statistics come after the repaired attention.
    Skip,
    /// The statistics of `down_proj`'s inputs.
    Stats,
    /// Those, and the layer's output (a layer scored and left as it is).
    StatsAndOutput,
}

/// An unpruned layer run on the calibration activations chunk by chunk: the statistics of the inputs of
/// `o_proj` (and of `down_proj`, as asked) over every chunk.
struct Dense<B: Backend> {
    attn: InputStats<B>,
    mlp: Option<InputStats<B>>,
    /// The input of `o_proj` `[windows, len, heads·head_dim]`, kept for the repaired attention when the windows
    /// are one batch (else it runs again, chunk by chunk).
    heads: Option<Tensor<B, 3>>,
    /// The layer's output ([`MlpPass::StatsAndOutput`]).
    out: Option<Activations<B>>,
}

fn statistics<B: Backend>(t: Tensor<B, 3>) -> InputStats<B> {
    let [b, s, n] = t.dims();
    InputStats::of(t.reshape([b * s, n]))
}

/// `acc` with the statistics of `t` (one more chunk) added.
pub(super) fn add_statistics<B: Backend>(
    acc: Option<InputStats<B>>,
    t: Tensor<B, 3>,
) -> InputStats<B> {
    let stats = statistics(t);
    match acc {
        Some(acc) => acc.merge(stats),
        None => stats,
    }
}

fn dense<B: Backend>(block: &Block<B>, h: Activations<B>, mlp: MlpPass) -> Dense<B> {
    let Activations { chunks, pos } = h;
    let one_batch = chunks.len() == 1;
    let (mut attn, mut stats, mut heads, mut out) = (None, None, None, vec![]);
    for h in chunks {
        let x = block.heads(h.clone(), &pos);
        attn = Some(add_statistics(attn, x.clone()));
        if mlp != MlpPass::Skip {
            let h_mid = h + block.self_attn.o_proj.forward(x.clone());
            let hidden = block.mlp_input(h_mid.clone());
            stats = Some(add_statistics(stats, hidden.clone()));
            if mlp == MlpPass::StatsAndOutput {
                out.push(h_mid + block.mlp.down_proj.forward(hidden));
            }
        }
        if one_batch && mlp != MlpPass::StatsAndOutput {
            heads = Some(x);
        }
    }
    Dense {
        attn: attn.expect("calibration has a window"),
        mlp: stats,
        heads,
        out: (mlp == MlpPass::StatsAndOutput).then_some(Activations { chunks: out, pos }),
    }
}

/// The recipe's activation score of each input column of `lin` (o_proj or down_proj), with the arithmetic
/// where the recipe says.
async fn column_scores_of<B: Backend>(
    lin: &Linear<B>,
    stats: &InputStats<B>,
    recipe: &Recipe,
) -> Result<Vec<f64>> {
    async fn on<C: Backend>(
        w: Tensor<C, 2>,
        stats: &InputStats<C>,
        r: &Recipe,
    ) -> Result<Vec<f64>> {
        let lambda = stats.ridge(r.ridge).await?;
        column_scores(r.importance, &w, stats, lambda).await
    }
    let w = at_least_f32(lin.weight.val());
    match recipe.linalg.unwrap_or_default() {
        Linalg::Device => on(w, stats, recipe).await,
        Linalg::HostF64 => on(to_host(w).await?, &stats.to_host().await?, recipe).await,
    }
}

/// Per-KV-group scores from per-column scores of `o_proj`: a group sums its query heads' columns, credited as
/// `agg` says.
fn group_scores(columns: &[f64], shape: &LayerShape, hd: usize, agg: Aggregation) -> Vec<f32> {
    (0..shape.num_kv_heads)
        .map(|g| {
            let heads = query_heads(shape, g, agg);
            expand(&heads, hd).iter().map(|&j| columns[j]).sum::<f64>() as f32
        })
        .collect()
}

/// Per-query-head scores from per-column scores of `o_proj`: a head sums its `head_dim` columns.
fn head_scores(columns: &[f64], hd: usize) -> Vec<f32> {
    columns
        .chunks(hd)
        .map(|c| c.iter().sum::<f64>() as f32)
        .collect()
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

/// `t[..., idx]` along the last axis.
fn columns<B: Backend>(t: Tensor<B, 3>, idx: &[usize], device: &B::Device) -> Tensor<B, 3> {
    t.select(2, index(idx, device))
}

/// Activation scores (or block influence) of every layer of the recipe's range on the unpruned model (for
/// allocations that need all layers' scores before anything is removed, e.g. `global`, and whole layers).
pub async fn activation_scores<B: Backend>(
    model: &Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Vec<LayerScores>> {
    let layers = recipe.layer_range(&model.config);
    let mut h = prefix(
        model,
        calib,
        layers.start,
        chunk(model, calib, recipe),
        device,
    )?;
    let mut out = vec![];
    for (step, l) in layers.clone().enumerate() {
        checkpoint(progress).await?;
        let (scores, next) = layer_scores(&model.layers[l], l, &model.config, h, recipe).await?;
        out.push(scores);
        h = next;
        progress.report(
            ProgressEvent::new("score", step + 1, layers.len()).saying(format!("layer {l}")),
        );
    }
    Ok(out)
}

/// The recipe's activation scores (or block influence) of the unpruned decoder layer `l` of a model with config
/// `cfg` from its input `h`, and its output (the next layer's input). Weight scores need no input:
/// [`weight_scores`].
pub async fn layer_scores<B: Backend>(
    block: &Block<B>,
    l: usize,
    cfg: &ModelConfig,
    h: Activations<B>,
    recipe: &Recipe,
) -> Result<(LayerScores, Activations<B>)> {
    if recipe.importance == Importance::BlockInfluence {
        return layer_influence(block, l, h).await;
    }
    debug_assert!(recipe.importance.needs_activations());
    let dense = dense(block, h, MlpPass::StatsAndOutput);
    let mlp_stats = dense.mlp.as_ref().expect("taken with the MLP");
    let attn = column_scores_of(&block.self_attn.o_proj, &dense.attn, recipe).await?;
    let mlp = column_scores_of(&block.mlp.down_proj, mlp_stats, recipe).await?;
    let scores = LayerScores {
        layer: l,
        kv_groups: group_scores(&attn, &cfg.layers[l], cfg.head_dim, recipe.aggregation),
        query_heads: head_scores(&attn, cfg.head_dim),
        mlp_channels: to_f32(mlp),
        whole: None,
    };
    Ok((scores, dense.out.expect("taken with the output")))
}

/// The recipe's weight score (magnitude, random) of decoder layer `l` of shape `shape`: its weights alone.
pub async fn weight_scores<B: Backend>(
    block: &Block<B>,
    l: usize,
    shape: &LayerShape,
    recipe: &Recipe,
) -> Result<LayerScores> {
    let (kind, agg, none) = (recipe.importance, recipe.aggregation, GradStats::default());
    score_layer(l, block, shape, &none, kind, agg, recipe.seed).await
}

/// Which structures one layer loses: the lowest scores up to a count, or a plan made beforehand.
#[derive(Debug, Clone)]
pub enum LayerChoice {
    Count(Counts),
    Fixed(LayerPlan),
}

/// What pruning one layer produced.
pub struct LayerOutcome<B: Backend> {
    /// The calibration activations after the pruned layer.
    pub h: Activations<B>,
    pub plan: LayerPlan,
    /// The activation scores (`Count` choices only).
    pub scores: Option<LayerScores>,
    pub reconstruction: [Reconstruction; 2],
    pub shape: LayerShape,
}

/// Prunes and repairs decoder layer `l` (of shape `shape`) in place, given the calibration activations `h`
/// entering it: attention first (its KV groups, then `o_proj` refit on the kept heads' outputs, already
/// computed when the windows are one batch), then the MLP (its statistics from the layer as it came, or after
/// the repaired attention).
#[allow(clippy::too_many_arguments)]
pub async fn prune_layer<B: Backend>(
    block: &mut Block<B>,
    l: usize,
    shape: LayerShape,
    h: Activations<B>,
    choice: &LayerChoice,
    recipe: &Recipe,
    device: &B::Device,
) -> Result<LayerOutcome<B>> {
    let hd = block.self_attn.head_dim;
    // Weight scores (magnitude, random) depend on this layer's weights alone: taken before anything changes.
    let weight_scores = match choice {
        LayerChoice::Count(_) if !recipe.importance.needs_activations() => {
            Some(weight_scores(block, l, &shape, recipe).await?)
        }
        _ => None,
    };
    let first = match recipe.mlp_stats_after_attention {
        true => MlpPass::Skip,
        false => MlpPass::Stats,
    };
    let mut dense = dense(block, h.clone(), first);

    let (mut kv_scores, mut q_scores) = (vec![], vec![]);
    let (groups, heads) = match choice {
        LayerChoice::Fixed(lp) => (lp.kv_groups.clone(), lp.query_heads.clone()),
        LayerChoice::Count(c) => {
            (kv_scores, q_scores) = match &weight_scores {
                Some(s) => (s.kv_groups.clone(), s.query_heads.clone()),
                None => {
                    let o_proj = &block.self_attn.o_proj;
                    let cols = column_scores_of(o_proj, &dense.attn, recipe).await?;
                    let groups = group_scores(&cols, &shape, hd, recipe.aggregation);
                    (groups, head_scores(&cols, hd))
                }
            };
            let groups = lowest(&kv_scores, c.kv_groups);
            let heads = even_query_heads(&q_scores, &shape, c.query_heads_per_group, &groups);
            (groups, heads)
        }
    };
    let w_o = block.self_attn.o_proj.weight.val();
    let kept_attn = Kept::of(&shape, &groups, &heads, &[]);
    apply_layer(block, &kept_attn);
    let kept = expand(&kept_attn.heads, hd);
    let o_proj = &mut block.self_attn.o_proj;
    let n = dense.attn.n();
    let (before, after) = repair(o_proj, w_o, &dense.attn, &kept, n, recipe, device).await?;
    let recon_o = Reconstruction {
        layer: l,
        module: "o_proj",
        before,
        after,
    };
    // The windows after the repaired attention.
    let one_batch = h.one_batch();
    let mut kept_heads = dense.heads.take().map(|x| columns(x, &kept, device));
    let mid = h.map(|h, pos| {
        let x = kept_heads
            .take()
            .unwrap_or_else(|| block.heads(h.clone(), pos));
        h + block.self_attn.o_proj.forward(x)
    });
    let (mlp_stats, mut hidden) = match dense.mlp {
        Some(stats) => (stats, None),
        None => {
            let (mut stats, mut hidden) = (None, None);
            for h_mid in &mid.chunks {
                let x = block.mlp_input(h_mid.clone());
                stats = Some(add_statistics(stats, x.clone()));
                hidden = one_batch.then_some(x);
            }
            (stats.expect("calibration has a window"), hidden)
        }
    };
    let mut mlp_scores = vec![];
    let channels = match choice {
        LayerChoice::Fixed(lp) => lp.mlp_channels.clone(),
        LayerChoice::Count(c) => {
            mlp_scores = match weight_scores {
                Some(s) => s.mlp_channels,
                None => to_f32(column_scores_of(&block.mlp.down_proj, &mlp_stats, recipe).await?),
            };
            lowest(&mlp_scores, c.mlp_channels)
        }
    };
    let w_down = block.mlp.down_proj.weight.val();
    let kept_mlp = Kept::of(&kept_attn.shape(), &[], &[], &channels);
    apply_layer(block, &kept_mlp);
    let n = mlp_stats.n();
    let (before, after) = repair(
        &mut block.mlp.down_proj,
        w_down,
        &mlp_stats,
        &kept_mlp.mlp,
        n,
        recipe,
        device,
    )
    .await?;
    let recon_d = Reconstruction {
        layer: l,
        module: "down_proj",
        before,
        after,
    };
    let h = mid.map(|h_mid, _| {
        let hidden = match hidden.take() {
            Some(full) => columns(full, &kept_mlp.mlp, device),
            None => block.mlp_input(h_mid.clone()),
        };
        h_mid + block.mlp.down_proj.forward(hidden)
    });
    let scores = matches!(choice, LayerChoice::Count(_)).then(|| LayerScores {
        layer: l,
        kv_groups: kv_scores,
        query_heads: q_scores,
        mlp_channels: mlp_scores,
        whole: None,
    });
    Ok(LayerOutcome {
        h,
        plan: LayerPlan {
            layer: l,
            kv_groups: groups,
            query_heads: heads,
            mlp_channels: channels,
        },
        scores,
        reconstruction: [recon_o, recon_d],
        shape: kept_mlp.shape(),
    })
}

/// Prunes decoder layer `l` (of shape `shape`) without calibration activations: the choice comes from a
/// fixed plan or the recipe's weight score, and nothing is repaired. Returns the layer's plan and, for a
/// `Count` choice, its scores.
pub async fn slice_layer<B: Backend>(
    block: &mut Block<B>,
    l: usize,
    shape: LayerShape,
    choice: &LayerChoice,
    recipe: &Recipe,
) -> Result<(LayerPlan, Option<LayerScores>)> {
    let (plan, scores) = match choice {
        LayerChoice::Fixed(lp) => (lp.clone(), None),
        LayerChoice::Count(c) => {
            let s = weight_scores(block, l, &shape, recipe).await?;
            (c.lowest_of(&s, &shape), Some(s))
        }
    };
    let kept = Kept::of(
        &shape,
        &plan.kv_groups,
        &plan.query_heads,
        &plan.mlp_channels,
    );
    apply_layer(block, &kept);
    Ok((plan, scores))
}

/// The choice for layer `l`: from a fixed plan (a layer it does not name loses nothing), or the allocation's
/// counts at fraction `ratio`.
pub fn layer_choice(
    cfg: &ModelConfig,
    recipe: &Recipe,
    l: usize,
    ratio: Option<f64>,
    fixed: Option<&Plan>,
) -> Result<LayerChoice> {
    match (fixed, ratio) {
        (Some(plan), _) => Ok(LayerChoice::Fixed(
            plan.layers
                .iter()
                .find(|lp| lp.layer == l)
                .cloned()
                .unwrap_or(LayerPlan::keep_all(l)),
        )),
        (None, Some(r)) => Ok(LayerChoice::Count(recipe.allocation.counts(
            cfg,
            l,
            r,
            &recipe.structures,
        ))),
        (None, None) => Err(Error::Invalid(
            "the sequential pipeline needs a plan or a per-layer ratio".into(),
        )),
    }
}

/// Prunes the recipe's layers in order. Activation scores are computed here (each layer on the pruned prefix)
/// with the allocation's counts at fraction `ratio`; any other plan comes as `fixed`, and this pass only applies
/// and repairs it.
pub async fn prune_sequential<B: Backend>(
    mut model: Llama<B>,
    recipe: &Recipe,
    ratio: Option<f64>,
    calib: &[Vec<u32>],
    fixed: Option<&Plan>,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Sequential<B>> {
    let orig = model.config.clone();
    let layers = recipe.layer_range(&orig);
    let mut h = prefix(
        &model,
        calib,
        layers.start,
        chunk(&model, calib, recipe),
        device,
    )?;
    let (mut plans, mut scores, mut recon) = (vec![], vec![], vec![]);
    for (step, l) in layers.clone().enumerate() {
        checkpoint(progress).await?;
        let choice = layer_choice(&orig, recipe, l, ratio, fixed)?;
        let out = prune_layer(
            &mut model.layers[l],
            l,
            orig.layers[l],
            h,
            &choice,
            recipe,
            device,
        )
        .await?;
        model.config.layers[l] = out.shape;
        h = out.h;
        plans.push(out.plan);
        scores.extend(out.scores);
        recon.extend(out.reconstruction);
        progress.report(
            ProgressEvent::new("layers", step + 1, layers.len()).saying(format!("layer {l}")),
        );
    }
    if recipe.compensation.adds_bias() {
        add_zero_biases(&mut model, device);
    }
    Ok(Sequential {
        model,
        plan: Plan::new(&orig, plans),
        scores,
        reconstruction: recon,
    })
}

/// Biases exist model-wide or not at all (HF `attention_bias` covers q/k/v/o, `mlp_bias` gate/up/down): after
/// bias compensation gave some `o_proj`/`down_proj` a bias, every other projection gets a zero one.
pub(super) fn add_zero_biases<B: Backend>(model: &mut Llama<B>, device: &B::Device) {
    for block in &mut model.layers {
        add_zero_biases_to_block(block, device);
    }
    with_biases(&mut model.config);
}

/// Gives every projection of `block` that lacks a bias a zero one.
pub fn add_zero_biases_to_block<B: Backend>(block: &mut Block<B>, device: &B::Device) {
    let a = &mut block.self_attn;
    let m = &mut block.mlp;
    for lin in [
        &mut a.q_proj,
        &mut a.k_proj,
        &mut a.v_proj,
        &mut a.o_proj,
        &mut m.gate_proj,
        &mut m.up_proj,
        &mut m.down_proj,
    ] {
        if lin.bias.is_none() {
            let d_out = lin.weight.dims()[0];
            lin.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
        }
    }
}

/// The config of a model whose projections all carry biases.
pub fn with_biases(cfg: &mut ModelConfig) {
    cfg.qkv_bias = true;
    cfg.o_bias = true;
    cfg.mlp_bias = true;
}
