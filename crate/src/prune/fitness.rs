//! The fitness of a candidate plan, shared by the searches over plans (the `search` allocation, the `adapruner`
//! score): the calibration loss (mean next-token NLL) of the model the plan leaves, unrepaired, on a few
//! calibration windows.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::plan::{apply, Plan};
use crate::error::Result;
use crate::eval::perplexity::batch_tensor;
use crate::model::Llama;
use crate::readback::scalar;

/// Measures plans on `model` with fixed windows.
pub struct Fitness<'a, B: Backend> {
    model: &'a Llama<B>,
    /// `[windows, seq]`
    ids: Tensor<B, 2, Int>,
}

impl<'a, B: Backend> Fitness<'a, B> {
    /// Fitness on `windows` (at least one, all the same length).
    pub fn new(model: &'a Llama<B>, windows: &[Vec<u32>]) -> Self {
        let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
        let ids = batch_tensor::<B>(&refs, &model.devices()[0]);
        Self { model, ids }
    }

    /// The loss of the model pruned by `plan` (lower is better).
    pub async fn loss(&self, plan: &Plan) -> Result<f64> {
        let pruned = apply(self.model.clone(), plan)?;
        scalar(pruned.loss(self.ids.clone())).await
    }
}
