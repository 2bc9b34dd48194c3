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
    /// of earlier positions come first. Scores over [`SCORE_BLOCK_BYTES`] are computed in blocks of sequences
    /// or heads ([`score_block`]) and their outputs joined.
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
        let (q, k, v) = (
            q.swap_dims(1, 2),
            k.permute([0, 2, 3, 1]),
            v.swap_dims(1, 2),
        );
        let (rows, heads) = score_block(b, nh, s, t);
        let out = match rows >= b && heads >= nh {
            true => attend_block(q, k, v, &pos.mask),
            false => {
                let part = |x: &Tensor<B, 4>, r: usize, h: usize| {
                    x.clone()
                        .slice([r..(r + rows).min(b), h..(h + heads).min(nh)])
                };
                let blocks = (0..b).step_by(rows).map(|r| {
                    let row = (0..nh).step_by(heads).map(|h| {
                        attend_block(part(&q, r, h), part(&k, r, h), part(&v, r, h), &pos.mask)
                    });
                    Tensor::cat(row.collect(), 1)
                });
                Tensor::cat(blocks.collect(), 0)
            }
        };
        out.swap_dims(1, 2).reshape([b, s, nh * hd])
    }

    /// # Shapes
    /// `x [batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, pos: &Positions<B>) -> Tensor<B, 3> {
        self.o_proj.forward(self.heads(x, pos))
    }
}

/// The most bytes one block of attention scores takes in f32: 128 MiB, the storage buffer every WebGPU device
/// binds (the spec's default `maxStorageBufferBindingSize`). Larger batches and longer windows compute their
/// scores block by block ([`score_block`]), so that scores outgrow it only where one head of one sequence does.
pub const SCORE_BLOCK_BYTES: usize = 128 << 20;

/// `(sequences, heads)` of one block of `[batch, heads, seq, keys]` attention scores: every head of as many
/// sequences as fit in [`SCORE_BLOCK_BYTES`] in f32, else as many heads of one sequence as fit (at least one).
pub fn score_block(batch: usize, heads: usize, seq: usize, keys: usize) -> (usize, usize) {
    let per_head = 4usize.saturating_mul(seq).saturating_mul(keys).max(1);
    let fit = SCORE_BLOCK_BYTES / per_head;
    match fit >= heads {
        true => ((fit / heads.max(1)).clamp(1, batch.max(1)), heads),
        false => (1, fit.max(1)),
    }
}

/// Softmax attention of one block of sequences and heads: `q [b, h, seq, hd]`, `kt [b, h, hd, keys]`, `v [b, h,
/// keys, hd]`, `mask [seq, keys]` → `[b, h, seq, hd]`.
fn attend_block<B: Backend>(
    q: Tensor<B, 4>,
    kt: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [b, h, s, hd] = q.dims();
    let t = kt.dims()[3];
    let scores = product(q, kt) * (1.0 / (hd as f64).sqrt());
    let dtype = scores.dtype();
    let scores = (scores.reshape([b * h, s * t]) + mask.clone().cast(dtype).reshape([1, s * t]))
        .reshape([b, h, s, t]);
    // In f32 whatever the run's float type, as transformers does.
    product(softmax(scores.cast(DType::F32), 3).cast(dtype), v)
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
