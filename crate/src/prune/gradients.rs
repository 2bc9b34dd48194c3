//! Gradients for the gradient scores: one batched backward for `∂L/∂W` (Taylor) or `∂f/∂W` (NTK's output
//! functional), and N per-sample backwards of the loss for the Fisher diagonal `F = (1/N) Σ_n (∂L_n/∂W)²`
//! (LLM-Pruner's `acc_grad`).

use std::ops::Range;

use burn::tensor::backend::AutodiffBackend;

use super::importance::{ntk, GradStats, Objective};
use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::named::Weight;
use crate::model::Llama;
use crate::progress::{Progress, ProgressEvent};

fn in_layers(name: &str, layers: &Range<usize>) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| layers.contains(&l))
}

/// Gradient statistics of the matrices of `layers` on the calibration `windows` (all the same length): the
/// gradient of `objective` (if any) and the Fisher diagonal (if `need_fisher`).
pub fn gradient_stats<B: AutodiffBackend>(
    model: &Llama<B>,
    windows: &[Vec<u32>],
    layers: Range<usize>,
    objective: Option<Objective>,
    need_fisher: bool,
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
        progress.report(ProgressEvent::new("backward", 0, 1));
        let ids = batch_tensor::<B>(&refs, device);
        let value = match objective {
            Objective::Loss => model.loss(ids),
            Objective::Output => ntk::output_functional(model.forward(ids)),
        };
        let grads = value.backward();
        for (name, w) in &weights {
            if let Some(Weight::Matrix(g)) = w.grad(&grads) {
                stats.grad.insert(name.clone(), g);
            }
        }
        progress.report(ProgressEvent::new("backward", 1, 1));
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
                    let sq = g.powi_scalar(2) / n as f64;
                    let acc = match stats.fisher.remove(name) {
                        Some(acc) => acc + sq,
                        None => sq,
                    };
                    stats.fisher.insert(name.clone(), acc);
                }
            }
            progress.report(ProgressEvent::new("fisher", i + 1, n));
        }
    }
    Ok(stats)
}
