//! NIRVANA's NTK-guided saliency (methods.md §2): `Σ |W ⊙ ∂f/∂W|` per channel, the first-order Taylor term of a
//! model-output functional `f` instead of the loss, so no labels shape it: `f` is the mean, over the calibration
//! windows and the vocabulary, of each logit's largest value over the window's positions
//! (`logits.max(dim=1).values.mean()`).

use burn::tensor::{backend::Backend, Tensor};

use super::taylor::{self, Term};
use super::Member;
use crate::error::Result;
use crate::prune::linalg::at_least_f32;

/// `f` of a batch's logits (in f32 whatever their type). `[batch, seq, vocab]` → `[1]`
pub fn output_functional<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 1> {
    at_least_f32(logits).max_dim(1).mean()
}

/// Per-channel score of one member whose `grad` is `∂f/∂W`: `Σ |W ⊙ ∂f/∂W|` over the other axis.
pub fn score<B: Backend>(m: &Member<B>) -> Result<Tensor<B, 1>> {
    taylor::score(m, Term::First)
}
