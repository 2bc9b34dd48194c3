//! Depth pruning (methods.md §1, `--structures layers`): whole decoder layers go, and the layers after them move
//! up.
//! * **Scores** of a whole layer: `block-influence` (ShortGPT) from one forward pass of the calibration windows
//!   through the unpruned model; `perplexity` ("Shortened LLaMA"'s PPL criterion), the calibration perplexity of
//!   the model with that one layer skipped; `random` draws one number per layer; every weight or gradient score
//!   is summed over the layer's KV groups and MLP channels, which together hold every weight of the layer (for
//!   `taylor-first` this is the Taylor+ criterion of "Shortened LLaMA"; under `--compat llm-pruner` the sums
//!   follow its crediting of query heads and its averaged magnitudes).
//! * **Choice**: the lowest-scored layers of the pruned range — `C − ⌊C·(1−r)⌋` of its `C` layers at ratio `r`
//!   (LLM-Pruner's rounding), or, for a parameter target, one by one until a running count of removed
//!   parameters reaches it.
//! * **Repair**: a run of consecutive removed layers `R` adds `T = F_R(h) − h` to the residual stream `h` after
//!   the kept layer `p` before it. The repair regresses `T` on the inputs `x` of `p`'s `down_proj`, whose output
//!   lands in the same stream: with `W̃ = [W_down, I]` on `x̃ = [x; T]`, removing `T`'s columns and refitting the
//!   kept ones is the width repair of methods.md §4 — `ls`: `W' = W + T Xᵀ (X Xᵀ + λI)⁻¹`, `bias`: `Δb = mean(T)`,
//!   `ls-bias` both — with `λ` from `diag(X Xᵀ)` alone. Runs are repaired in order on the repaired prefix.

use std::ops::Range;

use burn::tensor::{backend::Backend, Tensor};

use super::activations::Activations;
use super::allocate::{lowest_order, out_of_reach, pruned_count};
use super::calib::check_windows;
use super::compensate::Compensation;
use super::importance::block_influence::{block_influence, cosines};
use super::importance::{random, LayerScores};
use super::plan::{apply, Plan};
use super::recipe::Recipe;
use super::sequential::{
    activation_scores, add_statistics, chunk, prefix, repair, Reconstruction, Sequential,
};
use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::llama::{next_token_nll, Block};
use crate::model::params::count_params;
use crate::model::{Llama, ModelConfig};
use crate::progress::{checkpoint, Progress, ProgressEvent};
use crate::readback::scalar;

/// The score of each whole layer from its structures' scores: a seeded draw per layer for `random`, else the sum
/// of its KV groups' and MLP channels' scores (which are dropped).
pub fn whole_layer_scores(scores: Vec<LayerScores>, recipe: &Recipe) -> Vec<LayerScores> {
    let random = recipe.importance == super::Importance::Random;
    scores
        .into_iter()
        .map(|s| {
            let whole = match random {
                true => random::scores(recipe.seed, s.layer, 3, 1)[0] as f64,
                false => s
                    .kv_groups
                    .iter()
                    .chain(&s.mlp_channels)
                    .map(|&x| x as f64)
                    .sum(),
            };
            LayerScores::whole_layer(s.layer, whole)
        })
        .collect()
}

/// Windows per forward of the skipped-layer perplexity (its logits are `batch × len × vocab`).
pub const SKIP_BATCH: usize = 8;

