//! Compensation identities on random data (f64): least squares equals the closed form of "Numerical Pruning"
//! Theorem 3, it minimises the (ridge) reconstruction objective, and the reconstruction error the report gives
//! equals the error measured on the inputs themselves; least squares with a bias minimises the same objective
//! with an intercept; the `numerical` score ranks columns as `A⁻¹1` does. All of it runs through the same
//! tensor code the pipeline uses, in f64 on the host backend; the blocked Cholesky is checked against faer's,
//! and the f32 arithmetic a GPU uses against the f64 one.

use burn::tensor::{DType, Tensor};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use pollster::block_on;
use prunelab::products::F32Matmul;
use prunelab::prune::compensate::solver::Cholesky;
use prunelab::prune::compensate::{bias_update, error_energy, least_squares, output_energy, Refit};
use prunelab::prune::importance::activation::column_scores;
use prunelab::prune::linalg::{host, Host};
use prunelab::prune::stats::InputStats;
use prunelab::readback::to_vec_f64;
use rand::{Rng, SeedableRng};

/// A random problem: inputs `X [n, t]` with correlated channels, their Gram matrix and statistics (f64 on the
/// host), and a weight `W [d_out, n]` row-major.
struct Problem {
    x: Mat<f64>,
    g: Mat<f64>,
    stats: InputStats<Host>,
    w: Vec<f64>,
    d_out: usize,
}

impl Problem {
    fn new(n: usize, t: usize, d_out: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mix = Mat::<f64>::from_fn(n, n, |_, _| rng.random::<f64>() - 0.5);
        let z = Mat::<f64>::from_fn(n, t, |_, _| rng.random::<f64>() * 2.0 - 1.0);
        let x = &mix * &z + Mat::<f64>::from_fn(n, t, |i, _| 0.1 * i as f64);
        let tokens: Vec<f64> = (0..t * n).map(|k| x[(k % n, k / n)]).collect();
        let stats = InputStats::of(host(tokens, [t, n]));
        let w = (0..d_out * n).map(|_| rng.random::<f64>() - 0.5).collect();
        Self {
            g: &x * x.transpose(),
            x,
            stats,
            w,
            d_out,
        }
    }

    fn n(&self) -> usize {
        self.x.nrows()
    }

    /// `W` as a host tensor `[d_out, n]`.
    fn weight(&self) -> Tensor<Host, 2> {
        host(self.w.clone(), [self.d_out, self.n()])
    }

    fn ridge(&self) -> f64 {
        block_on(self.stats.ridge(0.01)).unwrap()
    }

    /// Least squares keeping `kept`: the new kept columns `[d_out, |K|]` row-major and `Δb`.
    fn refit(
        &self,
        kept: &[usize],
        pruned: &[usize],
        lambda: f64,
        bias: bool,
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let w = self.weight();
        let Refit { kept, bias, .. } =
            block_on(least_squares(&w, &self.stats, kept, pruned, lambda, bias)).unwrap();
        (values(kept), bias.map(values))
    }

    /// The report's relative error of replacing the kept columns by `new` (and adding `bias`).
    fn reported_error(&self, kept: &[usize], new: &[f64], bias: Option<&[f64]>) -> f64 {
        let new = host(new.to_vec(), [self.d_out, kept.len()]);
        let bias = bias.map(|b| host(b.to_vec(), [self.d_out]));
        let w = self.weight();
        relative_error(&w, &self.stats, kept, Some(&new), bias.as_ref())
    }
}

/// `‖W X − W' X_K − Δb‖² / ‖W X‖²` as the pipeline reports it: the two energies through the Gram matrix.
fn relative_error<C: burn::tensor::backend::Backend>(
    w: &Tensor<C, 2>,
    stats: &InputStats<C>,
    kept: &[usize],
    new_kept: Option<&Tensor<C, 2>>,
    bias: Option<&Tensor<C, 1>>,
) -> f64 {
    let error = block_on(error_energy(w, stats, kept, new_kept, bias)).unwrap();
    error / block_on(output_energy(w, stats)).unwrap()
}

fn values<const D: usize>(t: Tensor<Host, D>) -> Vec<f64> {
    block_on(to_vec_f64(t)).unwrap()
}

fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let pruned: Vec<usize> = (0..n).filter(|j| j % 3 == 1).collect();
    ((0..n).filter(|j| !pruned.contains(j)).collect(), pruned)
}

