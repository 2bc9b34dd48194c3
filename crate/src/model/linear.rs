//! A linear layer stored in HF/PyTorch layout: `weight [d_out, d_in]`, optional `bias [d_out]`, `y = x Wᵀ + b`.
//! Keeping the HF layout means pruning slices rows and columns exactly as methods.md describes them. Products
//! are [`product`]s: f32 stays f32 where the backend's matmul would round to TF32.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::products::product;

/// `y = x Wᵀ + b`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_out, d_in]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// # Shapes
    /// `x [batch, seq, d_in]` → `[batch, seq, d_out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d_in] = x.dims();
        let d_out = self.weight.dims()[0];
        let y = product(x.reshape([b * s, d_in]), self.weight.val().transpose());
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze_dim(0),
            None => y,
        };
        y.reshape([b, s, d_out])
    }
}
