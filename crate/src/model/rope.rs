//! Rotary position embeddings (HF `rotate_half` convention), default and LLaMA-3 frequency scaling.
//! Angles are computed on the CPU in f64 for the positions of one forward and uploaded as `[seq, head_dim]`.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::config::RopeConfig;

/// Inverse frequencies `[head_dim / 2]` after optional LLaMA-3 scaling
/// (transformers `_compute_llama3_parameters`).
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let Some(s) = rope.llama3 else { return base };
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen > low_wavelen {
                f / s.factor
            } else if wavelen < high_wavelen {
                f
            } else {
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

/// `cos` and `sin` tables, each `[seq, head_dim]` (the half-frequencies repeated twice, as HF does).
pub fn tables<B: Backend>(
    rope: &RopeConfig,
    head_dim: usize,
    seq: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let freqs = inv_freq(rope, head_dim);
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in 0..seq {
        for _half in 0..2 {
            for f in &freqs {
                // HF computes the angle in f32 (inv_freq f32 × position f32); match it before cos/sin.
                let angle = (*f as f32) * (p as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let make = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [seq, head_dim]), device);
    (make(cos), make(sin))
}

/// Applies the rotation. `x [batch, heads, seq, head_dim]`, `cos`/`sin` `[seq, head_dim]` → same as `x`.
pub fn apply<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, _, s, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let cos = cos.clone().reshape([1, 1, s, d]);
    let sin = sin.clone().reshape([1, 1, s, d]);
    x * cos + rotated * sin
}
