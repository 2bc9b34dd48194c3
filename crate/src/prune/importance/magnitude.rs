//! `l1` and `l2` magnitude scores: `Σ |W|^p` over the other axis (no root).

use burn::tensor::{backend::Backend, Tensor};

use super::{reduce, Member};

/// `Σ |W|^p` per channel of the member.
pub fn score<B: Backend>(m: &Member<B>, p: i32) -> Tensor<B, 1> {
    reduce(m.weight.clone().abs().powi_scalar(p), m.axis)
}