/// With fewer outputs than removed columns (the solve takes `d_out` right-hand sides) and more (it takes `|P|`).
#[test]
fn least_squares_equals_theorem_3() {
    for (n, d_out) in [(24, 7), (24, 12)] {
        theorem_3(n, 200, d_out);
    }
}

fn theorem_3(n: usize, t: usize, d_out: usize) {
    let p = Problem::new(n, t, d_out, 1);
    let (g, w) = (&p.g, &p.w);
    let (kept, pruned) = split(n);
    for lambda in [0.0, p.ridge()] {
        let ours = p.refit(&kept, &pruned, lambda, false).0;
        // Paper layout: W_paper = Wᵀ [n, d_out]; δW = −(2Ĝ)⁻¹ M_p (M_pᵀ (2Ĝ)⁻¹ M_p)⁻¹ M_pᵀ W_paper, Ĝ = G + λI.
        let g2 = Mat::<f64>::from_fn(n, n, |i, j| {
            2.0 * (g[(i, j)] + if i == j { lambda } else { 0.0 })
        });
        let g2_inv = g2.llt(Side::Lower).unwrap().inverse();
        let mp = Mat::<f64>::from_fn(
            n,
            pruned.len(),
            |i, j| if pruned[j] == i { 1.0 } else { 0.0 },
        );
        let wp = Mat::<f64>::from_fn(n, d_out, |i, j| w[j * n + i]);
        let inner = (mp.transpose() * &g2_inv * &mp)
            .llt(Side::Lower)
            .unwrap()
            .inverse();
        let delta = -(&g2_inv * &mp * inner * mp.transpose() * &wp);
        let updated = &wp + &delta;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (c, &j) in kept.iter().enumerate() {
            for o in 0..d_out {
                num += (ours[o * kept.len() + c] - updated[(j, o)]).powi(2);
                den += updated[(j, o)].powi(2);
            }
        }
        let rel = (num / den).sqrt();
        assert!(
            rel < 1e-8,
            "d_out {d_out}, λ = {lambda}: least squares differs from Theorem 3 by {rel:e}"
        );
        let zeroed: f64 = pruned
            .iter()
            .flat_map(|&j| (0..d_out).map(move |o| (j, o)))
            .map(|(j, o)| updated[(j, o)].abs())
            .fold(0.0, f64::max);
        assert!(zeroed < 1e-9, "Theorem 3 zeroes the pruned rows");
    }
}

/// `‖WX − W'X_K‖² + λ‖W' − W_K‖²` for `W'` `[d_out, |K|]`.
fn objective(
    x: &Mat<f64>,
    w: &[f64],
    d_out: usize,
    kept: &[usize],
    new: &[f64],
    lambda: f64,
) -> f64 {
    let (n, t) = (x.nrows(), x.ncols());
    let mut total = 0.0;
    for o in 0..d_out {
        for s in 0..t {
            let full: f64 = (0..n).map(|j| w[o * n + j] * x[(j, s)]).sum();
            let part: f64 = kept
                .iter()
                .enumerate()
                .map(|(c, &j)| new[o * kept.len() + c] * x[(j, s)])
                .sum();
            total += (full - part).powi(2);
        }
        total += lambda
            * kept
                .iter()
                .enumerate()
                .map(|(c, &j)| (new[o * kept.len() + c] - w[o * n + j]).powi(2))
                .sum::<f64>();
    }
    total
}

#[test]
fn least_squares_minimises_the_reconstruction_error() {
    let (n, t, d_out) = (16, 120, 5);
    let p = Problem::new(n, t, d_out, 2);
    let (x, w) = (&p.x, &p.w);
    let (kept, pruned) = split(n);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for lambda in [0.0, p.ridge()] {
        let best = p.refit(&kept, &pruned, lambda, false).0;
        let at_best = objective(x, w, d_out, &kept, &best, lambda);
        let plain: Vec<f64> = (0..d_out)
            .flat_map(|o| kept.iter().map(move |&j| (o, j)))
            .map(|(o, j)| w[o * n + j])
            .collect();
        assert!(
            at_best < objective(x, w, d_out, &kept, &plain, lambda),
            "the refit beats dropping the columns"
        );
        for _ in 0..200 {
            let scale = 10f64.powi(rng.random_range(-6..0));
            let moved: Vec<f64> = best
                .iter()
                .map(|v| v + scale * (rng.random::<f64>() - 0.5))
                .collect();
            let at_moved = objective(x, w, d_out, &kept, &moved, lambda);
            assert!(
                at_moved >= at_best * (1.0 - 1e-12),
                "a perturbation lowered the objective: {at_moved} < {at_best}"
            );
        }
    }
}

