//! Causal self-attention with grouped KV heads (GQA; MHA when `n_rep = 1`) and per-layer head counts.
//! Query head `h` reads KV head `h / n_rep`, as HF `repeat_kv` pairs them.

use burn::module::Module;
use burn::tensor::{activation::softmax, backend::Backend, DType, Tensor, TensorData};

use super::cache::LayerKv;
use super::linear::Linear;
use super::llama::Positions;
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
    /// `x [batch, seq, hidden]` → `[batch, seq, num_heads·head_dim]`
    pub fn heads(&self, x: Tensor<B, 3>, pos: &Positions<B>) -> Tensor<B, 3> {
        self.attend(x, pos, None)
    }

    /// Attention output for positions that follow those in `kv`, whose keys and values it appends to
    /// (`pos` holds the new positions; its mask spans every key).
    ///
    /// # Shapes
    /// `x [batch, new, hidden]` → `[batch, new, hidden]`
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        pos: &Positions<B>,
        kv: &mut LayerKv<B>,
    ) -> Tensor<B, 3> {
        self.o_proj.forward(self.attend(x, pos, Some(kv)))
    }

    /// Queries and keys stay in the projections' `[batch, seq, heads, head_dim]` layout: the products read
    /// them through strides, and only the attention output is transposed back. With `kv`, the keys and values
    /// of earlier positions come first.
    ///
    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, num_heads·head_dim]`
    fn attend(
        &self,
        x: Tensor<B, 3>,
        pos: &Positions<B>,
        kv: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads(), self.num_kv_heads(), self.head_dim);
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, hd]);
        let q = rope::apply(
            split(self.q_proj.forward(x.clone()), nh),
            &pos.cos,
            &pos.sin,
        );
        let k = rope::apply(
            split(self.k_proj.forward(x.clone()), nkv),
            &pos.cos,
            &pos.sin,
        );
        let v = split(self.v_proj.forward(x), nkv);
        let (k, v) = match kv {
            Some(kv) => kv.extend(k, v),
            None => (k, v),
        };
        // Keys: earlier positions and these.
        let t = k.dims()[1];
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
        // [batch, heads, seq, keys]
        let scores =
            product(q.swap_dims(1, 2), k.permute([0, 2, 3, 1])) * (1.0 / (hd as f64).sqrt());
        let dtype = scores.dtype();
        let scores = (scores.reshape([b * nh, s * t])
            + pos.mask.clone().cast(dtype).reshape([1, s * t]))
        .reshape([b, nh, s, t]);
        // In f32 whatever the run's float type, as transformers does.
        let out = product(
            softmax(scores.cast(DType::F32), 3).cast(dtype),
            v.swap_dims(1, 2),
        );
        out.swap_dims(1, 2).reshape([b, s, nh * hd])
    }

    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, pos: &Positions<B>) -> Tensor<B, 3> {
        self.o_proj.forward(self.heads(x, pos))
    }
}

/// `[batch, seq, n_kv, head_dim]` → `[batch, seq, n_kv·n_rep, head_dim]`, each KV head repeated `n_rep` times
/// in place (head `h` of the result is KV head `h / n_rep`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, s, n, d] = x.dims();
    Tensor::cat(vec![x.unsqueeze_dim::<5>(3); n_rep], 3).reshape([b, s, n * n_rep, d])
}

/// Additive causal mask `[seq, past + seq]` for `seq` positions that follow `past` earlier ones: 0 where query
/// `i` (position `past + i`) may read key `j` (`j ≤ past + i`), −∞ at later positions. Added to the scores, it
/// gives softmax the zeros a masked fill would.
pub fn causal_mask<B: Backend>(past: usize, seq: usize, device: &B::Device) -> Tensor<B, 2> {
    let keys = past + seq;
    let values: Vec<f32> = (0..seq * keys)
        .map(|i| match i % keys > past + i / keys {
            true => f32::NEG_INFINITY,
            false => 0.0,
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [seq, keys]), device)
}
