//! The sequential pipeline (methods.md §4): decoder layers are processed in order and calibration activations
//! flow through each layer after it has been pruned and repaired, so every layer's statistics are gathered on
//! the already-pruned prefix. Within a layer, attention goes first, then the MLP sees the repaired attention.
//! Memory: the model, the activations of one layer, and one module's statistics at a time.

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::Serialize;

use super::allocate::{lowest, uniform_counts};
use super::compensate::solver::Cholesky;
use super::compensate::{
    bias_update, least_squares, relative_error, relative_error_with_bias, Compensation,
};
use super::importance::activation::column_scores;
use super::importance::LayerScores;
use super::plan::{apply, LayerPlan, Plan};
use super::recipe::Recipe;
use super::stats::InputStats;
use super::structure::{expand, query_heads, Aggregation};
use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::linear::Linear;
use crate::model::Llama;
use crate::progress::{Progress, ProgressEvent};
use crate::readback::to_vec;

/// How well one module's output survived: relative error `‖WX − W'X_K‖² / ‖WX‖²` on the calibration inputs
/// with the kept columns unchanged (`before`) and after the repair (`after`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconstruction {
    pub layer: usize,
    pub module: &'static str,
    pub before: f64,
    pub after: f64,
}

/// What to remove from one module: given per-column scores, or a plan made beforehand.
enum Choice<'a> {
    Scores,
    Fixed(&'a [usize]),
}

/// Replaces a linear's weight with `w` (`[d_out, d_in]` row-major).
fn set_weight<B: Backend>(lin: &mut Linear<B>, w: Vec<f32>, shape: [usize; 2], device: &B::Device) {
    lin.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), device));
}

/// Removes and repairs input columns of `lin` (o_proj or down_proj). Returns the reconstruction errors.
async fn repair<B: Backend>(
    lin: &mut Linear<B>,
    original: &[f32],
    stats: &InputStats,
    kept: &[usize],
    comp: Compensation,
    ridge: f64,
    device: &B::Device,
) -> Result<(f64, f64)> {
    let (d_out, n) = (original.len() / stats.n, stats.n);
    let plain: Vec<f32> = (0..d_out)
        .flat_map(|i| kept.iter().map(move |&j| original[i * n + j]))
        .collect();
    let before = relative_error(original, d_out, stats, kept, &plain);
    let pruned: Vec<usize> = (0..n).filter(|j| !kept.contains(j)).collect();
    if comp == Compensation::Bias {
        let delta = bias_update(original, d_out, stats, &pruned);
        let after = relative_error_with_bias(original, d_out, stats, kept, &plain, Some(&delta));
        let old = match &lin.bias {
            Some(b) => to_vec(b.val()).await?,
            None => vec![0.0; d_out],
        };
        let new_bias: Vec<f32> = old.iter().zip(&delta).map(|(a, b)| a + b).collect();
        lin.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(new_bias, [d_out]),
            device,
        )));
        set_weight(lin, plain, [d_out, kept.len()], device);
        return Ok((before, after));
    }
    let new = match comp {
        Compensation::None | Compensation::Bias => plain,
        Compensation::Ls => least_squares(
            original,
            d_out,
            stats,
            kept,
            &pruned,
            stats.ridge(ridge),
            &Cholesky,
        )?,
    };
    let after = relative_error(original, d_out, stats, kept, &new);
    set_weight(lin, new, [d_out, kept.len()], device);
    Ok((before, after))
}

/// Result of the sequential pass.
pub struct Sequential<B: Backend> {
    pub model: Llama<B>,
    pub plan: Plan,
    pub scores: Vec<LayerScores>,
    pub reconstruction: Vec<Reconstruction>,
}

