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
    /// Least squares on `[x_K; 1]`: refits the kept columns and the output bias together. Adds biases.
    LsBias,
}

impl Compensation {
    /// Every repair, in the order the page lists them.
    pub const ALL: [Compensation; 4] = [
        Compensation::None,
        Compensation::Ls,
        Compensation::Bias,
        Compensation::LsBias,
    ];

    /// Whether the repair gives `o_proj` / `down_proj` an output bias.
    pub fn adds_bias(self) -> bool {
        matches!(self, Compensation::Bias | Compensation::LsBias)
    }

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
            Compensation::LsBias => {
                "least squares of the kept columns and the output bias together (ridge λ on the weights)"
            }
        }
    }
}

/// What a least-squares refit returns (f64 or f32 alike).
#[derive(Debug, Clone, PartialEq)]
pub struct Refit<T> {
    /// The kept columns after the refit, `[d_out, |K|]` row-major.
    pub kept: Vec<T>,
    /// The output-bias change `[d_out]` (`ls-bias` only).
    pub bias: Option<Vec<T>>,
}

/// Least squares on `[d_out, n]` row-major `w` (f64): `W'[:,K] = W[:,K] + W[:,P] G_PK (G_KK + λI)⁻¹`, the
/// minimiser of `‖WX − W'X_K‖² + λ‖W' − W[:,K]‖²`. With `with_bias` the regression is on `[x_K; 1]` with the
/// augmented Gram `[[G_KK + λI, s_K], [s_Kᵀ, T]]` (the intercept is not penalised) and also returns `Δb`.
#[allow(clippy::too_many_arguments)]
pub fn least_squares_f64(
    w: &[f64],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    pruned: &[usize],
    lambda: f64,
    with_bias: bool,
    solver: &dyn SpdSolver,
) -> Result<Refit<f64>> {
    let n = stats.n;
    let k = kept.len();
    let kept_w = |y: Option<&[f64]>| -> Vec<f64> {
        (0..d_out * k)
            .map(|x| w[(x / k) * n + kept[x % k]] + y.map_or(0.0, |y| y[(x % k) * d_out + x / k]))
            .collect()
    };
    if pruned.is_empty() {
        return Ok(Refit {
            kept: kept_w(None),
            bias: with_bias.then(|| vec![0.0; d_out]),
        });
    }
    // Unknowns: k weights (+ the intercept). A = G_KK + λI (bordered by s_K and T); B = [G_KP; s_Pᵀ] W_Pᵀ.
    let m = k + usize::from(with_bias);
    let row = |i: usize, j: usize| match (i < k, j) {
        (true, j) => stats.g(kept[i], j),
        (false, j) => stats.sum[j],
    };
    let a = Mat::from_fn(m, m, |i, j| match (i < k, j < k) {
        (true, true) => stats.g(kept[i], kept[j]) + if i == j { lambda } else { 0.0 },
        (true, false) => stats.sum[kept[i]],
        (false, true) => stats.sum[kept[j]],
        (false, false) => stats.tokens as f64,
    });
    let g_rp = Mat::from_fn(m, pruned.len(), |i, j| row(i, pruned[j]));
    let w_p = Mat::from_fn(d_out, pruned.len(), |i, j| w[i * n + pruned[j]]);
    let b = g_rp * w_p.transpose();
    let a_flat: Vec<f64> = (0..m * m).map(|x| a[(x / m, x % m)]).collect();
    let b_flat: Vec<f64> = (0..m * d_out).map(|x| b[(x / d_out, x % d_out)]).collect();
    // Y = A⁻¹ B ([m, d_out]); W'_K = W_K + Y[:k]ᵀ, Δb = Y[k].
    let y = solver.solve(&a_flat, m, &b_flat, d_out)?;
    Ok(Refit {
        kept: kept_w(Some(&y)),
        bias: with_bias.then(|| y[k * d_out..].to_vec()),
    })
}

/// [`least_squares_f64`] for f32 weights (statistics and the solve stay in f64).
#[allow(clippy::too_many_arguments)]
pub fn least_squares(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    pruned: &[usize],
    lambda: f64,
    with_bias: bool,
    solver: &dyn SpdSolver,
) -> Result<Refit<f32>> {
    let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    let r = least_squares_f64(&w, d_out, stats, kept, pruned, lambda, with_bias, solver)?;
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    Ok(Refit {
        kept: f32s(r.kept),
        bias: r.bias.map(f32s),
    })
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
    error_energy(w, d_out, stats, kept, new_kept, bias)
        / output_energy(w, d_out, stats).max(f64::MIN_POSITIVE)
}

/// `tr(M_S G_SS M_Sᵀ)` for the columns `cols` of `m` (`m(i, j)` = row `i`, input column `j`).
fn energy(
    m: &dyn Fn(usize, usize) -> f64,
    d_out: usize,
    stats: &InputStats,
    cols: &[usize],
) -> f64 {
    let s = cols.len();
    let ms = Mat::from_fn(d_out, s, |i, c| m(i, cols[c]));
    let g = Mat::from_fn(s, s, |a, b| stats.g(cols[a], cols[b]));
    let mg = &ms * &g;
    (0..d_out)
        .map(|i| (0..s).map(|c| mg[(i, c)] * ms[(i, c)]).sum::<f64>())
        .sum()
}

/// `‖W X‖²` summed over the calibration tokens: the denominator of every relative error of this module.
pub fn output_energy(w: &[f32], d_out: usize, stats: &InputStats) -> f64 {
    let all: Vec<usize> = (0..stats.n).collect();
    energy(&|i, j| w[i * stats.n + j] as f64, d_out, stats, &all)
}

/// `‖W X − W' X_K − Δb‖²` summed over the calibration tokens. Only the columns the repair changed enter the
/// Gram product (the removed ones, plus the kept ones for least squares).
pub fn error_energy(
    w: &[f32],
    d_out: usize,
    stats: &InputStats,
    kept: &[usize],
    new_kept: &[f32],
    bias: Option<&[f32]>,
) -> f64 {
    let n = stats.n;
    let mut delta = vec![0.0f64; d_out * n];
    for i in 0..d_out {
        for j in 0..n {
            delta[i * n + j] = w[i * n + j] as f64;
        }
        for (c, &j) in kept.iter().enumerate() {
            delta[i * n + j] -= new_kept[i * kept.len() + c] as f64;
        }
    }
    let support: Vec<usize> = (0..n)
        .filter(|&j| (0..d_out).any(|i| delta[i * n + j] != 0.0))
        .collect();
    let d = |i: usize, j: usize| delta[i * n + j];
    // ‖D x − Δb‖² summed over tokens = tr(D G Dᵀ) − 2 Δbᵀ D s + T ‖Δb‖².
    let bias_terms = bias.map_or(0.0, |b| {
        let ds: f64 = (0..d_out)
            .map(|i| b[i] as f64 * support.iter().map(|&j| d(i, j) * stats.sum[j]).sum::<f64>())
            .sum();
        -2.0 * ds + stats.tokens as f64 * b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
    });
    energy(&d, d_out, stats, &support) + bias_terms
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
