//! Calibration statistics of one linear layer's input `x ∈ R^n` over all calibration tokens: Gram matrix
//! `G = Σ x xᵀ` (accumulated in f64), sum `s = Σ x` and token count — from which mean, variance and L2 norms
//! follow. Per-chunk products are formed on the device in f32 over a few hundred tokens; chunks add up in f64.

use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::readback::to_vec;

/// Running statistics of an `n`-dimensional input.
#[derive(Debug, Clone)]
pub struct InputStats {
    pub n: usize,
    /// Row-major `[n, n]`.
    pub gram: Vec<f64>,
    /// `Σ x`, `[n]`.
    pub sum: Vec<f64>,
    pub tokens: usize,
}

impl InputStats {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            gram: vec![0.0; n * n],
            sum: vec![0.0; n],
            tokens: 0,
        }
    }

    /// Adds a chunk of inputs `x [tokens, n]`.
    pub async fn add<B: Backend>(&mut self, x: Tensor<B, 2>) -> Result<()> {
        let [t, n] = x.dims();
        let g = to_vec(x.clone().transpose().matmul(x.clone())).await?;
        let s = to_vec(x.sum_dim(0).reshape([n])).await?;
        self.gram
            .iter_mut()
            .zip(&g)
            .for_each(|(a, b)| *a += *b as f64);
        self.sum
            .iter_mut()
            .zip(&s)
            .for_each(|(a, b)| *a += *b as f64);
        self.tokens += t;
        Ok(())
    }

    /// `G[i, j]`.
    pub fn g(&self, i: usize, j: usize) -> f64 {
        self.gram[i * self.n + j]
    }

    /// Per-channel mean `μ_j`.
    pub fn mean(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s / self.tokens as f64).collect()
    }

    /// Per-channel (population) variance `E[x_j²] − μ_j²`.
    pub fn variance(&self) -> Vec<f64> {
        let mu = self.mean();
        (0..self.n)
            .map(|j| (self.g(j, j) / self.tokens as f64 - mu[j] * mu[j]).max(0.0))
            .collect()
    }

    /// Per-channel L2 norm over all tokens `‖x_j‖ = sqrt(G_jj)`.
    pub fn norm(&self) -> Vec<f64> {
        (0..self.n).map(|j| self.g(j, j).max(0.0).sqrt()).collect()
    }

    /// Default ridge `λ = ratio · mean(diag G)`.
    pub fn ridge(&self, ratio: f64) -> f64 {
        ratio * (0..self.n).map(|j| self.g(j, j)).sum::<f64>() / self.n as f64
    }
}