/// Prunes the recipe's layers in order. Activation scores are computed here; any other score comes as `fixed`
/// (a plan made beforehand), and this pass only applies and repairs it.
pub async fn prune_sequential<B: Backend>(
    mut model: Llama<B>,
    recipe: &Recipe,
    ratio: f64,
    calib: &[Vec<u32>],
    fixed: Option<&Plan>,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Sequential<B>> {
    let orig = model.config.clone();
    let layers = recipe.layer_range(&orig);
    let kind = recipe.importance;
    if calib.is_empty() {
        return Err(Error::Invalid(
            "the sequential pipeline needs calibration windows".into(),
        ));
    }
    crate::eval::perplexity::check_ids(&calib.concat(), orig.vocab_size)?;
    let refs: Vec<&[u32]> = calib.iter().map(|w| w.as_slice()).collect();
    let (n_win, len) = (refs.len(), refs[0].len());
    let tokens = n_win * len;
    let pos = model.positions(len, device);
    let mut h = model.embed(batch_tensor::<B>(&refs, device));
    for l in 0..layers.start {
        h = model.layers[l].forward(h, &pos);
    }
    let (hd, d) = (orig.head_dim, orig.hidden_size);
    let (mut plans, mut scores, mut recon) = (vec![], vec![], vec![]);
    for (step, l) in layers.clone().enumerate() {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let shape = orig.layers[l];
        let (n_kv, n_mlp) = uniform_counts(&orig, l, ratio, &recipe.structures);
        let fixed_layer = fixed.and_then(|p| p.layers.iter().find(|lp| lp.layer == l));
        let choice = |v: Option<&'static str>| -> Choice<'_> {
            match (fixed_layer, v) {
                (Some(lp), Some("kv")) => Choice::Fixed(&lp.kv_groups),
                (Some(lp), _) => Choice::Fixed(&lp.mlp_channels),
                (None, _) => Choice::Scores,
            }
        };

        // Attention: statistics of o_proj's input, scores per KV group, slice, repair o_proj.
        let x = model.layers[l].input_layernorm.forward(h.clone());
        let heads = model.layers[l]
            .self_attn
            .heads(x.clone(), &pos.cos, &pos.sin, &pos.mask);
        let x2_dense = model.layers[l]
            .post_attention_layernorm
            .forward(h.clone() + model.layers[l].self_attn.o_proj.forward(heads.clone()));
        let hidden_dense = model.layers[l].mlp.hidden(x2_dense);
        let qd = shape.num_heads * hd;
        let mut so = InputStats::new(qd);
        so.add(heads.reshape([tokens, qd])).await?;
        let w_o = to_vec(model.layers[l].self_attn.o_proj.weight.val()).await?;
        let mut kv_scores = vec![];
        let groups = match choice(Some("kv")) {
            Choice::Fixed(g) => g.to_vec(),
            Choice::Scores => {
                let col = column_scores(kind, &w_o, d, &so, so.ridge(recipe.ridge), &Cholesky)?;
                kv_scores = (0..shape.num_kv_heads)
                    .map(|g| {
                        let heads = query_heads(&shape, g, Aggregation::Correct);
                        expand(&heads, hd).iter().map(|&j| col[j]).sum::<f64>() as f32
                    })
                    .collect();
                lowest(&kv_scores, n_kv)
            }
        };
        let lp = LayerPlan {
            layer: l,
            kv_groups: groups.clone(),
            mlp_channels: vec![],
        };
        let kept_heads = Plan::new(&model.config, vec![lp.clone()])
            .kept(&model.config, l)
            .heads;
        let step_plan = Plan::new(&model.config, vec![lp]);
        model = apply(model, &step_plan)?;
        let kept = expand(&kept_heads, hd);
        let (b, a) = repair(
            &mut model.layers[l].self_attn.o_proj,
            &w_o,
            &so,
            &kept,
            recipe.compensation,
            recipe.ridge,
            device,
        )
        .await?;
        recon.push(Reconstruction {
            layer: l,
            module: "o_proj",
            before: b,
            after: a,
        });
        let h_mid = h + model.layers[l]
            .self_attn
            .forward(x, &pos.cos, &pos.sin, &pos.mask);

        // MLP: statistics of down_proj's input on the repaired attention, scores per channel, slice, repair.
        let x2 = model.layers[l]
            .post_attention_layernorm
            .forward(h_mid.clone());
        let m = shape.intermediate_size;
        let mut sd = InputStats::new(m);
        sd.add(
            match recipe.mlp_stats_after_attention {
                true => model.layers[l].mlp.hidden(x2.clone()),
                false => hidden_dense,
            }
            .reshape([tokens, m]),
        )
        .await?;
        let w_down = to_vec(model.layers[l].mlp.down_proj.weight.val()).await?;
        let mut mlp_scores = vec![];
        let channels = match choice(None) {
            Choice::Fixed(c) => c.to_vec(),
            Choice::Scores => {
                mlp_scores =
                    column_scores(kind, &w_down, d, &sd, sd.ridge(recipe.ridge), &Cholesky)?
                        .into_iter()
                        .map(|x| x as f32)
                        .collect();
                lowest(&mlp_scores, n_mlp)
            }
        };
        let lp = LayerPlan {
            layer: l,
            kv_groups: vec![],
            mlp_channels: channels.clone(),
        };
        let step_plan = Plan::new(&model.config, vec![lp]);
        model = apply(model, &step_plan)?;
        let kept: Vec<usize> = (0..m).filter(|c| !channels.contains(c)).collect();
        let (b, a) = repair(
            &mut model.layers[l].mlp.down_proj,
            &w_down,
            &sd,
            &kept,
            recipe.compensation,
            recipe.ridge,
            device,
        )
        .await?;
        recon.push(Reconstruction {
            layer: l,
            module: "down_proj",
            before: b,
            after: a,
        });
        h = h_mid + model.layers[l].mlp.forward(x2);

        plans.push(LayerPlan {
            layer: l,
            kv_groups: groups,
            mlp_channels: channels,
        });
        if fixed.is_none() {
            scores.push(LayerScores {
                layer: l,
                kv_groups: kv_scores,
                mlp_channels: mlp_scores,
            });
        }
        progress.report(ProgressEvent {
            stage: "layers",
            done: step + 1,
            total: layers.len(),
        });
    }
    if recipe.compensation == Compensation::Bias {
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
fn add_zero_biases<B: Backend>(model: &mut Llama<B>, device: &B::Device) {
    for block in &mut model.layers {
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
    model.config.qkv_bias = true;
    model.config.o_bias = true;
    model.config.mlp_bias = true;
}
