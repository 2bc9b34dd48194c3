//! Calibration statistics of one linear layer's input `x ∈ R^n` over all calibration tokens: Gram matrix
//! `G = Σ x xᵀ`, sum `s = Σ x` and token count — from which mean, variance and L2 norms follow. The Gram matrix
//! is one product over all tokens on the compute device (f32 accumulation); [`InputStats::to_host`] gives the
//! f64 copy that exact host arithmetic works on.

use burn::tensor::{backend::Backend, DType, Tensor};

use super::linalg::{at_least_f32, eye_like, to_host, Host};
use crate::error::Result;
use crate::products::product;
use crate::readback::scalar;

/// Statistics of an `n`-dimensional input, on backend `C`.
#[derive(Debug, Clone)]
pub struct InputStats<C: Backend> {
    /// `[n, n]`
    pub gram: Tensor<C, 2>,
    /// `Σ x`, `[n]`.
    pub sum: Tensor<C, 1>,
    pub tokens: usize,
}

impl<C: Backend> InputStats<C> {
    /// The statistics of inputs `x` `[tokens, n]` (accumulated in f32 when `x` is in a half type). An f32 `x`
    /// goes through a [`product`], so the Gram matrix keeps f32's precision where the matmul would round to
    /// TF32; a half-type `x` is exact there and takes one matmul.
    pub fn of(x: Tensor<C, 2>) -> Self {
        let [tokens, n] = x.dims();
        let half = matches!(x.dtype(), DType::BF16 | DType::F16);
        let x = at_least_f32(x);
        let gram = match half {
            true => x.clone().transpose().matmul(x.clone()),
            false => product(x.clone().transpose(), x.clone()),
        };
        Self {
            gram,
            sum: x.sum_dim(0).reshape([n]),
            tokens,
        }
    }

    /// The input dimension `n`.
    pub fn n(&self) -> usize {
        self.gram.dims()[0]
    }

    /// The same statistics in f64 on the host.
    pub async fn to_host(&self) -> Result<InputStats<Host>> {
        Ok(InputStats {
            gram: to_host(self.gram.clone()).await?,
            sum: to_host(self.sum.clone()).await?,
            tokens: self.tokens,
        })
    }

    /// `diag(G)` `[n]`.
    pub fn diag(&self) -> Tensor<C, 1> {
        let n = self.n();
        (self.gram.clone() * eye_like(n, &self.gram))
            .sum_dim(1)
            .reshape([n])
    }

    /// Per-channel mean `μ_j`, `[n]`.
    pub fn mean(&self) -> Tensor<C, 1> {
        self.sum.clone().div_scalar(self.tokens as f64)
    }

    /// Per-channel (population) variance `E[x_j²] − μ_j²`, `[n]`.
    pub fn variance(&self) -> Tensor<C, 1> {
        let mu = self.mean();
        (self.diag().div_scalar(self.tokens as f64) - mu.clone() * mu).clamp_min(0.0)
    }

    /// Per-channel L2 norm over all tokens `‖x_j‖ = sqrt(G_jj)`, `[n]`.
    pub fn norm(&self) -> Tensor<C, 1> {
        self.diag().clamp_min(0.0).sqrt()
    }

    /// `G + δI`.
    pub fn damped(&self, delta: f64) -> Tensor<C, 2> {
        self.gram.clone() + eye_like(self.n(), &self.gram).mul_scalar(delta)
    }

    /// Default ridge `λ = ratio · mean(diag G)`.
    pub async fn ridge(&self, ratio: f64) -> Result<f64> {
        Ok(ratio * scalar(self.diag().mean()).await?)
    }
}
