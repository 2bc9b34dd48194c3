//! Training-free scores of the input columns of `o_proj` / `down_proj` from calibration statistics
//! (methods.md §2): `wanda-sp`, `flap`, `obs`, `numerical`. A KV group scores the sum over its query heads'
//! columns.

use super::Importance;
use crate::error::Result;
use crate::prune::compensate::solver::SpdSolver;
use crate::prune::stats::InputStats;

/// Per-input-column scores of `w` (`[d_out, n]` row-major) under `stats`; larger = more important.
pub fn column_scores(
    kind: Importance,
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    lambda: f64,
    solver: &dyn SpdSolver,
) -> Result<Vec<f64>> {
    let n = stats.n;
    let col =
        |j: usize, f: &dyn Fn(f64) -> f64| (0..d_out).map(|i| f(w[i * n + j] as f64)).sum::<f64>();
    Ok(match kind {
        Importance::WandaSp => {
            let norm = stats.norm();
            (0..n)
                .map(|j| col(j, &|x| x.abs()) / d_out as f64 * norm[j])
                .collect()
        }
        Importance::Flap => {
            let var = stats.variance();
            (0..n).map(|j| var[j] * col(j, &|x| x * x)).collect()
        }
        Importance::Obs => {
            let mut a = stats.gram.clone();
            (0..n).for_each(|j| a[j * n + j] += lambda);
            let inv_diag = solver.inverse_diagonal(&a, n)?;
            (0..n).map(|j| col(j, &|x| x * x) / inv_diag[j]).collect()
        }
        Importance::Numerical => numerical(w, d_out, stats, solver)?,
        other => unreachable!("{other:?} is not an activation score"),
    })
}

/// "Numerical Pruning"'s stationary point: `u = A⁻¹ 1` with `A = (WᵀW) ∘ G + δI`, `δ = 1e-6 · mean(diag A)`
/// (`[n, n]`, `W` `[d_out, n]`). Larger `u` = pruned first, so the score is `−u`.
fn numerical(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    solver: &dyn SpdSolver,
) -> Result<Vec<f64>> {
    let n = stats.n;
    let w = faer::Mat::<f64>::from_fn(d_out, n, |i, j| w[i * n + j] as f64);
    let wtw = w.transpose() * &w;
    let mut a: Vec<f64> = (0..n * n)
        .map(|k| wtw[(k / n, k % n)] * stats.gram[k])
        .collect();
    let damping = NUMERICAL_DAMPING * (0..n).map(|j| a[j * n + j]).sum::<f64>() / n as f64;
    (0..n).for_each(|j| a[j * n + j] += damping.max(f64::MIN_POSITIVE));
    let u = solver.solve(&a, n, &vec![1.0; n], 1)?;
    Ok(u.into_iter().map(|x| -x).collect())
}

/// Relative damping of `numerical`'s `A` (keeps it positive definite when columns are dead or collinear).
pub const NUMERICAL_DAMPING: f64 = 1e-6;
