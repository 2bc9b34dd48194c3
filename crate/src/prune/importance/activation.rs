//! Training-free scores of the input columns of `o_proj` / `down_proj` from calibration statistics
//! (methods.md §2): `wanda-sp`, `flap`, `obs`, `numerical`. A KV group scores the sum over its query heads'
//! columns.

use burn::tensor::{backend::Backend, Tensor};

use super::Importance;
use crate::error::Result;
use crate::products::product;
use crate::prune::compensate::solver::Cholesky;
use crate::prune::linalg::{column_sums, diagonal, like, plus_diagonal};
use crate::prune::stats::InputStats;
use crate::readback::{scalar, to_vec_f64};

/// Per-input-column scores of `w` (`[d_out, n]`) under `stats`; larger = more important.
pub async fn column_scores<C: Backend>(
    kind: Importance,
    w: &Tensor<C, 2>,
    stats: &InputStats<C>,
    lambda: f64,
) -> Result<Vec<f64>> {
    let d_out = w.dims()[0];
    // Σ_i f(W_ij) per column, [n].
    let col = column_sums;
    let scores = match kind {
        Importance::WandaSp => col(w.clone().abs()).div_scalar(d_out as f64) * stats.norm(),
        Importance::Flap => stats.variance() * col(w.clone().square()),
        Importance::Obs => {
            let a = stats.damped(lambda);
            let inv_diag = Cholesky::factor(a.clone()).await?.inverse_diagonal(&a);
            col(w.clone().square()) / inv_diag
        }
        Importance::Numerical => numerical(w, stats).await?,
        other => unreachable!("{other:?} is not an activation score"),
    };
    to_vec_f64(scores).await
}

/// "Numerical Pruning"'s stationary point: `u = A⁻¹ 1` with `A = (WᵀW) ∘ G + δI`, `δ = 1e-6 · mean(diag A)`
/// (`[n, n]`, `W` `[d_out, n]`). Larger `u` = pruned first, so the score is `−u`, `[n]`.
async fn numerical<C: Backend>(w: &Tensor<C, 2>, stats: &InputStats<C>) -> Result<Tensor<C, 1>> {
    let n = stats.n();
    let a = product(w.clone().transpose(), w.clone()) * stats.gram.clone();
    let mean_diag = scalar(diagonal(&a).mean()).await?;
    let damping = (NUMERICAL_DAMPING * mean_diag).max(f64::MIN_POSITIVE);
    let a = plus_diagonal(a, damping);
    let ones = Tensor::<C, 2>::ones([n, 1], like(w));
    let u = Cholesky::factor(a).await?.solve(ones);
    Ok(u.reshape([n]).neg())
}

/// Relative damping of `numerical`'s `A` (keeps it positive definite when columns are dead or collinear).
pub const NUMERICAL_DAMPING: f64 = 1e-6;