#[test]
fn reported_reconstruction_error_matches_the_inputs() {
    let (n, t, d_out) = (12, 90, 4);
    let p = Problem::new(n, t, d_out, 4);
    let (x, w) = (&p.x, &p.w);
    let (kept, pruned) = split(n);
    let new = p.refit(&kept, &pruned, 0.0, false).0;
    let direct = objective(x, w, d_out, &kept, &new, 0.0) / objective(x, w, d_out, &[], &[], 0.0);
    let via_gram = p.reported_error(&kept, &new, None);
    assert!(
        (via_gram - direct).abs() / direct < 1e-10,
        "{via_gram} vs {direct}"
    );
}

/// After a least-squares refit the report takes the error left from the solve itself (`‖W_P X_P‖² − ⟨M, Y⟩ −
/// λ‖Y₁‖²`): it equals the error of the refit weights through the Gram matrix, with and without the
/// intercept, with fewer outputs than removed columns and with more.
#[test]
fn error_left_by_a_refit_follows_from_the_solve() {
    for (d_out, with_bias) in [(3, false), (9, false), (3, true), (9, true)] {
        let p = Problem::new(15, 120, d_out, 11);
        let (kept, pruned) = split(15);
        let w = p.weight();
        let refit = block_on(least_squares(
            &w,
            &p.stats,
            &kept,
            &pruned,
            p.ridge(),
            with_bias,
        ))
        .unwrap();
        let removed = block_on(error_energy(&w, &p.stats, &kept, None, None)).unwrap();
        let left = block_on(error_energy(
            &w,
            &p.stats,
            &kept,
            Some(&refit.kept),
            refit.bias.as_ref(),
        ))
        .unwrap();
        let from_solve = removed - refit.restored;
        assert!(
            (from_solve - left).abs() < 1e-10 * removed,
            "d_out {d_out}, bias {with_bias}: {from_solve} vs {left}"
        );
        assert!(
            left < 0.9 * removed,
            "the refit restores little: {left} of {removed}"
        );
    }
}

#[test]
fn bias_compensation_is_the_mean_contribution_of_removed_columns() {
    let (n, t, d_out) = (10, 80, 3);
    let p = Problem::new(n, t, d_out, 5);
    let (x, w) = (&p.x, &p.w);
    let (kept, pruned) = split(n);
    let delta = values(bias_update(&p.weight(), &p.stats, &pruned));
    for (o, d) in delta.iter().enumerate() {
        // W[:,P] · μ_P, with μ measured on the inputs directly.
        let direct: f64 = pruned
            .iter()
            .map(|&j| w[o * n + j] * (0..t).map(|s| x[(j, s)]).sum::<f64>() / t as f64)
            .sum();
        assert!(
            (d - direct).abs() < 1e-12 * direct.abs().max(1.0),
            "{d} vs {direct}"
        );
    }
    // The reported error with the bias equals the one measured on the inputs, and the bias helps.
    let plain: Vec<f64> = (0..d_out)
        .flat_map(|o| kept.iter().map(move |&j| (o, j)))
        .map(|(o, j)| w[o * n + j])
        .collect();
    let mut direct = 0.0;
    for o in 0..d_out {
        for s in 0..t {
            let removed: f64 = pruned.iter().map(|&j| w[o * n + j] * x[(j, s)]).sum();
            direct += (removed - delta[o]).powi(2);
        }
    }
    let total = objective(x, w, d_out, &[], &[], 0.0);
    let via_gram = p.reported_error(&kept, &plain, Some(&delta));
    assert!(
        (via_gram - direct / total).abs() < 1e-10 * (direct / total),
        "{via_gram} vs {}",
        direct / total
    );
    assert!(via_gram < p.reported_error(&kept, &plain, None));
    // Unchanged kept columns may be left out of the product: the same number.
    let delta_t = host(delta.clone(), [d_out]);
    let w_t = p.weight();
    let short = relative_error(&w_t, &p.stats, &kept, None, Some(&delta_t));
    assert!(
        (short - via_gram).abs() < 1e-12 * via_gram,
        "{short} vs {via_gram}"
    );
}

