//! Compensation identities on random data (f64): least squares equals the closed form of "Numerical Pruning"
//! Theorem 3, it minimises the (ridge) reconstruction objective, and the reconstruction error the report gives
//! equals the error measured on the inputs themselves; least squares with a bias minimises the same objective
//! with an intercept; the `numerical` score ranks columns as `A⁻¹1` does.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use prunelab::prune::compensate::solver::{Cholesky, SpdSolver};
use prunelab::prune::compensate::{least_squares_f64, relative_error};
use prunelab::prune::stats::InputStats;
use rand::{Rng, SeedableRng};

/// Random inputs `X [n, t]` with correlated channels, their statistics, and a weight `W [d_out, n]`.
fn problem(n: usize, t: usize, d_out: usize, seed: u64) -> (Mat<f64>, InputStats, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mix = Mat::<f64>::from_fn(n, n, |_, _| rng.random::<f64>() - 0.5);
    let z = Mat::<f64>::from_fn(n, t, |_, _| rng.random::<f64>() * 2.0 - 1.0);
    let x = &mix * &z + Mat::<f64>::from_fn(n, t, |i, _| 0.1 * i as f64);
    let g = &x * x.transpose();
    let mut stats = InputStats::new(n);
    stats.gram = (0..n * n).map(|k| g[(k / n, k % n)]).collect();
    stats.sum = (0..n).map(|i| (0..t).map(|j| x[(i, j)]).sum()).collect();
    stats.tokens = t;
    let w = (0..d_out * n).map(|_| rng.random::<f64>() - 0.5).collect();
    (x, stats, w)
}

fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let pruned: Vec<usize> = (0..n).filter(|j| j % 3 == 1).collect();
    ((0..n).filter(|j| !pruned.contains(j)).collect(), pruned)
}

