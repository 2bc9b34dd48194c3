//! Compensation (methods.md §4): after input columns `P` of `o_proj` / `down_proj` are removed, refit the kept
//! columns `K` so the layer's output changes as little as possible on the calibration inputs.

pub mod solver;

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use self::solver::Cholesky;
use super::linalg::{like, plus_diagonal};
use super::plan::index;
use super::stats::InputStats;
use crate::error::Result;
use crate::products::product;
use crate::readback::scalar;

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

    /// The repair's name as recipes and flags spell it (`ls`, `ls-bias`, …).
    pub fn name(self) -> String {
        crate::prune::spelled(self)
    }

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

/// What a least-squares refit returns.
#[derive(Debug, Clone)]
pub struct Refit<C: Backend> {
    /// The kept columns after the refit, `[d_out, |K|]`.
    pub kept: Tensor<C, 2>,
    /// The output-bias change `[d_out]` (`ls-bias` only).
    pub bias: Option<Tensor<C, 1>>,
    /// How much of the removed columns' output energy the refit restores:
    /// `‖W_P X_P‖² − ‖W X − W' X_K − Δb‖²` over the calibration tokens (see [`least_squares`]).
    pub restored: f64,
}

/// `G[rows, cols]`.
fn block<C: Backend>(g: &Tensor<C, 2>, rows: &[usize], cols: &[usize]) -> Tensor<C, 2> {
    let device = g.device();
    g.clone()
        .select(0, index::<C>(rows, &device))
        .select(1, index::<C>(cols, &device))
}

/// `w[:, cols]` for `w` `[d_out, n]`.
pub fn columns<C: Backend>(w: &Tensor<C, 2>, cols: &[usize]) -> Tensor<C, 2> {
    w.clone().select(1, index::<C>(cols, &w.device()))
}

/// `v[idx]` for `v` `[n]`.
fn entries<C: Backend>(v: &Tensor<C, 1>, idx: &[usize]) -> Tensor<C, 1> {
    v.clone().select(0, index::<C>(idx, &v.device()))
}

/// Least squares on `w` `[d_out, n]`: `W'[:,K] = W[:,K] + W[:,P] G_PK (G_KK + λI)⁻¹`, the minimiser of
/// `‖WX − W'X_K‖² + λ‖W' − W[:,K]‖²`. With `with_bias` the regression is on `[x_K; 1]` with the augmented Gram
/// `[[G_KK + λI, s_K], [s_Kᵀ, T]]` (the intercept is not penalised) and also returns `Δb`.
///
/// The error left follows from the solve: with the update `Y = [W'_K − W_K, Δb]ᵀ` and the right-hand side
/// `M = [G_KP; s_Pᵀ] W_Pᵀ`, the normal equations `A Y = M` turn `‖W_P X_P − Y₁ᵀ X_K − Δb‖²` into
/// `‖W_P X_P‖² − ⟨M, Y⟩ − λ‖Y₁‖²`, so [`Refit::restored`] is `⟨M, Y⟩ + λ‖Y₁‖²` — `|K| + 1` by `d_out` products
/// instead of a `d_out × n²` one.
pub async fn least_squares<C: Backend>(
    w: &Tensor<C, 2>,
    stats: &InputStats<C>,
    kept: &[usize],
    pruned: &[usize],
    lambda: f64,
    with_bias: bool,
) -> Result<Refit<C>> {
    let (d_out, k) = (w.dims()[0], kept.len());
    let w_k = columns(w, kept);
    if pruned.is_empty() {
        return Ok(Refit {
            kept: w_k,
            bias: with_bias.then(|| Tensor::zeros([d_out], like(w))),
            restored: 0.0,
        });
    }
    // Unknowns: k weights (+ the intercept). A = G_KK + λI (bordered by s_K and T); B = [G_KP; s_Pᵀ] W_Pᵀ.
    let g_kk = plus_diagonal(block(&stats.gram, kept, kept), lambda);
    let g_kp = block(&stats.gram, kept, pruned);
    let (a, g_rp) = match with_bias {
        false => (g_kk, g_kp),
        true => {
            let s_k = entries(&stats.sum, kept).reshape([k, 1]);
            let t = Tensor::<C, 2>::ones([1, 1], like(w)).mul_scalar(stats.tokens as f64);
            let a = Tensor::cat(
                vec![
                    Tensor::cat(vec![g_kk, s_k.clone()], 1),
                    Tensor::cat(vec![s_k.transpose(), t], 1),
                ],
                0,
            );
            let s_p = entries(&stats.sum, pruned).reshape([1, pruned.len()]);
            (a, Tensor::cat(vec![g_kp, s_p], 0))
        }
    };
    // Y = A⁻¹ [G_KP; s_Pᵀ] W_Pᵀ ([m, d_out]); W'_K = W_K + Y[:k]ᵀ, Δb = Y[k]. The solve takes whichever
    // right-hand side is narrower: |P| columns, multiplied by W_Pᵀ after, or d_out columns.
    let (chol, w_pt) = (Cholesky::factor(a).await?, columns(w, pruned).transpose());
    let (y, m) = match pruned.len() < d_out {
        true => (
            product(chol.solve(g_rp.clone()), w_pt.clone()),
            product(g_rp, w_pt),
        ),
        false => {
            let m = product(g_rp, w_pt);
            (chol.solve(m.clone()), m)
        }
    };
    let update = y.clone().slice([0..k, 0..d_out]);
    let restored = (m * y.clone()).sum() + update.clone().square().sum().mul_scalar(lambda);
    Ok(Refit {
        kept: w_k + update.transpose(),
        bias: with_bias.then(|| y.slice([k..k + 1, 0..d_out]).reshape([d_out])),
        restored: scalar(restored).await?,
    })
}

