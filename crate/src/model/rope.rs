//! Rotary position embeddings (HF `rotate_half` convention): default, linear, dynamic-NTK, LLaMA-3 and YaRN
//! frequency scaling. Angles are computed on the CPU in f64 for the positions of one forward and uploaded as
//! `[seq, head_dim]`.

use std::f64::consts::PI;

use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::rope_scaling::{Llama3Scaling, RopeConfig, RopeScaling, YarnScaling};

/// Inverse frequencies `[head_dim / 2]` for a forward over `seq` positions, after the config's scaling
/// (transformers `_compute_{linear_scaling,dynamic_ntk,llama3,yarn}_parameters`; only dynamic NTK depends on
/// `seq`, as transformers computes it for a fresh model).
pub fn inv_freq(rope: &RopeConfig, head_dim: usize, seq: usize) -> Vec<f64> {
    let plain = |theta: f64| -> Vec<f64> {
        (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect()
    };
    match rope.scaling {
        None => plain(rope.theta),
        Some(RopeScaling::Linear { factor }) => {
            plain(rope.theta).iter().map(|f| f / factor).collect()
        }
        Some(RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        }) => {
            let (d, max) = (head_dim as f64, max_position_embeddings as f64);
            let len = seq.max(max_position_embeddings) as f64;
            plain(rope.theta * (factor * len / max - (factor - 1.0)).powf(d / (d - 2.0)))
        }
        Some(RopeScaling::Llama3(s)) => llama3(plain(rope.theta), &s),
        Some(RopeScaling::Yarn(s)) => yarn(plain(rope.theta), &s, rope.theta, head_dim),
    }
}

/// Wavelengths beyond the original length divided by the factor, those under `original / high_freq_factor`
/// kept, a smooth band between.
fn llama3(base: Vec<f64>, s: &Llama3Scaling) -> Vec<f64> {
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * PI / f;
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

/// YaRN's correction bounds `(low, high)`: the frequency indices that turn `beta_fast` and `beta_slow` times over
/// the original length, rounded outwards when `truncate`, clamped to `[0, head_dim − 1]`.
pub fn yarn_bounds(s: &YarnScaling, theta: f64, head_dim: usize) -> (f64, f64) {
    let dim = head_dim as f64;
    let correction = |rotations: f64| {
        dim * (s.original_max_position_embeddings as f64 / (rotations * 2.0 * PI)).ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction(s.beta_fast), correction(s.beta_slow));
    if s.truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    (low.max(0.0), high.min(dim - 1.0))
}

/// Frequency `i` kept below the [`yarn_bounds`], divided by the factor above them, linearly blended between
/// (llama.cpp's `rope_yarn` blends the angles alike).
fn yarn(base: Vec<f64>, s: &YarnScaling, theta: f64, head_dim: usize) -> Vec<f64> {
    let (low, high) = yarn_bounds(s, theta, head_dim);
    let span = if low == high { 0.001 } else { high - low };
    base.into_iter()
        .enumerate()
        .map(|(i, f)| {
            let kept = 1.0 - ((i as f64 - low) / span).clamp(0.0, 1.0);
            f / s.factor * (1.0 - kept) + f * kept
        })
        .collect()
}

/// `cos` and signed `sin` tables of positions `past .. past + seq`, each `[seq, head_dim]` (the half-frequencies
/// repeated twice, as HF does; the first half of `sin` negated, see [`apply`]), both multiplied by the attention
/// factor (YaRN's). Frequencies are those of a forward over `past + seq` positions (dynamic NTK grows with it, as
/// transformers' does with a cache).
pub fn tables<B: Backend>(
    rope: &RopeConfig,
    head_dim: usize,
    past: usize,
    seq: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let freqs = inv_freq(rope, head_dim, past + seq);
    let scale = rope.attention_factor() as f32;
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in past..past + seq {
        for sign in [-1.0f32, 1.0] {
            for f in &freqs {
                // HF computes the angle in f32 (inv_freq f32 × position f32); match it before cos/sin.
                let angle = (*f as f32) * (p as f32);
                cos.push(angle.cos() * scale);
                sin.push(sign * angle.sin() * scale);
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
