//! Compensation (methods.md §4): after input columns `P` of `o_proj` / `down_proj` are removed, refit the kept
//! columns `K` so the layer's output changes as little as possible on the calibration inputs.

pub mod solver;

use faer::Mat;
use serde::{Deserialize, Serialize};

use self::solver::SpdSolver;
use super::stats::InputStats;
use crate::error::Result;

/// Which repair follows the removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compensation {
    /// Drop the columns, change nothing else.
    #[default]
    None,
    /// Least squares: `W'[:,K] = W[:,K] + W[:,P] G_PK (G_KK + λI)⁻¹`.
    Ls,
    /// FLAP's bias: `b += W[:,P] μ_P` (the mean contribution of the removed columns). Adds biases to the model.
    Bias,
}

impl Compensation {
    /// One line for a user choosing a repair.
    pub fn describe(self) -> &'static str {
        match self {
            Compensation::None => "no repair: the removed columns simply vanish",
            Compensation::Ls => {
                "least squares refit of the kept columns on calibration inputs (ridge λ)"
            }
            Compensation::Bias => {
                "FLAP: add the removed columns' mean contribution to the output bias"
            }
        }
    }
}

fn gram_block(stats: &InputStats, rows: &[usize], cols: &[usize]) -> Mat<f64> {
    Mat::from_fn(rows.len(), cols.len(), |i, j| stats.g(rows[i], cols[j]))
}

/// The kept columns after least squares: `[d_out, |K|]` row-major, from `w` `[d_out, n]` row-major (f64):
/// `W'[:,K] = W[:,K] + W[:,P] G_PK (G_KK + λI)⁻¹`, the minimiser of `‖WX − W'X_K‖² + λ‖W' − W[:,K]‖²`.
pub fn least_squares_f64(
    w: &[f64],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    pruned: &[usize],
    lambda: f64,
    solver: &dyn SpdSolver,
) -> Result<Vec<f64>> {
    let n = stats.n;
    let k = kept.len();
    let cols = |idx: &[usize]| Mat::from_fn(d_out, idx.len(), |i, j| w[i * n + idx[j]]);
    let wk = cols(kept);
    if pruned.is_empty() {
        return Ok((0..d_out * k).map(|x| wk[(x / k, x % k)]).collect());
    }
    let mut a = gram_block(stats, kept, kept);
    (0..k).for_each(|i| a[(i, i)] += lambda);
    // B = G_KP W_Pᵀ  ([k, d_out]); Y = A⁻¹ B; W'_K = W_K + Yᵀ.
    let b = gram_block(stats, kept, pruned) * cols(pruned).transpose();
    let a_flat: Vec<f64> = (0..k * k).map(|x| a[(x / k, x % k)]).collect();
    let b_flat: Vec<f64> = (0..k * d_out).map(|x| b[(x / d_out, x % d_out)]).collect();
    let y = solver.solve(&a_flat, k, &b_flat, d_out)?;
    Ok((0..d_out * k)
        .map(|x| wk[(x / k, x % k)] + y[(x % k) * d_out + x / k])
        .collect())
}

/// [`least_squares_f64`] for f32 weights (statistics and the solve stay in f64).
pub fn least_squares(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    pruned: &[usize],
    lambda: f64,
    solver: &dyn SpdSolver,
) -> Result<Vec<f32>> {
    let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    Ok(
        least_squares_f64(&w, d_out, stats, kept, pruned, lambda, solver)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    )
}

/// Relative output error `‖W X − W' X_K‖² / ‖W X‖²` on the calibration inputs, through the Gram matrix.
/// `new_kept` is `[d_out, |K|]` row-major (the kept columns after repair, or simply copied).
pub fn relative_error(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    new_kept: &[f32],
) -> f64 {
    relative_error_with_bias(w, d_out, stats, kept, new_kept, None)
}

/// [`relative_error`] when the repair also adds `bias` (`[d_out]`) to the output.
pub fn relative_error_with_bias(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    new_kept: &[f32],
    bias: Option<&[f32]>,
) -> f64 {
    let n = stats.n;
    let g = Mat::from_fn(n, n, |i, j| stats.g(i, j));
    let full = Mat::from_fn(d_out, n, |i, j| w[i * n + j] as f64);
    let mut delta = full.clone();
    for (c, &j) in kept.iter().enumerate() {
        for i in 0..d_out {
            delta[(i, j)] -= new_kept[i * kept.len() + c] as f64;
        }
    }
    let energy = |m: &Mat<f64>| {
        let mg = m * &g;
        (0..d_out)
            .map(|i| (0..n).map(|j| mg[(i, j)] * m[(i, j)]).sum::<f64>())
            .sum::<f64>()
    };
    // ‖D x − Δb‖² summed over tokens = tr(D G Dᵀ) − 2 Δbᵀ D s + T ‖Δb‖².
    let bias_terms = bias.map_or(0.0, |b| {
        let ds: f64 = (0..d_out)
            .map(|i| b[i] as f64 * (0..n).map(|j| delta[(i, j)] * stats.sum[j]).sum::<f64>())
            .sum();
        -2.0 * ds + stats.tokens as f64 * b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
    });
    (energy(&delta) + bias_terms) / energy(&full).max(f64::MIN_POSITIVE)
}

/// FLAP's bias update `Δb = W[:,P] μ_P` (`[d_out]`), from `w` `[d_out, n]` row-major.
pub fn bias_update(w: &[f32], d_out: usize, stats: &InputStats, pruned: &[usize]) -> Vec<f32> {
    let (n, mu) = (stats.n, stats.mean());
    (0..d_out)
        .map(|i| {
            pruned
                .iter()
                .map(|&j| w[i * n + j] as f64 * mu[j])
                .sum::<f64>() as f32
        })
        .collect()
}