#[test]
fn least_squares_with_bias_minimises_the_error_with_an_intercept() {
    let (n, t, d_out) = (14, 150, 4);
    let p = Problem::new(n, t, d_out, 6);
    let (x, w) = (&p.x, &p.w);
    let (kept, pruned) = split(n);
    let k = kept.len();
    // ‖WX − W'X_K − b1ᵀ‖² + λ‖W' − W_K‖² (the intercept is not penalised).
    let objective_b = |new: &[f64], b: &[f64], lambda: f64| {
        let mut total = 0.0;
        for o in 0..d_out {
            for s in 0..t {
                let full: f64 = (0..n).map(|j| w[o * n + j] * x[(j, s)]).sum();
                let part: f64 = (0..k).map(|c| new[o * k + c] * x[(kept[c], s)]).sum();
                total += (full - part - b[o]).powi(2);
            }
            total += lambda
                * (0..k)
                    .map(|c| (new[o * k + c] - w[o * n + kept[c]]).powi(2))
                    .sum::<f64>();
        }
        total
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for lambda in [0.0, p.ridge()] {
        let (fit, bias) = p.refit(&kept, &pruned, lambda, true);
        let bias = bias.expect("ls-bias returns a bias");
        let at_best = objective_b(&fit, &bias, lambda);
        let plain_ls = p.refit(&kept, &pruned, lambda, false).0;
        let without = objective_b(&plain_ls, &vec![0.0; d_out], lambda);
        assert!(
            at_best < without,
            "the intercept lowers the error: {at_best} vs {without}"
        );
        for _ in 0..200 {
            let scale = 10f64.powi(rng.random_range(-6..0));
            let mut jitter = |v: &[f64]| -> Vec<f64> {
                v.iter()
                    .map(|x| x + scale * (rng.random::<f64>() - 0.5))
                    .collect()
            };
            let (moved, moved_b) = (jitter(&fit), jitter(&bias));
            let at_moved = objective_b(&moved, &moved_b, lambda);
            assert!(
                at_moved >= at_best * (1.0 - 1e-12),
                "a perturbation lowered the objective: {at_moved} < {at_best}"
            );
        }
        // The report's error (through the Gram matrix) equals the one on the inputs.
        let via_gram = p.reported_error(&kept, &fit, Some(&bias));
        let direct = (at_best
            - lambda
                * (0..d_out)
                    .map(|o| {
                        (0..k)
                            .map(|c| (fit[o * k + c] - w[o * n + kept[c]]).powi(2))
                            .sum::<f64>()
                    })
                    .sum::<f64>())
            / objective(x, w, d_out, &[], &[], 0.0);
        assert!(
            (via_gram - direct).abs() < 1e-9 * direct,
            "{via_gram} vs {direct}"
        );
    }
}

#[test]
fn numerical_ranking_equals_that_of_a_inverse_ones() {
    use prunelab::prune::importance::activation::NUMERICAL_DAMPING;
    use prunelab::prune::Importance;
    let (n, t, d_out) = (20, 160, 6);
    let p = Problem::new(n, t, d_out, 8);
    let (x, w) = (&p.x, &p.w);
    let scores = block_on(column_scores(
        Importance::Numerical,
        &p.weight(),
        &p.stats,
        0.0,
    ))
    .unwrap();
    // A = (WᵀW) ∘ (X Xᵀ) from the inputs themselves, solved by LU.
    let wm = Mat::<f64>::from_fn(d_out, n, |i, j| w[i * n + j]);
    let (wtw, g) = (wm.transpose() * &wm, x * x.transpose());
    let mut a = Mat::<f64>::from_fn(n, n, |i, j| wtw[(i, j)] * g[(i, j)]);
    let damping = NUMERICAL_DAMPING * (0..n).map(|j| a[(j, j)]).sum::<f64>() / n as f64;
    (0..n).for_each(|j| a[(j, j)] += damping);
    use faer::linalg::solvers::Solve;
    let u = a
        .partial_piv_lu()
        .solve(Mat::<f64>::from_fn(n, 1, |_, _| 1.0));
    // Larger u = pruned first; a lower score = pruned first.
    let mut by_u: Vec<usize> = (0..n).collect();
    by_u.sort_by(|&i, &j| u[(j, 0)].total_cmp(&u[(i, 0)]));
    let by_score = prunelab::prune::allocate::lowest_order(&scores);
    assert_eq!(by_score, by_u, "pruning order");
    for j in 0..n {
        assert!(
            (scores[j] + u[(j, 0)]).abs() < 1e-9 * u[(j, 0)].abs().max(1e-12),
            "u[{j}]"
        );
    }
    // Not a trivial order: u is not a function of the diagonal alone here.
    let mut by_diag: Vec<usize> = (0..n).collect();
    by_diag.sort_by(|&i, &j| a[(i, i)].total_cmp(&a[(j, j)]));
    assert_ne!(by_u, by_diag);
}

#[test]
fn blocked_cholesky_equals_faer() {
    let (n, m) = (50, 3);
    let p = Problem::new(n, 400, 1, 9);
    let a = p.stats.damped(p.ridge());
    let mut am = p.g.clone();
    (0..n).for_each(|j| am[(j, j)] += p.ridge());
    let llt = am.llt(Side::Lower).unwrap();
    let (inv, b) = (
        llt.inverse(),
        Mat::<f64>::from_fn(n, m, |i, j| (i * m + j) as f64 - 70.0),
    );
    let x = &inv * &b;
    let b_host = host((0..n * m).map(|k| b[(k / m, k % m)]).collect(), [n, m]);
    let rel = |got: &[f64], want: &dyn Fn(usize) -> f64| {
        let num: f64 = (0..got.len()).map(|k| (got[k] - want(k)).powi(2)).sum();
        (num / (0..got.len()).map(|k| want(k).powi(2)).sum::<f64>()).sqrt()
    };
    // One block (the whole matrix on the host), uneven blocks, blocks of one row; in f64, in f32 as on a
    // backend without f64 (WebGPU), where this matrix's condition number costs digits, and in f32 with the
    // split products a TF32 matmul gets (CUDA; TF32 emulated).
    for (work, matmul, tol) in [
        (DType::F64, F32Matmul::Exact, 1e-12),
        (DType::F32, F32Matmul::Exact, 2e-4),
        (DType::F32, F32Matmul::Tf32Emulated, 2e-4),
    ] {
        for block in [64, 7, 1] {
            let chol = block_on(Cholesky::factor_with(a.clone(), block, work, matmul)).unwrap();
            let ours = values(chol.solve(b_host.clone()));
            let err = rel(&ours, &|k| x[(k / m, k % m)]);
            eprintln!("{work:?} {matmul:?} block {block}: solve {err:e}");
            assert!(
                err < tol,
                "{work:?} block {block}: solve differs by {err:e}"
            );
            let diag = values(chol.inverse_diagonal(&a));
            let err = rel(&diag, &|i| inv[(i, i)]);
            assert!(
                err < tol,
                "{work:?} block {block}: diag(A⁻¹) differs by {err:e}"
            );
        }
    }
    // Not positive definite: the error names the matrix and the row where it fails.
    let bad = prunelab::prune::linalg::plus_diagonal(a.clone(), -1e9);
    let err = block_on(Cholesky::factor_with(bad, 7, DType::F64, F32Matmul::Exact))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not positive definite near row 0"), "{err}");
    // A NaN (from NaN weights or activations) is named as such, in the block row that holds it.
    let nan = prunelab::prune::linalg::plus_diagonal(a.clone(), f64::NAN);
    let err = block_on(Cholesky::factor_with(nan, 7, DType::F64, F32Matmul::Exact))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("holds NaN at row 0 (non-finite statistics: check the weights and the ridge)"),
        "{err}"
    );
}

