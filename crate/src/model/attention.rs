//! Causal self-attention with grouped KV heads (GQA; MHA when `n_rep = 1`) and per-layer head counts.
//! Query head `h` reads KV head `h / n_rep`, as HF `repeat_kv` pairs them.

use burn::module::Module;
use burn::tensor::{activation::softmax, backend::Backend, Bool, DType, Tensor};

use super::linear::Linear;
use super::rope;
use crate::products::product;

/// One layer's attention block. Head counts are read off the weights, so pruned layers need no extra state.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[num_heads·head_dim, hidden]`
    pub q_proj: Linear<B>,
    /// `[num_kv_heads·head_dim, hidden]`
    pub k_proj: Linear<B>,
    /// `[num_kv_heads·head_dim, hidden]`
    pub v_proj: Linear<B>,
    /// `[hidden, num_heads·head_dim]`
    pub o_proj: Linear<B>,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// Query heads of this layer.
    pub fn num_heads(&self) -> usize {
        self.q_proj.weight.dims()[0] / self.head_dim
    }

    /// KV heads of this layer.
    pub fn num_kv_heads(&self) -> usize {
        self.k_proj.weight.dims()[0] / self.head_dim
    }

    /// The input of `o_proj` (concatenated head outputs) — what compensation regresses on.
    ///
    /// # Shapes
    /// `x [batch, seq, hidden]`, `cos`/`sin` `[seq, head_dim]`, `mask [seq, seq]` (true = masked)
    /// → `[batch, seq, num_heads·head_dim]`
    pub fn heads(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: &Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads(), self.num_kv_heads(), self.head_dim);
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, hd]).swap_dims(1, 2);
        let q = rope::apply(split(self.q_proj.forward(x.clone()), nh), cos, sin);
        let k = rope::apply(split(self.k_proj.forward(x.clone()), nkv), cos, sin);
        let v = split(self.v_proj.forward(x), nkv);
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
        let scores = product(q, k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        let scores = scores.mask_fill(
            mask.clone().reshape([1, 1, s, s]).expand([b, nh, s, s]),
            f32::NEG_INFINITY,
        );
        // In f32 whatever the run's float type, as transformers does.
        let dtype = scores.dtype();
        let out = product(softmax(scores.cast(DType::F32), 3).cast(dtype), v);
        out.swap_dims(1, 2).reshape([b, s, nh * hd])
    }

    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        mask: &Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        self.o_proj.forward(self.heads(x, cos, sin, mask))
    }
}

/// `[batch, n_kv, seq, head_dim]` → `[batch, n_kv·n_rep, seq, head_dim]`, each KV head repeated `n_rep` times
/// in place (head `h` of the result is KV head `h / n_rep`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, n, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, n, n_rep, s, d])
        .reshape([b, n * n_rep, s, d])
}

/// Causal mask `[seq, seq]`: true above the diagonal (future positions). burn's `tril_mask` marks everything
/// outside the lower triangle (diagonal included) as true.
pub fn causal_mask<B: Backend>(seq: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, device)
}