/// `tr(M G Mᵀ)` for `M` `[d_out, s]` and `G` `[s, s]`. A plain matmul: these only report errors, and splitting
/// an 11008² Gram block for CUDA's TF32 would cost two more copies of it (TF32 leaves them ≈ 1e-3 relative).
fn energy<C: Backend>(m: Tensor<C, 2>, g: Tensor<C, 2>) -> Tensor<C, 1> {
    (m.clone().matmul(g) * m).sum()
}

/// `‖W X‖²` summed over the calibration tokens: the denominator of every relative error of this module.
pub async fn output_energy<C: Backend>(w: &Tensor<C, 2>, stats: &InputStats<C>) -> Result<f64> {
    scalar(energy(w.clone(), stats.gram.clone())).await
}

/// `‖W X − W' X_K − Δb‖²` summed over the calibration tokens, with `D = [W_K − W'_K, W_P]` on the columns
/// `S = K ∪ P`: `tr(D G_SS Dᵀ) − 2 Δbᵀ D s_S + T ‖Δb‖²`. When the kept columns are unchanged (`new_kept` is
/// `None`) only the removed ones enter: `D = W_P`, `S = P`.
pub async fn error_energy<C: Backend>(
    w: &Tensor<C, 2>,
    stats: &InputStats<C>,
    kept: &[usize],
    new_kept: Option<&Tensor<C, 2>>,
    bias: Option<&Tensor<C, 1>>,
) -> Result<f64> {
    let pruned: Vec<usize> = (0..stats.n()).filter(|j| !kept.contains(j)).collect();
    let (mut parts, mut support) = (vec![], vec![]);
    if let Some(new) = new_kept {
        parts.push(columns(w, kept) - new.clone());
        support.extend_from_slice(kept);
    }
    if !pruned.is_empty() {
        parts.push(columns(w, &pruned));
        support.extend_from_slice(&pruned);
    }
    if support.is_empty() {
        return Ok(0.0);
    }
    let d = Tensor::cat(parts, 1);
    let mut total = energy(d.clone(), block(&stats.gram, &support, &support));
    if let Some(b) = bias {
        let d_out = b.dims()[0];
        let ds = d.matmul(entries(&stats.sum, &support).reshape([support.len(), 1]));
        let cross = (b.clone().reshape([d_out, 1]) * ds).sum().mul_scalar(-2.0);
        let own = b.clone().square().sum().mul_scalar(stats.tokens as f64);
        total = total + cross + own;
    }
    scalar(total).await
}

/// FLAP's bias update `Δb = W[:,P] μ_P` (`[d_out]`) for `w` `[d_out, n]`.
pub fn bias_update<C: Backend>(
    w: &Tensor<C, 2>,
    stats: &InputStats<C>,
    pruned: &[usize],
) -> Tensor<C, 1> {
    let d_out = w.dims()[0];
    if pruned.is_empty() {
        return Tensor::zeros([d_out], like(w));
    }
    let mean = entries(&stats.mean(), pruned).reshape([pruned.len(), 1]);
    product(columns(w, pruned), mean).reshape([d_out])
}
