//! RMSNorm as HF LlamaRMSNorm computes it: `x / sqrt(mean(x²) + eps) * weight`, normalised in f32 whatever
//! the run's float type.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, DType, Tensor};

/// Root-mean-square normalisation over the hidden dimension.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[hidden]`
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// `x [batch, seq, hidden]` → same
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let rms = (x.clone().powi_scalar(2).mean_dim(2) + self.eps).sqrt();
        (x / rms).cast(dtype) * self.weight.val().unsqueeze::<3>()
    }
}
