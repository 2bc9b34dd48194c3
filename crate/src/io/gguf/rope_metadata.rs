//! Rotary scaling as GGUF metadata (`{arch}.rope.scaling.*`), written and read as llama.cpp reads it for the
//! llama, deci and qwen2 architectures: linear and YaRN travel as keys, LLaMA-3 as `rope_freqs.weight`
//! ([`super::rope_freqs`]). Dynamic NTK has no GGUF form.
//!
//! llama.cpp's YaRN fixes `beta_fast` 32, `beta_slow` 1 and whole-dimension correction bounds for these
//! architectures, and multiplies cos and sin by `mscale(factor) · rope.scaling.attn_factor`, so a config's
//! attention factor `A` travels as `attn_factor = A / mscale(factor)`.

use super::reader::{GgufHeader, Value};
use crate::error::{Error, Result};
use crate::model::config::{RopeScaling, YarnScaling};
use crate::model::rope::yarn_bounds;
use crate::model::ModelConfig;

fn refused(value: impl ToString, reason: &str) -> Error {
    Error::unsupported("rope_scaling", value, reason)
}

/// A factor as the f32 GGUF stores, refused where that would not be the same scaling (0 reads as none,
/// infinity is refused).
fn stored_factor(kind: &str, factor: f64) -> Result<Value> {
    let stored = factor as f32;
    match stored > 0.0 && stored.is_finite() {
        true => Ok(Value::F32(stored)),
        false => Err(refused(
            format!("{kind} factor {factor}"),
            "GGUF stores the factor as an f32, which cannot hold it",
        )),
    }
}

/// The `{arch}.rope.scaling.*` keys for `cfg`'s rotary scaling (none for unscaled and LLaMA-3), or why llama.cpp
/// could not compute the same rotary embeddings.
pub fn keys(cfg: &ModelConfig, arch: &str) -> Result<Vec<(String, Value)>> {
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    let kind = |s: &str| (k("type"), Value::String(s.into()));
    match cfg.rope.scaling {
        None | Some(RopeScaling::Llama3(_)) => Ok(vec![]),
        Some(RopeScaling::Linear { factor }) => Ok(vec![
            kind("linear"),
            (k("factor"), stored_factor("linear", factor)?),
        ]),
        Some(dynamic @ RopeScaling::Dynamic { .. }) => Err(refused(
            dynamic,
            "llama.cpp has no dynamic-NTK scaling (its own converter drops it, which changes every \
             sequence longer than max_position_embeddings)",
        )),
        Some(RopeScaling::Yarn(y)) => {
            let fixed = y.beta_fast == YarnScaling::BETA_FAST
                && y.beta_slow == YarnScaling::BETA_SLOW
                && y.truncate;
            if !fixed {
                return Err(refused(
                    format!("{y:?}"),
                    "llama.cpp's YaRN for llama models fixes beta_fast 32, beta_slow 1 and truncate true",
                ));
            }
            // transformers' ramp runs backwards where the bounds cross; llama.cpp's is a step there.
            let (low, high) = yarn_bounds(&y, cfg.rope.theta, cfg.head_dim);
            if high < low {
                return Err(refused(
                    format!("{y:?}"),
                    &format!(
                        "its correction bounds cross ({low} > {high}: the original length is too short \
                         for rope_theta {}), where llama.cpp computes another ramp",
                        cfg.rope.theta
                    ),
                ));
            }
            let original = u32::try_from(y.original_max_position_embeddings).map_err(|_| {
                refused(
                    format!("{y:?}"),
                    "original_max_position_embeddings does not fit GGUF's u32",
                )
            })?;
            let mut keys = vec![
                kind("yarn"),
                (k("factor"), stored_factor("yarn", y.factor)?),
                (k("original_context_length"), Value::U32(original)),
            ];
            let default = YarnScaling::mscale(y.factor, 1.0);
            if y.attention_factor != default {
                let extra = y.attention_factor / default;
                keys.push((k("attn_factor"), stored_factor("yarn attention", extra)?));
            }
            Ok(keys)
        }
    }
}

/// The scaling `{arch}.rope.scaling.*` (or the older `rope.scale_linear`) gives, and the key that says so.
/// As llama.cpp: the type defaults to linear, a factor of 0 means 1, `none` ignores the factor, YaRN's
/// original length defaults to `context_length`.
pub fn read(
    file: &GgufHeader,
    arch: &str,
    context_length: usize,
) -> Result<Option<(String, RopeScaling)>> {
    let k = |s: &str| format!("{arch}.rope.{s}");
    let kind = match file.get(&k("scaling.type")) {
        None => "linear",
        Some(v) => v
            .as_str()
            .ok_or_else(|| Error::Gguf(format!("{} is {v:?}, not a string", k("scaling.type"))))?,
    };
    if !matches!(kind, "none" | "linear" | "yarn") {
        return Err(Error::unsupported(
            &k("scaling.type"),
            kind,
            "only unscaled, linear, YaRN and LLaMA-3 (rope_freqs) rotary embeddings are read from GGUF",
        ));
    }
    let positive = |key: &str| -> Result<Option<f64>> {
        match file.get(key).map(|v| (v, v.as_f64())) {
            None => Ok(None),
            Some((_, Some(f))) if f >= 0.0 && f.is_finite() => Ok(Some(f)),
            Some((v, _)) => Err(Error::Gguf(format!(
                "{key} is {v:?}, not a finite number ≥ 0"
            ))),
        }
    };
    let attn_key = k("scaling.attn_factor");
    let attn = positive(&attn_key)?.unwrap_or(1.0);
    if kind != "yarn" && attn != 1.0 {
        return Err(Error::unsupported(
            &attn_key,
            attn,
            "an attention factor is read with YaRN scaling only",
        ));
    }
    let factor_key = ["scaling.factor", "scale_linear"]
        .map(k)
        .into_iter()
        .find(|key| file.get(key).is_some());
    let factor = match &factor_key {
        Some(key) => positive(key)?.filter(|&f| f != 0.0).unwrap_or(1.0),
        None => 1.0,
    };
    let key = factor_key.unwrap_or_else(|| k("scaling.type"));
    match kind {
        "linear" if factor != 1.0 => Ok(Some((key, RopeScaling::Linear { factor }))),
        "yarn" => {
            let original = match file.get(&k("scaling.original_context_length")) {
                None => context_length,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        Error::Gguf(format!(
                            "{} is {v:?}, not a count > 0",
                            k("scaling.original_context_length")
                        ))
                    })?,
            };
            Ok(Some((
                key,
                RopeScaling::Yarn(YarnScaling {
                    factor,
                    original_max_position_embeddings: original,
                    beta_fast: YarnScaling::BETA_FAST,
                    beta_slow: YarnScaling::BETA_SLOW,
                    truncate: true,
                    attention_factor: YarnScaling::mscale(factor, 1.0) * attn,
                }),
            )))
        }
        _ => Ok(None),
    }
}
