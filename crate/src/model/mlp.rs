//! SwiGLU MLP: `down(silu(gate(x)) ⊙ up(x))`, width per layer.

use burn::module::Module;
use burn::tensor::{activation::silu, backend::Backend, Tensor};

use super::linear::Linear;

/// One layer's MLP block.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[intermediate, hidden]`
    pub gate_proj: Linear<B>,
    /// `[intermediate, hidden]`
    pub up_proj: Linear<B>,
    /// `[hidden, intermediate]`
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// The input of `down_proj` — what compensation regresses on.
    ///
    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, intermediate]`
    pub fn hidden(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x)
    }

    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(self.hidden(x))
    }
}