/// The whole-layer criterion of the recipe (`block-influence` or `perplexity`) for every layer of its range.
pub async fn layer_criterion_scores<B: Backend>(
    model: &Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Vec<LayerScores>> {
    match recipe.importance {
        super::Importance::Perplexity => {
            skipped_layer_perplexity(model, recipe, calib, device, progress).await
        }
        _ => activation_scores(model, recipe, calib, device, progress).await,
    }
}

/// The calibration perplexity of `model` with each layer of the recipe's range skipped in turn (the others
/// whole): `exp` of the mean next-token NLL over every window.
async fn skipped_layer_perplexity<B: Backend>(
    model: &Llama<B>,
    recipe: &Recipe,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Vec<LayerScores>> {
    check_windows(calib, model.config.vocab_size)?;
    let layers = recipe.layer_range(&model.config);
    let mut nll = vec![0.0f64; layers.len()];
    let per_chunk = chunk(model, calib, recipe).min(SKIP_BATCH);
    let batches: Vec<&[Vec<u32>]> = calib.chunks(per_chunk).collect();
    for (c, batch) in batches.iter().enumerate() {
        let Activations { chunks, pos } = prefix(model, batch, layers.start, batch.len(), device)?;
        let mut h = Tensor::cat(chunks, 0);
        let refs: Vec<&[u32]> = batch.iter().map(|w| w.as_slice()).collect();
        let ids = batch_tensor::<B>(&refs, device);
        for (i, l) in layers.clone().enumerate() {
            checkpoint(progress).await?;
            let mut skipped = h.clone();
            for block in &model.layers[l + 1..] {
                skipped = block.forward(skipped, &pos);
            }
            nll[i] += scalar(next_token_nll(model.head(skipped), ids.clone()).sum()).await?;
            h = model.layers[l].forward(h, &pos);
            progress.report(
                ProgressEvent::new(
                    "score",
                    c * layers.len() + i + 1,
                    batches.len() * layers.len(),
                )
                .saying(format!("without layer {l}")),
            );
        }
    }
    let tokens = calib.iter().map(|w| w.len() - 1).sum::<usize>() as f64;
    Ok(layers
        .zip(nll)
        .map(|(layer, nll)| LayerScores::whole_layer(layer, (nll / tokens).exp()))
        .collect())
}

/// The block influence of layer `l` (`block`) on its input `h`, and its output (the next layer's input).
pub async fn layer_influence<B: Backend>(
    block: &Block<B>,
    l: usize,
    h: Activations<B>,
) -> Result<(LayerScores, Activations<B>)> {
    let mut cos = vec![];
    let next = h.map(|h, pos| {
        let out = block.forward(h.clone(), pos);
        cos.push(cosines(h, out.clone()));
        out
    });
    let scores = LayerScores::whole_layer(l, block_influence(cos).await?);
    Ok((scores, next))
}

/// The depth plan: the lowest-scored layers of `scores` (ties: the earlier layer) go — `pruned_count` of them at
/// `ratio`, or at a parameter `target` as many as it takes to remove that fraction of all parameters.
pub fn depth_plan(
    cfg: &ModelConfig,
    scores: &[LayerScores],
    ratio: Option<f64>,
    target: Option<f64>,
) -> Result<Plan> {
    let whole: Vec<f64> = scores.iter().map(|s| s.whole.unwrap_or(0.0)).collect();
    let order: Vec<usize> = lowest_order(&whole)
        .into_iter()
        .map(|i| scores[i].layer)
        .collect();
    let removed = match (ratio, target) {
        (Some(r), _) => order[..pruned_count(scores.len(), r)].to_vec(),
        (None, Some(t)) => {
            let total = count_params(cfg).total;
            let need = (t * total as f64).ceil() as usize;
            let mut chosen = vec![];
            for &l in &order {
                if params_removed(cfg, &chosen) >= need || chosen.len() + 1 >= cfg.num_layers() {
                    break;
                }
                chosen.push(l);
            }
            let got = params_removed(cfg, &chosen);
            if got < need {
                let range =
                    scores.first().map_or(0, |s| s.layer)..scores.last().map_or(0, |s| s.layer + 1);
                return Err(out_of_reach(t, &range, got as f64 / total as f64));
            }
            chosen
        }
        (None, None) => {
            return Err(Error::Invalid(
                "give a ratio (--ratio) or a parameter target (--target-params)".into(),
            ))
        }
    };
    let plan = Plan::depth(cfg, removed);
    plan.check(cfg)?;
    Ok(plan)
}

/// Parameters `cfg` loses with its layers `removed` gone.
fn params_removed(cfg: &ModelConfig, removed: &[usize]) -> usize {
    let pruned = Plan::depth(cfg, removed.to_vec()).pruned_config(cfg);
    count_params(cfg).total - count_params(&pruned).total
}

/// Runs of consecutive removed layers with the kept layer before each: `(p, first..end)`.
pub fn runs(removed: &[usize]) -> Result<Vec<(usize, Range<usize>)>> {
    let mut out: Vec<(usize, Range<usize>)> = vec![];
    for &l in removed {
        match out.last_mut() {
            Some((_, run)) if run.end == l => run.end = l + 1,
            _ if l == 0 => return Err(Error::Invalid(
                "layer 0 has no layer before it whose down_proj could absorb its removal: keep it \
                     (--layers 1..), or remove it with --compensation none"
                    .into(),
            )),
            _ => out.push((l - 1, l..l + 1)),
        }
    }
    Ok(out)
}

/// Repairs kept layer `p` (`block`, whose input is `h`) for the run of removed layers after it: `through_run`
/// takes the stream after `p` through the removed layers. Returns the stream after the repaired `p` (the next
/// kept layer's input) and the errors of the repair.
pub async fn repair_before_run<B: Backend>(
    block: &mut Block<B>,
    p: usize,
    h: Activations<B>,
    through_run: impl FnOnce(Activations<B>) -> Result<Activations<B>>,
    recipe: &Recipe,
    device: &B::Device,
) -> Result<(Activations<B>, Reconstruction)> {
    let one_batch = h.one_batch();
    let mid = h.map(|h, pos| {
        h.clone()
            + block
                .self_attn
                .forward(block.input_layernorm.forward(h), pos)
    });
    // The inputs of `down_proj` `[chunk, len, intermediate]` and the stream after `p`, kept when the windows are
    // one batch (else computed again below, so that only the stream through the run is held for every window).
    let after_p = |h_mid: &Tensor<B, 3>| {
        let x = block.mlp_input(h_mid.clone());
        let out = h_mid.clone() + block.mlp.down_proj.forward(x.clone());
        (x, out)
    };
    let mut saved = None;
    let out = mid.clone().map(|h_mid, _| {
        let (x, out) = after_p(&h_mid);
        saved = one_batch.then(|| (x, out.clone()));
        out
    });
    let through = through_run(out)?;
    let mut stats = None;
    for (h_mid, after) in mid.chunks.iter().zip(through.chunks) {
        let (x, out) = saved.clone().unwrap_or_else(|| after_p(h_mid));
        stats = Some(add_statistics(stats, Tensor::cat(vec![x, after - out], 2)));
    }
    let stats = stats.expect("calibration has a window");
    let [width, n] = block.mlp.down_proj.weight.dims();
    let down = &mut block.mlp.down_proj;
    let w = down.weight.val();
    let identity = Tensor::<B, 2>::eye(width, device).cast(w.dtype());
    let widened = Tensor::cat(vec![w, identity], 1);
    let kept: Vec<usize> = (0..n).collect();
    let (before, after) = repair(down, widened, &stats, &kept, n, recipe, device).await?;
    let errors = Reconstruction {
        layer: p,
        module: "down_proj+removed",
        before,
        after,
    };
    let next = mid.map(|h_mid, _| {
        let x = match saved.take() {
            Some((x, _)) => x,
            None => block.mlp_input(h_mid.clone()),
        };
        h_mid + block.mlp.down_proj.forward(x)
    });
    Ok((next, errors))
}

/// Removes the plan's whole layers from `model` and repairs each run of them into the `down_proj` of the kept
/// layer before it, as the recipe's compensation says (see the module docs).
pub async fn remove_layers<B: Backend>(
    mut model: Llama<B>,
    recipe: &Recipe,
    plan: Plan,
    calib: &[Vec<u32>],
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Sequential<B>> {
    let runs = match recipe.compensation {
        Compensation::None => vec![],
        _ => runs(&plan.removed_layers)?,
    };
    let mut reconstruction = vec![];
    if !runs.is_empty() {
        let per_chunk = chunk(&model, calib, recipe);
        let mut h = prefix(&model, calib, runs[0].0, per_chunk, device)?;
        let mut next = runs[0].0;
        for (step, (p, run)) in runs.iter().enumerate() {
            checkpoint(progress).await?;
            for block in &model.layers[next..*p] {
                h = h.through(block);
            }
            let (head, tail) = model.layers.split_at_mut(p + 1);
            let through_run = |mut h: Activations<B>| {
                for block in &tail[..run.len()] {
                    h = h.through(block);
                }
                Ok(h)
            };
            let (after, errors) =
                repair_before_run(&mut head[*p], *p, h, through_run, recipe, device).await?;
            h = after;
            reconstruction.push(errors);
            next = run.end;
            progress.report(
                ProgressEvent::new("layers", step + 1, runs.len())
                    .saying(format!("layers {}..{} into layer {p}", run.start, run.end)),
            );
        }
        if recipe.compensation.adds_bias() {
            super::sequential::add_zero_biases(&mut model, device);
        }
    }
    Ok(Sequential {
        model: apply(model, &plan)?,
        plan,
        scores: vec![],
        reconstruction,
    })
}
