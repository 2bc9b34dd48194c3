//! Calibration activations between decoder layers, `[windows, len, hidden]`, held as chunks of windows. The
//! layer-wise passes (activation scores, repairs, whole-layer scores) run a layer one chunk at a time and sum its
//! statistics over the chunks, so the tensors inside a layer — the MLP's `[chunk, len, intermediate]` is the
//! largest — are one chunk's however many windows calibrate (under [`CHUNK_BYTES`] by default). The activations
//! themselves are held for every window (one buffer per chunk). Windows that fit one chunk run as one batch, and
//! nothing in a layer runs twice. Gradient scores run their backwards in batches of their own
//! (`prune/gradients.rs`).

use burn::tensor::{backend::Backend, Tensor};

use super::calib::check_windows;
use super::compensate::Compensation;
use super::plan::Plan;
use super::{Importance, Recipe};
use crate::backend::Precision;
use crate::error::Result;
use crate::eval::perplexity::batch_tensor;
use crate::model::footprint::{elements, mlp_peak_bytes};
use crate::model::llama::{Block, Positions};
use crate::model::{LayerShape, Llama, ModelConfig};

/// The most bytes one chunk's MLP activations `[chunk, len, intermediate]` take in f32 when the recipe does not
/// set its calibration batch: 1 GiB, so LLaMA-7B's 128 × 2048 windows run 11 at a time (990 MB), while the
/// 128 × 128 of a FLAP run (722 MB) stay one batch.
pub const CHUNK_BYTES: usize = 1 << 30;

/// Windows per chunk for `cfg` and windows of `len` tokens: the recipe's calibration batch, else as many as
/// keep the widest layer's MLP activations under [`CHUNK_BYTES`]; at least one.
pub fn windows_per_chunk(cfg: &ModelConfig, len: usize, recipe: &Recipe) -> usize {
    windows_of_width(recipe, len, cfg.widest_intermediate())
}

/// The recipe's calibration batch, else as many windows of `len` tokens as keep a tensor `[batch, len, width]`
/// under [`CHUNK_BYTES`] in f32; at least one.
pub fn windows_of_width(recipe: &Recipe, len: usize, width: usize) -> usize {
    let batch = recipe.calib_batch.unwrap_or_else(|| {
        let window = 4usize
            .saturating_mul(len.max(1))
            .saturating_mul(width.max(1));
        CHUNK_BYTES / window
    });
    batch.max(1)
}

/// Bytes the layer-wise calibration passes of a run hold through one layer, known from the config (see
/// [`step_pass_bytes`] for one step's); 0 when no step runs a layer-wise pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassBytes {
    /// Held in memory: the steps run one after another, so the largest step's.
    pub in_memory: u128,
    /// Streamed: a whole-layer and a width step run chained (the width pass reads the layers the depth pass
    /// leaves), each pass holding its own activations, so their sum.
    pub streamed: u128,
}

/// [`PassBytes`] of `recipe`, or of `plan` applied with the recipe's compensation, calibrating on `windows`
/// windows of `len` tokens in `precision`.
pub fn pass_bytes(
    cfg: &ModelConfig,
    recipe: &Recipe,
    plan: Option<&Plan>,
    windows: usize,
    len: usize,
    precision: Precision,
) -> PassBytes {
    let steps: Vec<u128> = Step::of_run(cfg, recipe, plan)
        .iter()
        .map(|s| step_pass_bytes(s, windows, len, precision))
        .collect();
    PassBytes {
        in_memory: steps.iter().copied().max().unwrap_or(0),
        streamed: steps.iter().sum(),
    }
}

/// One step of a run as its layer-wise pass sees it.
struct Step {
    recipe: Recipe,
    /// Whether a saved plan decides what goes (no scores are computed).
    plan_given: bool,
    /// Whether the step removes whole layers (else it narrows them).
    depth: bool,
    /// The model the step runs on: a saved plan's width step runs on what its depth step left (a recipe's on
    /// the model before, the layers its depth step removes being unknown until it runs).
    cfg: ModelConfig,
    /// The layers whose statistics the step gathers: a width step's range (less the layers a saved plan's
    /// depth step removed); a depth step's kept layers before a removed run (of a saved plan, else those its
    /// range allows).
    layers: Vec<LayerShape>,
}

impl Step {
    /// The steps `recipe` runs, or those `plan` splits into (whole layers, then width, as the passes apply
    /// them).
    fn of_run(cfg: &ModelConfig, recipe: &Recipe, plan: Option<&Plan>) -> Vec<Step> {
        let shapes = |layers: &mut dyn Iterator<Item = usize>| -> Vec<LayerShape> {
            layers.filter_map(|l| cfg.layers.get(l).copied()).collect()
        };
        let step = |recipe: Recipe, depth: bool, cfg: ModelConfig, layers: Vec<LayerShape>| Step {
            recipe,
            plan_given: plan.is_some(),
            depth,
            cfg,
            layers,
        };
        let width = |recipe: Recipe, removed: &[usize]| {
            let range = recipe.layer_range(cfg);
            let layers = shapes(&mut range.filter(|l| !removed.contains(l)));
            let left = Plan::depth(cfg, removed.to_vec()).pruned_config(cfg);
            step(recipe, false, left, layers)
        };
        // The layers whose down_proj absorbs a run of removed layers starting at one of `firsts`: the layer
        // before each (layer 0 has none).
        let absorbing = |firsts: &mut dyn Iterator<Item = usize>| -> Vec<LayerShape> {
            shapes(&mut firsts.filter(|&l| l > 0).map(|l| l - 1))
        };
        match plan {
            None => match recipe.steps() {
                Some((d, w)) => {
                    let before = absorbing(&mut d.layer_range(cfg));
                    vec![step(d, true, cfg.clone(), before), width(w, &[])]
                }
                None if recipe.prunes_depth() => {
                    let before = absorbing(&mut recipe.layer_range(cfg));
                    vec![step(recipe.clone(), true, cfg.clone(), before)]
                }
                None => vec![width(recipe.clone(), &[])],
            },
            Some(plan) => {
                let removed = &plan.removed_layers;
                let narrows = plan.layers.iter().any(|lp| !lp.is_empty());
                let mut firsts = removed
                    .iter()
                    .copied()
                    .filter(|l| !removed.contains(&l.wrapping_sub(1)));
                let mut steps = vec![];
                if !removed.is_empty() {
                    let before = absorbing(&mut firsts);
                    steps.push(step(recipe.clone(), true, cfg.clone(), before));
                }
                if narrows || removed.is_empty() {
                    steps.push(width(recipe.clone(), removed));
                }
                steps
            }
        }
    }
}

