//! Calibration statistics of one linear layer's input `x ∈ R^n` over all calibration tokens: Gram matrix
//! `G = Σ x xᵀ`, sum `s = Σ x` and token count — from which mean, variance and L2 norms follow. The Gram matrix
//! is a sum of products over chunks of tokens on the compute device (f32 accumulation; each symmetric block
//! once);
//! [`InputStats::to_host`] gives the f64 copy that exact host arithmetic works on.

use burn::tensor::{backend::Backend, DType, Tensor};

use super::linalg::{at_least_f32, column_sums, diagonal, plus_diagonal, to_host, Host};
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

/// Tokens per product: `G` is the f32 sum of the Gram matrices of chunks of this many tokens. A GPU matmul
/// kernel sums over its inner dimension one term after another, so one product over 32768 activation-like
/// tokens put entries 1.0e-5 of `sqrt(G_ii G_jj)` off the f64 sum on wgpu (2.3e-7 on the CPU backend, whose
/// matmul sums in blocks); in chunks of 2048, 6.0e-7 on wgpu (`tests/compensate.rs`), at no measurable cost.
const GRAM_CHUNK: usize = 2048;
/// At most this many column blocks in [`gram`].
const GRAM_BLOCKS: usize = 4;
/// Column blocks narrower than this are not worth a separate product.
const MIN_GRAM_BLOCK: usize = 256;

/// `xᵀx` for `x` `[tokens, n]` → `[n, n]`, with `mm` as the product. The result is symmetric, so `x` is cut
/// into up to [`GRAM_BLOCKS`] column blocks and only the blocks on and above the diagonal are products; those
/// below are their transposes (10 of 16 blocks' work at n = 1536, and an exactly symmetric result).
fn gram<C: Backend>(
    x: &Tensor<C, 2>,
    mm: impl Fn(Tensor<C, 2>, Tensor<C, 2>) -> Tensor<C, 2>,
) -> Tensor<C, 2> {
    let n = x.dims()[1];
    let width = n.div_ceil(GRAM_BLOCKS).max(MIN_GRAM_BLOCK);
    let cols: Vec<Tensor<C, 2>> = (0..n)
        .step_by(width)
        .map(|start| x.clone().narrow(1, start, width.min(n - start)))
        .collect();
    let c = cols.len();
    let mut blocks: Vec<Vec<Option<Tensor<C, 2>>>> = vec![vec![None; c]; c];
    for i in 0..c {
        for j in i..c {
            let b = mm(cols[i].clone().transpose(), cols[j].clone());
            if j > i {
                blocks[j][i] = Some(b.clone().transpose());
            }
            blocks[i][j] = Some(b);
        }
    }
    let rows = blocks
        .into_iter()
        .map(|row| Tensor::cat(row.into_iter().flatten().collect(), 1))
        .collect();
    Tensor::cat(rows, 0)
}

impl<C: Backend> InputStats<C> {
    /// The statistics of inputs `x` `[tokens, n]` (accumulated in f32 when `x` is in a half type; `G` over
    /// chunks of [`GRAM_CHUNK`] tokens). An f32 `x`
    /// goes through a [`product`], so the Gram matrix keeps f32's precision where the matmul would round to
    /// TF32; a half-type `x` is exact there and takes one matmul.
    pub fn of(x: Tensor<C, 2>) -> Self {
        let tokens = x.dims()[0];
        let half = matches!(x.dtype(), DType::BF16 | DType::F16);
        let x = at_least_f32(x);
        let gram = (0..tokens)
            .step_by(GRAM_CHUNK)
            .map(|start| {
                let x = x.clone().narrow(0, start, GRAM_CHUNK.min(tokens - start));
                match half {
                    true => gram(&x, |a, b| a.matmul(b)),
                    false => gram(&x, product),
                }
            })
            .reduce(|a, b| a + b)
            .expect("at least one token");
        Self {
            gram,
            sum: column_sums(x),
            tokens,
        }
    }

    /// The statistics of two disjoint sets of tokens together (chunks of calibration windows).
    pub fn merge(self, other: Self) -> Self {
        Self {
            gram: self.gram + other.gram,
            sum: self.sum + other.sum,
            tokens: self.tokens + other.tokens,
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
        diagonal(&self.gram)
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
        plus_diagonal(self.gram.clone(), delta)
    }

    /// Default ridge `λ = ratio · mean(diag G)`.
    pub async fn ridge(&self, ratio: f64) -> Result<f64> {
        self.ridge_over(ratio, self.n()).await
    }

    /// `λ = ratio · mean(diag G[..n, ..n])`: the ridge of a regression on the first `n` inputs only.
    pub async fn ridge_over(&self, ratio: f64, n: usize) -> Result<f64> {
        Ok(ratio * scalar(self.diag().narrow(0, 0, n).mean()).await?)
    }
}