/// What `--linalg device` computes on a GPU (f32 statistics, weights, scores and errors; the solves in f64)
/// against the exact f64 host arithmetic: the refit and the errors the report gives agree to f32 accuracy, the
/// scores rank the columns alike.
#[test]
fn f32_device_arithmetic_agrees_with_f64() {
    use prunelab::backend::Cpu;

    use prunelab::prune::Importance;
    let (n, t, d_out) = (300, 2000, 40);
    let p = Problem::new(n, t, d_out, 10);
    let (kept, pruned) = split(n);
    let device = Default::default();
    let f32s = |v: &[f64], shape: [usize; 2]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::<Cpu, 2>::from_data(burn::tensor::TensorData::new(v, shape), &device)
    };
    let tokens: Vec<f64> = (0..t * n).map(|k| p.x[(k % n, k / n)]).collect();
    let stats32 = InputStats::of(f32s(&tokens, [t, n]));
    let w32 = f32s(&p.w, [d_out, n]);
    let lambda = p.ridge();
    let exact = p.refit(&kept, &pruned, lambda, true);
    let fit = block_on(least_squares(&w32, &stats32, &kept, &pruned, lambda, true)).unwrap();
    let rel = |a: &[f64], b: &[f64]| {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        (num / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
    };
    // The inputs' channel means (up to 30) make G ill-conditioned: f32 weights agree to ~1e-4, and the error
    // they achieve, measured exactly, is the exact refit's to 1e-5 (not lower: that refit minimises the error
    // plus the ridge term).
    let kept32 = block_on(to_vec_f64(fit.kept.clone())).unwrap();
    let bias32 = block_on(to_vec_f64(fit.bias.clone().unwrap())).unwrap();
    assert!(
        rel(&kept32, &exact.0) < 1e-3,
        "{:e}",
        rel(&kept32, &exact.0)
    );
    let err64 = p.reported_error(&kept, &exact.0, exact.1.as_deref());
    let achieved = p.reported_error(&kept, &kept32, Some(&bias32));
    assert!(
        (achieved - err64).abs() < 1e-5 * err64,
        "{achieved} vs {err64}"
    );
    let err32 = relative_error(&w32, &stats32, &kept, Some(&fit.kept), fit.bias.as_ref());
    assert!((err32 - err64).abs() < 1e-3 * err64, "{err32} vs {err64}");
    for kind in [Importance::Obs, Importance::Numerical, Importance::Flap] {
        let s64 = block_on(column_scores(kind, &p.weight(), &p.stats, lambda)).unwrap();
        let s32 = block_on(column_scores(kind, &w32, &stats32, lambda)).unwrap();
        assert!(rel(&s32, &s64) < 1e-3, "{kind:?}: {:e}", rel(&s32, &s64));
    }
}

