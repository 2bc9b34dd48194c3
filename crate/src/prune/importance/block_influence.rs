//! `block-influence` (ShortGPT, Men et al. 2024): how much a whole decoder layer changes the residual stream,
//! `BI = 1 − mean_t cos(h_t, h'_t)` over every calibration token `t`, with `h` the layer's input and `h'` its
//! output on the unpruned model. A layer that leaves the stream's direction alone scores 0 and goes first.

use burn::tensor::{backend::Backend, Tensor};

use crate::error::Result;
use crate::prune::linalg::at_least_f32;
use crate::readback::scalar;

/// The block influence of a layer from the cosines of its tokens ([`cosines`] of each chunk of windows).
pub async fn block_influence<B: Backend>(cosines: Vec<Tensor<B, 3>>) -> Result<f64> {
    Ok(1.0 - scalar(Tensor::cat(cosines, 0).mean()).await?)
}

/// `cos(h_t, out_t)` of every token of a layer's input `h` and output `out`, both `[chunk, len, hidden]` (f32
/// arithmetic whatever their type) → `[chunk, len, 1]`.
pub fn cosines<B: Backend>(h: Tensor<B, 3>, out: Tensor<B, 3>) -> Tensor<B, 3> {
    let (h, out) = (at_least_f32(h), at_least_f32(out));
    let dot = (h.clone() * out.clone()).sum_dim(2);
    let norms = (h.square().sum_dim(2) * out.square().sum_dim(2)).sqrt();
    // A zero vector (never met in a real residual stream) gives cosine 0 rather than NaN.
    dot / norms.clamp_min(f32::MIN_POSITIVE as f64)
}
