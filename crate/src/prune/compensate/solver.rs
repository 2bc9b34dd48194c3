//! The one linear-algebra interface compensation needs: solve `A X = B` for a symmetric positive definite `A`.
//! [`Cholesky`] does it on the CPU with faer (also in wasm); a device-side solver can implement the same trait.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};

use crate::error::{Error, Result};

/// Solves SPD systems.
pub trait SpdSolver {
    /// `X` with `A X = B`; `a` is `[n, n]` row-major, `b` is `[n, m]` row-major; returns `[n, m]` row-major.
    fn solve(&self, a: &[f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>>;
    /// `diag(A⁻¹)`.
    fn inverse_diagonal(&self, a: &[f64], n: usize) -> Result<Vec<f64>> {
        let eye: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect();
        let inv = self.solve(a, n, &eye, n)?;
        Ok((0..n).map(|i| inv[i * n + i]).collect())
    }
}

/// Cholesky factorisation on the CPU (faer).
pub struct Cholesky;

impl SpdSolver for Cholesky {
    fn solve(&self, a: &[f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>> {
        let a = Mat::<f64>::from_fn(n, n, |i, j| a[i * n + j]);
        let b = Mat::<f64>::from_fn(n, m, |i, j| b[i * m + j]);
        let llt = a.llt(Side::Lower).map_err(|e| {
            Error::Invalid(format!(
                "the calibration Gram matrix is not positive definite ({e:?}); raise the ridge"
            ))
        })?;
        let x = llt.solve(&b);
        Ok((0..n * m).map(|k| x[(k / m, k % m)]).collect())
    }

    fn inverse_diagonal(&self, a: &[f64], n: usize) -> Result<Vec<f64>> {
        let a = Mat::<f64>::from_fn(n, n, |i, j| a[i * n + j]);
        let llt = a.llt(Side::Lower).map_err(|e| {
            Error::Invalid(format!(
                "the calibration Gram matrix is not positive definite ({e:?}); raise the ridge"
            ))
        })?;
        let inv = llt.inverse();
        Ok((0..n).map(|i| inv[(i, i)]).collect())
    }
}
