//! The fitness of a candidate plan, shared by the searches over plans (the `search` allocation, the `adapruner`
//! score): the calibration loss (mean next-token NLL) of the model the plan leaves, unrepaired, on a few
//! calibration windows, run through the model a batch at a time.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::activations::windows_of_width;
use super::plan::{apply, Plan};
use super::Recipe;
use crate::error::Result;
use crate::eval::perplexity::batch_tensor;
use crate::model::{Llama, ModelConfig};
use crate::readback::scalar;

/// Held-out windows of `len` tokens one forward of the fitness runs: the recipe's calibration batch, else as
/// many as keep the logits `[batch, len, vocab]` and the widest layer's MLP activations under
/// [`CHUNK_BYTES`](super::activations::CHUNK_BYTES) (LLaMA-7B: 4 windows of 2048 tokens; Llama-3-8B's
/// vocabulary of 128,256: 1); at least one.
pub fn windows_per_fitness(cfg: &ModelConfig, len: usize, recipe: &Recipe) -> usize {
    windows_of_width(recipe, len, cfg.widest_intermediate().max(cfg.vocab_size))
}

/// Measures plans on `model` with fixed windows.
pub struct Fitness<'a, B: Backend> {
    model: &'a Llama<B>,
    /// `[batch, seq]` each, the windows in order.
    batches: Vec<Tensor<B, 2, Int>>,
    windows: usize,
}

impl<'a, B: Backend> Fitness<'a, B> {
    /// Fitness on `windows` (at least one, all the same length), `per_batch` of them a forward.
    pub fn new(model: &'a Llama<B>, windows: &[Vec<u32>], per_batch: usize) -> Self {
        let device = &model.devices()[0];
        let batches = windows
            .chunks(per_batch.max(1))
            .map(|chunk| {
                let refs: Vec<&[u32]> = chunk.iter().map(|w| w.as_slice()).collect();
                batch_tensor::<B>(&refs, device)
            })
            .collect();
        Self {
            model,
            batches,
            windows: windows.len(),
        }
    }

    /// The loss of the model pruned by `plan` (lower is better): each batch's mean weighted by its share of the
    /// windows, which all have one length, so the mean over every window.
    pub async fn loss(&self, plan: &Plan) -> Result<f64> {
        let pruned = apply(self.model.clone(), plan)?;
        let n = self.windows as f64;
        let loss = self
            .batches
            .iter()
            .map(|ids| {
                let share = ids.dims()[0] as f64 / n;
                pruned.loss(ids.clone()).mul_scalar(share)
            })
            .reduce(|a, b| a + b)
            .expect("fitness runs on at least one window");
        scalar(loss).await
    }
}