/// The Gram matrix of many activation-like tokens (channel means, log-normal scales, a few outlier channels),
/// accumulated in f32 on the CPU and wgpu backends, against the exact f64 sum: each entry within 1e-6 of its
/// natural scale `sqrt(G_ii G_jj)` (measured 2.3e-7 and 6.0e-7; one product over all 32768 tokens put wgpu's
/// 1.0e-5 off: its matmul sums one term after another, hence the chunks).
#[test]
fn the_gram_matrix_of_many_tokens_keeps_f32_accuracy() {
    let (n, t) = (256, 32768);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let normal = |rng: &mut rand::rngs::StdRng| {
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mean: Vec<f64> = (0..n).map(|_| 0.5 * normal(&mut rng)).collect();
    let scale: Vec<f64> = (0..n)
        .map(|j| normal(&mut rng).exp() * if j % 64 == 5 { 20.0 } else { 1.0 })
        .collect();
    let x: Vec<f32> = (0..t * n)
        .map(|k| (mean[k % n] + scale[k % n] * normal(&mut rng)) as f32)
        .collect();
    let mut g = vec![0f64; n * n];
    for row in x.chunks_exact(n) {
        for i in 0..n {
            let xi = row[i] as f64;
            for j in 0..n {
                g[i * n + j] += xi * row[j] as f64;
            }
        }
    }
    let worst_of = |g32: Vec<f64>| {
        (0..n * n)
            .map(|k| (g32[k] - g[k]).abs() / (g[k / n * (n + 1)] * g[k % n * (n + 1)]).sqrt())
            .fold(0f64, f64::max)
    };
    for (name, worst) in [
        ("cpu", worst_of(gram_of::<prunelab::backend::Cpu>(&x, n))),
        ("wgpu", worst_of(gram_of::<prunelab::backend::Wgpu>(&x, n))),
    ] {
        eprintln!("{name}: Gram of {t} tokens: worst entry off by {worst:e} of sqrt(G_ii G_jj)");
        assert!(worst < 1e-6, "{name}: {worst:e}");
    }
}

/// `G` of the rows of `x` (`[tokens, n]` row-major) as [`InputStats::of`] computes it on backend `B`.
fn gram_of<B: burn::tensor::backend::Backend>(x: &[f32], n: usize) -> Vec<f64> {
    let data = burn::tensor::TensorData::new(x.to_vec(), [x.len() / n, n]);
    let x = Tensor::<B, 2>::from_data(data, &Default::default());
    block_on(to_vec_f64(InputStats::of(x).gram)).unwrap()
}
