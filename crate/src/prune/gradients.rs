//! Gradients for the gradient scores: batched backwards for `∂L/∂W` (Taylor) or `∂f/∂W` (NTK's output
//! functional), and N per-sample backwards of the loss for the Fisher diagonal `F = (1/N) Σ_n (∂L_n/∂W)²`
//! (LLM-Pruner's `acc_grad`).
//!
//! A backward keeps every layer's activations until it runs, so the windows go through it in batches
//! ([`windows_per_backward`]). `L` and `f` are means over the windows (all of one length): over batches of
//! `n_k` of the `N` windows `∂L/∂W = Σ_k (n_k / N) ∂L_k/∂W`, so each batch's value is scaled by `n_k / N`
//! before its backward and the gradients summed (in the weights' type, as PyTorch accumulates `.grad`). One
//! batch is the plain backward; several hold one batch's activations instead of every window's, and a second
//! set of gradients.

use std::collections::HashMap;
use std::ops::Range;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use super::importance::{ntk, GradStats, Importance, Objective};
use super::Recipe;
use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::named::Weight;
use crate::model::params::count_params;
use crate::model::{Llama, ModelConfig};
use crate::progress::{Progress, ProgressEvent};

fn in_layers(name: &str, layers: &Range<usize>) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| layers.contains(&l))
}

/// The most bytes one backward's activations may take (as [`backward_bytes_per_window`] counts them) when
/// the windows run in batches and the recipe does not set the batch.
pub const BACKWARD_BYTES: usize = 4 << 30;

/// The bytes one window of `len` tokens adds to a backward's peak when the model is held in `precision`: per
/// layer 10 hidden-wide and 5 MLP-wide tensors a position, and 3 attention probabilities a head and pair of
/// positions; at the head 3 vocabulary-wide ones a position (logits, their log-softmax, its gradient). In f32
/// every element takes 4 bytes. In bf16 the f32 casts of the model (norms, softmax, log-softmax) keep part of
/// them in f32: the layers' hidden- and MLP-wide tensors take 3 bytes an element on average, the attention
/// probabilities 10 a head and pair (two of the three in f32), and the head's 12 (all three in f32). Fitted to
/// the peak memory of taylor-first on SmolLM2-135M on this CPU at 32 × 64, 16 × 256, 4 × 512 and 1 × 512 windows
/// in each precision: each peak less this count leaves what the run holds without windows, the weights and
/// their gradients and the runtime — 1,100 to 1,200 MiB in f32, 834 to 875 MiB in bf16
/// (`benches/gradient_batches_smollm2.sh`).
pub fn backward_bytes_per_window(cfg: &ModelConfig, len: usize, precision: Precision) -> u128 {
    let half = precision.bytes() as u128;
    let (wide, attention) = ((half + 4) / 2, 8 + half);
    let len = len as u128;
    let layers = cfg.layers.iter().fold(0u128, |sum, l| {
        let scores = (attention * l.num_heads as u128).saturating_mul(len);
        let widths = wide * (10 * cfg.hidden_size as u128 + 5 * l.intermediate_size as u128);
        sum.saturating_add(widths.saturating_add(scores))
    });
    len.saturating_mul(layers.saturating_add(12 * cfg.vocab_size as u128))
}

/// Windows per backward for `n` windows of `len` tokens through a model held in `precision`: the recipe's
/// calibration batch; else all `n`, unless their activations are over [`BACKWARD_BYTES`] and batches of as
/// many as fit it, with the second set of gradients the sum takes (every layer's, in `precision`), hold less.
/// At least one.
pub fn windows_per_backward(
    cfg: &ModelConfig,
    len: usize,
    n: usize,
    recipe: &Recipe,
    precision: Precision,
) -> usize {
    if let Some(batch) = recipe.calib_batch {
        return batch.max(1);
    }
    let window = backward_bytes_per_window(cfg, len, precision).max(1);
    let batch = (BACKWARD_BYTES as u128 / window).max(1);
    let gradients = layer_gradients_bytes(cfg, precision);
    // Batches hold less when `gradients + batch · window < n · window`.
    let saved = (n as u128).saturating_sub(batch).saturating_mul(window);
    match gradients < saved {
        true => batch as usize,
        false => n.max(1),
    }
}

/// Bytes of one set of the layers' gradients in `precision` (every layer's parameters: the pruned range's
/// matrices are fewer), as a sum over batches or the Fisher diagonal holds it beside burn's own gradients.
fn layer_gradients_bytes(cfg: &ModelConfig, precision: Precision) -> u128 {
    let params = count_params(cfg).per_layer.iter().sum::<usize>() as u128;
    (precision.bytes() as u128).saturating_mul(params)
}

