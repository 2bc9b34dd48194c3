//! The KV cache: the keys and values every layer has computed for the tokens seen so far, so that decoding one
//! more token runs one position through the model instead of the whole sequence again.

use burn::tensor::{backend::Backend, Tensor};

/// One layer's keys (after rotary) and values of the tokens seen so far, in the projections' layout:
/// `[batch, len, num_kv_heads, head_dim]` each. Query heads are repeated onto them at every step, so a pruned
/// layer caches only the KV heads it kept.
#[derive(Debug)]
pub struct LayerKv<B: Backend> {
    seen: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> Default for LayerKv<B> {
    fn default() -> Self {
        LayerKv { seen: None }
    }
}

impl<B: Backend> LayerKv<B> {
    /// Appends the keys and values of new positions and returns those of every position seen.
    /// `k`, `v` `[batch, new, num_kv_heads, head_dim]` → `[batch, len + new, num_kv_heads, head_dim]` each.
    pub fn extend(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = match self.seen.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 1), Tensor::cat(vec![pv, v], 1)),
            None => (k, v),
        };
        self.seen = Some((k.clone(), v.clone()));
        (k, v)
    }
}

/// Every layer's [`LayerKv`] and the number of positions they hold.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerKv<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `num_layers` decoder layers.
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| LayerKv::default()).collect(),
            len: 0,
        }
    }

    /// Positions seen so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records that `n` more positions went through every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