#[test]
fn least_squares_equals_theorem_3() {
    let (n, t, d_out) = (24, 200, 7);
    let (_, stats, w) = problem(n, t, d_out, 1);
    let (kept, pruned) = split(n);
    for lambda in [0.0, stats.ridge(0.01)] {
        let ours = least_squares_f64(&w, d_out, &stats, &kept, &pruned, lambda, false, &Cholesky)
            .unwrap()
            .kept;
        // Paper layout: W_paper = Wᵀ [n, d_out]; δW = −(2Ĝ)⁻¹ M_p (M_pᵀ (2Ĝ)⁻¹ M_p)⁻¹ M_pᵀ W_paper, Ĝ = G + λI.
        let g2 = Mat::<f64>::from_fn(n, n, |i, j| {
            2.0 * (stats.g(i, j) + if i == j { lambda } else { 0.0 })
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
            "λ = {lambda}: least squares differs from Theorem 3 by {rel:e}"
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
    let (x, stats, w) = problem(n, t, d_out, 2);
    let (kept, pruned) = split(n);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for lambda in [0.0, stats.ridge(0.01)] {
        let best = least_squares_f64(&w, d_out, &stats, &kept, &pruned, lambda, false, &Cholesky)
            .unwrap()
            .kept;
        let at_best = objective(&x, &w, d_out, &kept, &best, lambda);
        let plain: Vec<f64> = (0..d_out)
            .flat_map(|o| kept.iter().map(move |&j| (o, j)))
            .map(|(o, j)| w[o * n + j])
            .collect();
        assert!(
            at_best < objective(&x, &w, d_out, &kept, &plain, lambda),
            "the refit beats dropping the columns"
        );
        for _ in 0..200 {
            let scale = 10f64.powi(rng.random_range(-6..0));
            let moved: Vec<f64> = best
                .iter()
                .map(|v| v + scale * (rng.random::<f64>() - 0.5))
                .collect();
            let at_moved = objective(&x, &w, d_out, &kept, &moved, lambda);
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
    let (x, stats, w) = problem(n, t, d_out, 4);
    let (kept, pruned) = split(n);
    let new = least_squares_f64(&w, d_out, &stats, &kept, &pruned, 0.0, false, &Cholesky)
        .unwrap()
        .kept;
    let new32: Vec<f32> = new.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let direct =
        objective(&x, &w, d_out, &kept, &new, 0.0) / objective(&x, &w, d_out, &[], &[], 0.0);
    let via_gram = relative_error(&w32, d_out, &stats, &kept, &new32);
    assert!(
        (via_gram - direct).abs() / direct < 1e-4,
        "{via_gram} vs {direct}"
    );
    let spd = Cholesky.inverse_diagonal(&stats.gram, n).unwrap();
    let g = Mat::<f64>::from_fn(n, n, |i, j| stats.g(i, j))
        .llt(Side::Lower)
        .unwrap()
        .inverse();
    assert!(
        (0..n).all(|i| (spd[i] - g[(i, i)]).abs() / g[(i, i)] < 1e-10),
        "inverse diagonal"
    );
}

#[test]
fn bias_compensation_is_the_mean_contribution_of_removed_columns() {
    use prunelab::prune::compensate::{bias_update, relative_error_with_bias};
    let (n, t, d_out) = (10, 80, 3);
    let (x, stats, w) = problem(n, t, d_out, 5);
    let (kept, pruned) = split(n);
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let delta = bias_update(&w32, d_out, &stats, &pruned);
    for (o, d) in delta.iter().enumerate() {
        // W[:,P] · μ_P, with μ measured on the inputs directly.
        let direct: f64 = pruned
            .iter()
            .map(|&j| w[o * n + j] * (0..t).map(|s| x[(j, s)]).sum::<f64>() / t as f64)
            .sum();
        assert!(
            (*d as f64 - direct).abs() < 1e-5 * direct.abs().max(1.0),
            "{d} vs {direct}"
        );
    }
    // The reported error with the bias equals the one measured on the inputs, and the bias helps.
    let plain: Vec<f32> = (0..d_out)
        .flat_map(|o| kept.iter().map(move |&j| (o, j)))
        .map(|(o, j)| w32[o * n + j])
        .collect();
    let mut direct = 0.0;
    for o in 0..d_out {
        for s in 0..t {
            let removed: f64 = pruned.iter().map(|&j| w[o * n + j] * x[(j, s)]).sum();
            direct += (removed - delta[o] as f64).powi(2);
        }
    }
    let total = objective(&x, &w, d_out, &[], &[], 0.0);
    let via_gram = relative_error_with_bias(&w32, d_out, &stats, &kept, &plain, Some(&delta));
    assert!(
        (via_gram - direct / total).abs() < 1e-4 * (direct / total),
        "{via_gram} vs {}",
        direct / total
    );
    assert!(
        via_gram < prunelab::prune::compensate::relative_error(&w32, d_out, &stats, &kept, &plain)
    );
}

#[test]
fn least_squares_with_bias_minimises_the_error_with_an_intercept() {
    let (n, t, d_out) = (14, 150, 4);
    let (x, stats, w) = problem(n, t, d_out, 6);
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
    for lambda in [0.0, stats.ridge(0.01)] {
        let fit =
            least_squares_f64(&w, d_out, &stats, &kept, &pruned, lambda, true, &Cholesky).unwrap();
        let bias = fit.bias.clone().expect("ls-bias returns a bias");
        let at_best = objective_b(&fit.kept, &bias, lambda);
        let plain_ls =
            least_squares_f64(&w, d_out, &stats, &kept, &pruned, lambda, false, &Cholesky)
                .unwrap()
                .kept;
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
            let (moved, moved_b) = (jitter(&fit.kept), jitter(&bias));
            let at_moved = objective_b(&moved, &moved_b, lambda);
            assert!(
                at_moved >= at_best * (1.0 - 1e-12),
                "a perturbation lowered the objective: {at_moved} < {at_best}"
            );
        }
        // The report's error (through the Gram matrix) equals the one on the inputs.
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let k32: Vec<f32> = fit.kept.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = bias.iter().map(|&v| v as f32).collect();
        let via_gram = prunelab::prune::compensate::relative_error_with_bias(
            &w32,
            d_out,
            &stats,
            &kept,
            &k32,
            Some(&b32),
        );
        let direct = (at_best
            - lambda
                * (0..d_out)
                    .map(|o| {
                        (0..k)
                            .map(|c| (fit.kept[o * k + c] - w[o * n + kept[c]]).powi(2))
                            .sum::<f64>()
                    })
                    .sum::<f64>())
            / objective(&x, &w, d_out, &[], &[], 0.0);
        assert!(
            (via_gram - direct).abs() < 1e-4 * direct,
            "{via_gram} vs {direct}"
        );
    }
}

#[test]
fn numerical_ranking_equals_that_of_a_inverse_ones() {
    use prunelab::prune::importance::activation::{column_scores, NUMERICAL_DAMPING};
    use prunelab::prune::Importance;
    let (n, t, d_out) = (20, 160, 6);
    let (x, stats, w) = problem(n, t, d_out, 8);
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let scores = column_scores(Importance::Numerical, &w32, d_out, &stats, 0.0, &Cholesky).unwrap();
    // A = (WᵀW) ∘ (X Xᵀ) from the inputs themselves, solved by LU.
    let wm = Mat::<f64>::from_fn(d_out, n, |i, j| w32[i * n + j] as f64);
    let (wtw, g) = (wm.transpose() * &wm, &x * x.transpose());
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
            (scores[j] + u[(j, 0)]).abs() < 1e-6 * u[(j, 0)].abs().max(1e-12),
            "u[{j}]"
        );
    }
    // Not a trivial order: u is not a function of the diagonal alone here.
    let mut by_diag: Vec<usize> = (0..n).collect();
    by_diag.sort_by(|&i, &j| a[(i, i)].total_cmp(&a[(j, j)]));
    assert_ne!(by_u, by_diag);
}