/// What the backwards of `recipe` (and of its depth step) over `n` calibration windows of `len` tokens hold at
/// their peak beside the weights and a gradient of every weight, all in `precision`, in bytes (0 when it runs
/// none). The statistics run one after another — the loss's gradient `∂L/∂W`, the Fisher diagonal, the output's
/// gradient `∂f/∂W` (AdaPruner's mix may take all three) — and each keeps a set of the layers' gradients
/// ([`layer_gradients_bytes`]) for the ones after it. While one runs, it holds its backward's activations (a
/// batch of [`windows_per_backward`] windows; the Fisher diagonal's are one window) and its own running sum: for
/// a gradient once it takes several backwards, for the Fisher diagonal always (its squares are new tensors). The
/// peak is the largest of these. AdaPruner draws its trials' windows from the pool its held-out windows leave,
/// so every size of that pool counts.
pub fn backward_peak_bytes(
    cfg: &ModelConfig,
    len: usize,
    n: usize,
    recipe: &Recipe,
    precision: Precision,
) -> u128 {
    let set = layer_gradients_bytes(cfg, precision);
    let window = backward_bytes_per_window(cfg, len, precision);
    let peak = |r: &Recipe, metrics: &[Importance], n: usize| {
        if n == 0 {
            return 0;
        }
        let by = |o: Objective| metrics.iter().any(|m| m.gradient_of() == Some(o));
        let fisher = metrics.iter().any(|m| m.needs_fisher());
        let batch = windows_per_backward(cfg, len, n, r, precision).min(n) as u128;
        let gradient = window
            .saturating_mul(batch)
            .saturating_add(set * (batch < n as u128) as u128);
        let (mut held, mut peak) = (0u128, 0u128);
        for (runs, phase) in [
            (by(Objective::Loss), gradient),
            (fisher, window.saturating_add(set)),
            (by(Objective::Output), gradient),
        ] {
            if runs {
                peak = peak.max(phase.saturating_add(held.saturating_mul(set)));
                held += 1;
            }
        }
        peak
    };
    recipe
        .and_steps()
        .iter()
        .map(|r| match r.importance {
            Importance::Adapruner => {
                let settings = r.adapruner.clone().unwrap_or_default();
                let pool = n.saturating_sub(settings.fitness_windows);
                (1..=pool)
                    .map(|k| peak(r, &settings.metrics, k))
                    .max()
                    .unwrap_or(0)
            }
            i => peak(r, &[i], n),
        })
        .max()
        .unwrap_or(0)
}

/// Adds `t` to the sum under `name` (or starts it).
fn add<B: Backend>(sums: &mut HashMap<String, Tensor<B, 2>>, name: &str, t: Tensor<B, 2>) {
    let sum = match sums.remove(name) {
        Some(sum) => sum + t,
        None => t,
    };
    sums.insert(name.to_string(), sum);
}

/// Gradient statistics of the matrices of `layers` on the calibration `windows` (all the same length): the
/// gradient of `objective` (if any), with `per_batch` windows a backward, and the Fisher diagonal (if
/// `need_fisher`).
#[allow(clippy::too_many_arguments)]
pub fn gradient_stats<B: AutodiffBackend>(
    model: &Llama<B>,
    windows: &[Vec<u32>],
    layers: Range<usize>,
    objective: Option<Objective>,
    need_fisher: bool,
    per_batch: usize,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<GradStats<B::InnerBackend>> {
    let mut stats = GradStats::default();
    let weights: Vec<_> = model
        .named_weights()
        .into_iter()
        .filter(|(n, w)| in_layers(n, &layers) && matches!(w, Weight::Matrix(_)))
        .collect();
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    if let Some(objective) = objective {
        let batches: Vec<&[&[u32]]> = refs.chunks(per_batch.max(1)).collect();
        progress.report(ProgressEvent::new("backward", 0, batches.len()));
        for (i, batch) in batches.iter().enumerate() {
            if i > 0 && progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let ids = batch_tensor::<B>(batch, device);
            let value = match objective {
                Objective::Loss => model.loss(ids),
                Objective::Output => ntk::output_functional(model.forward(ids)),
            };
            let grads = (value * (batch.len() as f64 / refs.len() as f64)).backward();
            for (name, w) in &weights {
                if let Some(Weight::Matrix(g)) = w.grad(&grads) {
                    add(&mut stats.grad, name, g);
                }
            }
            progress.report(ProgressEvent::new("backward", i + 1, batches.len()));
        }
    }
    if need_fisher {
        let n = refs.len();
        for (i, window) in refs.iter().enumerate() {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let grads = model.loss(batch_tensor::<B>(&[window], device)).backward();
            for (name, w) in &weights {
                if let Some(Weight::Matrix(g)) = w.grad(&grads) {
                    add(&mut stats.fisher, name, g.powi_scalar(2) / n as f64);
                }
            }
            progress.report(ProgressEvent::new("fisher", i + 1, n));
        }
    }
    Ok(stats)
}