/// Bytes one step's layer-wise calibration pass holds through a layer: the activations of all `windows` of
/// `len` tokens entering it (`[windows, len, hidden]` in the model's float type; a depth repair holds two such
/// streams, after the absorbing layer's attention and through the removed run it is fitted to); what one chunk
/// of them computes inside the layer at its widest, the MLP ([`mlp_peak_bytes`]: the outputs of `gate_proj`
/// and `up_proj` beside their input and the residual stream, in the model's float type); and the f32 Gram
/// matrices the step gathers, the widest of its layers': a width step's of the two inputs it scores or
/// repairs, held together (o_proj's `[heads·head_dim]²` and down_proj's `[intermediate]²`), a depth repair's of
/// down_proj's input beside the removed run's contribution (`[intermediate + hidden]²`). 0 when the step runs
/// no layer-wise pass (no compensation, and scores from weights or gradients, or from a saved plan). A lower
/// bound: the chunk's other tensors (the SiLU, the product, the MLP input in f32 for its statistics in bf16;
/// in a depth repair the run's contribution and its concatenation with down_proj's input), the layer's output
/// while its input is consumed chunk by chunk, what a solve holds beside the Grams, and, when the windows are
/// one chunk, what the layer keeps for its repair (the input of `o_proj`, `[windows, len, heads·head_dim]`,
/// and with the MLP's statistics after the attention its input, `[windows, len, intermediate]`; in a depth
/// repair down_proj's input and a third stream, after the absorbing layer) come on top. On the CPU, on
/// SmolLM2-135M, a width step (flap + ls) held 1.07 to 1.73 times this count in f32 and 2.82 to 4.13 times in
/// bf16 over three runs, a depth repair 1.46–1.51 and 3.70–3.73 times in one, bf16 there holding more than f32
/// outright; unmeasured on CUDA (`benches/calibration_memory_smollm2.sh`).
fn step_pass_bytes(step: &Step, windows: usize, len: usize, precision: Precision) -> u128 {
    let (r, cfg) = (&step.recipe, &step.cfg);
    let scores = !step.plan_given
        && (r.importance.needs_activations() || r.importance == Importance::BlockInfluence);
    let repairs = r.compensation != Compensation::None;
    if !repairs && !scores {
        return 0;
    }
    let chunk = windows_per_chunk(cfg, len, r).min(windows);
    let streams = match step.depth && repairs {
        true => 2,
        false => 1,
    };
    let held = elements(&[streams, windows, len, cfg.hidden_size, precision.bytes()])
        .saturating_add(mlp_peak_bytes(cfg, chunk, len, precision.bytes()));
    let square = |n: usize| (n as u128).saturating_mul(n as u128);
    let gram = |l: &LayerShape| match step.depth {
        true => square(l.intermediate_size + cfg.hidden_size),
        false => square(l.num_heads * cfg.head_dim).saturating_add(square(l.intermediate_size)),
    };
    let grams = match step.depth && !repairs {
        true => 0,
        false => step.layers.iter().map(gram).max().unwrap_or(0),
    };
    held.saturating_add(grams.saturating_mul(4))
}

/// The calibration activations entering some decoder layer.
#[derive(Clone)]
pub struct Activations<B: Backend> {
    /// `[chunk, len, hidden]` each, the windows in order.
    pub chunks: Vec<Tensor<B, 3>>,
    /// The windows' rotary tables and causal mask.
    pub pos: Positions<B>,
}

impl<B: Backend> Activations<B> {
    /// The windows `calib` embedded by `model`, `per_chunk` windows a chunk.
    pub fn embed(
        model: &Llama<B>,
        calib: &[Vec<u32>],
        per_chunk: usize,
        device: &B::Device,
    ) -> Result<Self> {
        check_windows(calib, model.config.vocab_size)?;
        let chunks = calib
            .chunks(per_chunk.max(1))
            .map(|chunk| {
                let refs: Vec<&[u32]> = chunk.iter().map(|w| w.as_slice()).collect();
                model.embed(batch_tensor::<B>(&refs, device))
            })
            .collect();
        Ok(Self {
            chunks,
            pos: model.positions(calib[0].len(), device),
        })
    }

    /// Whether the windows run as one batch (a layer then keeps what it computed instead of running again).
    pub fn one_batch(&self) -> bool {
        self.chunks.len() == 1
    }

    /// The activations after `block`.
    pub fn through(self, block: &Block<B>) -> Self {
        self.map(|h, pos| block.forward(h, pos))
    }

    /// Every chunk replaced by `f` of it (and the positions).
    pub fn map(self, mut f: impl FnMut(Tensor<B, 3>, &Positions<B>) -> Tensor<B, 3>) -> Self {
        let pos = self.pos;
        let chunks = self.chunks.into_iter().map(|h| f(h, &pos)).collect();
        Self { chunks, pos }
    }
}
