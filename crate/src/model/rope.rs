//! Rotary position embeddings (HF `rotate_half` convention): default, linear and LLaMA-3 frequency scaling.
//! Angles are computed on the CPU in f64 for the positions of one forward and uploaded as `[seq, head_dim]`.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::config::{RopeConfig, RopeScaling};

/// Inverse frequencies `[head_dim / 2]` after the config's scaling (transformers
/// `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`).
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let s = match rope.scaling {
        None => return base,
        Some(RopeScaling::Linear { factor }) => return base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3(s)) => s,
    };
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

/// `cos` and signed `sin` tables, each `[seq, head_dim]` (the half-frequencies repeated twice, as HF does;
/// the first half of `sin` negated, see [`apply`]).
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
        for sign in [-1.0f32, 1.0] {
            for f in &freqs {
                // HF computes the angle in f32 (inv_freq f32 × position f32); match it before cos/sin.
                let angle = (*f as f32) * (p as f32);
                cos.push(angle.cos());
                sin.push(sign * angle.sin());
            }
        }
    }
    let make = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [seq, head_dim]), device);
    (make(cos), make(sin))
}

/// Applies the rotation `x·cos + rotate_half(x)·sin` (HF, `rotate_half(x) = [−x₂, x₁]`) as
/// `x·cos + [x₂, x₁]·sin±` with the signed table of [`tables`] — the same products, bit for bit. It works in
/// the projection's own layout and multiplies by tables laid out like `x` without its batch axis, so every
/// element-wise step runs on contiguous rows (a transposed `x` made the CPU backend walk it element by
/// element).
///
/// # Shapes
/// `x [batch, seq, heads, head_dim]`, `cos`/`signed_sin` `[seq, head_dim]` → same as `x`.
pub fn apply<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    signed_sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [b, s, h, d] = x.dims();
    let half = d / 2;
    let swapped = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    let per_head = |t: &Tensor<B, 2>| {
        t.clone()
            .reshape([1, s, 1, d])
            .expand([1, s, h, d])
            .reshape([1, s * h * d])
    };
    let rows = |t: Tensor<B, 4>| t.reshape([b, s * h * d]);
    (rows(x) * per_head(cos) + rows(swapped) * per_head(signed_sin)).reshape([b, s, h, d])
}
