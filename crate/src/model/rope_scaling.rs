//! Rotary settings as a config states them: the scalings, what `rope_parameters` (transformers 5.x) or
//! `rope_theta` + `rope_scaling` (4.x) resolve to, their checks, and the object written back. The frequencies
//! they give are [`super::rope`]'s.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// LLaMA-3 frequency-dependent rotary scaling (`rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl Llama3Scaling {
    /// `factor > 0`, `0 < low_freq_factor < high_freq_factor`, all finite, `original_max_position_embeddings > 0`.
    pub fn is_valid(&self) -> bool {
        self.factor > 0.0
            && self.factor.is_finite()
            && self.low_freq_factor > 0.0
            && self.high_freq_factor > self.low_freq_factor
            && self.high_freq_factor.is_finite()
            && self.original_max_position_embeddings > 0
    }
}

/// YaRN (`rope_type = "yarn"`, transformers `_compute_yarn_parameters`): every frequency blends its
/// interpolated (÷ `factor`) and kept values along a ramp over the dimensions between the correction bounds of
/// `beta_fast` and `beta_slow` rotations in `original_max_position_embeddings` positions; cos and sin are
/// multiplied by `attention_factor`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct YarnScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Correction bounds rounded outwards to whole dimensions (transformers `truncate`, default true).
    pub truncate: bool,
    /// The cos/sin multiplier, resolved: `attention_factor` if the config gives one, else from `mscale` and
    /// `mscale_all_dim`, else [`YarnScaling::mscale`]`(factor, 1)`.
    pub attention_factor: f64,
}

impl YarnScaling {
    /// Defaults of transformers and llama.cpp.
    pub const BETA_FAST: f64 = 32.0;
    pub const BETA_SLOW: f64 = 1.0;

    /// `0.1·mscale·ln(factor) + 1` for `factor > 1`, else 1 (transformers `get_mscale`).
    pub fn mscale(factor: f64, mscale: f64) -> f64 {
        match factor <= 1.0 {
            true => 1.0,
            false => 0.1 * mscale * factor.ln() + 1.0,
        }
    }

    /// Why the settings give no usable frequencies (`None`: they do).
    fn invalid_reason(&self) -> Option<&'static str> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.factor) || self.original_max_position_embeddings == 0 {
            Some("yarn needs a finite factor > 0 and original_max_position_embeddings > 0")
        } else if !(positive(self.beta_slow) && positive(self.beta_fast)) {
            Some("yarn needs finite beta_fast and beta_slow > 0")
        } else if self.beta_fast < self.beta_slow {
            Some("yarn needs beta_fast ≥ beta_slow (the ramp would run backwards)")
        } else if !positive(self.attention_factor) {
            Some("yarn needs a finite attention factor > 0")
        } else {
            None
        }
    }
}

/// How the rotary frequencies `theta^(−2i/d)` are scaled.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeScaling {
    /// `rope_type = "linear"` (position interpolation): every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `rope_type = "dynamic"` (dynamic NTK): a forward over more than `max_position_embeddings` positions
    /// grows the base with its length; shorter ones use the plain frequencies.
    Dynamic {
        factor: f64,
        /// The config's `max_position_embeddings`, which the growth starts from.
        max_position_embeddings: usize,
    },
    /// `rope_type = "llama3"`: low frequencies divided by the factor, high ones kept, a band between.
    Llama3(Llama3Scaling),
    /// `rope_type = "yarn"`: see [`YarnScaling`].
    Yarn(YarnScaling),
}

impl RopeScaling {
    /// Why the settings give no usable frequencies for base `theta` and `head_dim` (`None`: they do).
    pub fn invalid_reason(&self, theta: f64, head_dim: usize) -> Option<String> {
        let finite_positive = |f: f64| f > 0.0 && f.is_finite();
        match self {
            RopeScaling::Linear { factor } if !finite_positive(*factor) => {
                Some(format!("linear needs a finite factor > 0 (got {factor})"))
            }
            RopeScaling::Dynamic {
                factor,
                max_position_embeddings,
            } if !finite_positive(*factor) || *max_position_embeddings == 0 || head_dim <= 2 => {
                Some(format!(
                    "dynamic needs a finite factor > 0, max_position_embeddings > 0 and head_dim > 2 \
                     (got {factor}, {max_position_embeddings}, {head_dim})"
                ))
            }
            RopeScaling::Llama3(l3) if !l3.is_valid() => Some(format!(
                "llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and \
                 original_max_position_embeddings > 0 (got {l3:?})"
            )),
            // Its correction bounds divide by ln(theta).
            RopeScaling::Yarn(_) if theta == 1.0 => Some("yarn needs rope_theta ≠ 1".into()),
            RopeScaling::Yarn(y) => y.invalid_reason().map(|r| format!("{r} (got {y:?})")),
            _ => None,
        }
    }
}

/// One line for reports and messages, e.g. `linear scaling, factor 4`.
impl std::fmt::Display for RopeScaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RopeScaling::Linear { factor } => write!(f, "linear scaling, factor {factor}"),
            RopeScaling::Dynamic { factor, .. } => {
                write!(f, "dynamic NTK scaling, factor {factor}")
            }
            RopeScaling::Llama3(s) => write!(f, "llama3 scaling, factor {}", s.factor),
            RopeScaling::Yarn(s) => write!(
                f,
                "yarn scaling, factor {}, from {} positions, attention factor {:.4}",
                s.factor, s.original_max_position_embeddings, s.attention_factor
            ),
        }
    }
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RopeConfig {
    pub theta: f64,
    /// `None`: the plain frequencies (`rope_type = "default"`).
    pub scaling: Option<RopeScaling>,
}

impl RopeConfig {
    /// Unscaled rotary embeddings with base `theta`.
    pub fn plain(theta: f64) -> Self {
        RopeConfig {
            theta,
            scaling: None,
        }
    }

    /// The LLaMA-3 scaling, if that is the scaling.
    pub fn llama3(&self) -> Option<Llama3Scaling> {
        match self.scaling {
            Some(RopeScaling::Llama3(s)) => Some(s),
            _ => None,
        }
    }

    /// The YaRN scaling, if that is the scaling.
    pub fn yarn(&self) -> Option<YarnScaling> {
        match self.scaling {
            Some(RopeScaling::Yarn(s)) => Some(s),
            _ => None,
        }
    }

    /// What cos and sin are multiplied by (1 but for YaRN).
    pub fn attention_factor(&self) -> f64 {
        self.yarn().map_or(1.0, |y| y.attention_factor)
    }

    /// The rotary object of `config.json` (5.x `rope_parameters`; 4.x `rope_scaling` when scaled).
    pub fn to_hf_json(&self) -> Value {
        let theta = self.theta;
        match self.scaling {
            None => serde_json::json!({"rope_type": "default", "rope_theta": theta}),
            Some(RopeScaling::Linear { factor }) => {
                serde_json::json!({"rope_type": "linear", "rope_theta": theta, "factor": factor})
            }
            Some(RopeScaling::Dynamic { factor, .. }) => {
                serde_json::json!({"rope_type": "dynamic", "rope_theta": theta, "factor": factor})
            }
            Some(RopeScaling::Llama3(s)) => serde_json::json!({
                "rope_type": "llama3", "rope_theta": theta, "factor": s.factor,
                "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            }),
            // The resolved attention factor is written, so that mscale/mscale_all_dim need not be.
            Some(RopeScaling::Yarn(s)) => serde_json::json!({
                "rope_type": "yarn", "rope_theta": theta, "factor": s.factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
                "beta_fast": s.beta_fast, "beta_slow": s.beta_slow, "truncate": s.truncate,
                "attention_factor": s.attention_factor,
            }),
        }
    }
}

/// The keys of `config.json` that decide the rotary settings.
pub struct RopeKeys<'a> {
    pub rope_parameters: &'a Option<Value>,
    pub rope_scaling: &'a Option<Value>,
    pub rope_theta: Option<f64>,
    /// As resolved (2048 when absent, as transformers' LlamaConfig).
    pub max_position_embeddings: usize,
    /// A top-level `original_max_position_embeddings` (Phi-3 style), which transformers puts before the one in
    /// the rotary object.
    pub original_max_position_embeddings: Option<Value>,
}

impl RopeKeys<'_> {
    /// Resolves the rotary settings from either `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x).
    /// When both keys are present, which one transformers reads depends on its version (5.24 prefers
    /// `rope_scaling`): two that disagree are refused rather than one ignored.
    pub fn resolve(&self) -> Result<RopeConfig> {
        let present = |v: &Option<Value>| v.clone().filter(|v| !v.is_null());
        match (present(self.rope_parameters), present(self.rope_scaling)) {
            (Some(p), Some(s)) => {
                let (new, old) = (
                    self.read_object("rope_parameters", Some(&p))?,
                    self.read_object("rope_scaling", Some(&s))?,
                );
                match new == old {
                    true => Ok(new),
                    false => Err(Error::unsupported(
                        "rope_scaling",
                        &s,
                        "disagrees with rope_parameters (transformers versions read different ones)",
                    )),
                }
            }
            (Some(p), None) => self.read_object("rope_parameters", Some(&p)),
            (None, s) => self.read_object("rope_scaling", s.as_ref()),
        }
    }

    /// The rotary settings of one key's object (`None`: unscaled, with `rope_theta`).
    fn read_object(&self, field: &str, params: Option<&Value>) -> Result<RopeConfig> {
        let theta = self.rope_theta.unwrap_or(10000.0);
        let obj = match params {
            Some(Value::Object(o)) => o,
            Some(other) => return Err(Error::unsupported(field, other, "expected an object")),
            None => return Ok(RopeConfig::plain(theta)),
        };
        let keys = Keys { obj, field };
        let theta = keys.number("rope_theta")?.unwrap_or(theta);
        // transformers reads `type` only where `rope_type` is absent.
        let kind = match ["rope_type", "type"]
            .into_iter()
            .find(|k| obj.contains_key(*k))
        {
            None => "default",
            Some(k) => obj[k].as_str().ok_or_else(|| Error::Config {
                field: format!("{field}.{k}"),
                reason: format!("{} is not a string", obj[k]),
            })?,
        };
        let scaling = match kind {
            "default" => return Ok(RopeConfig::plain(theta)),
            "linear" => RopeScaling::Linear {
                factor: keys.required("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: keys.required("factor")?,
                max_position_embeddings: self.max_position_embeddings,
            },
            "llama3" => RopeScaling::Llama3(Llama3Scaling {
                factor: keys.required("factor")?,
                low_freq_factor: keys.required("low_freq_factor")?,
                high_freq_factor: keys.required("high_freq_factor")?,
                original_max_position_embeddings: self.original_positions(&keys)?,
            }),
            "yarn" => RopeScaling::Yarn(self.yarn(&keys)?),
            other => return Err(Error::unsupported(
                &format!("{field}.rope_type"),
                other,
                "only default, linear, dynamic, llama3 and yarn rotary embeddings are supported",
            )),
        };
        Ok(RopeConfig {
            theta,
            scaling: Some(scaling),
        })
    }

    /// transformers: a top-level value first, then the rotary object's, then `max_position_embeddings`.
    fn original_positions(&self, keys: &Keys) -> Result<usize> {
        const KEY: &str = "original_max_position_embeddings";
        match self.original_max_position_embeddings.as_ref() {
            Some(v) => count(v, KEY),
            None => Ok(keys.count(KEY)?.unwrap_or(self.max_position_embeddings)),
        }
    }

    /// transformers 5.x `_compute_yarn_parameters`: a `null` factor is `max_position_embeddings` over the
    /// original length; `beta_*` of 0 or `null` take their defaults; `truncate` defaults to true.
    fn yarn(&self, keys: &Keys) -> Result<YarnScaling> {
        let original = self.original_positions(keys)?;
        let factor = match keys.obj.get("factor") {
            Some(Value::Null) => self.max_position_embeddings as f64 / original as f64,
            _ => keys.required("factor")?,
        };
        let or_default = |key: &str, default: f64| -> Result<f64> {
            Ok(keys.number(key)?.filter(|&b| b != 0.0).unwrap_or(default))
        };
        let mscales = (keys.number("mscale")?, keys.number("mscale_all_dim")?);
        let attention_factor = match (keys.number("attention_factor")?, mscales) {
            (Some(a), _) => a,
            (None, (Some(m), Some(all))) if m != 0.0 && all != 0.0 => {
                YarnScaling::mscale(factor, m) / YarnScaling::mscale(factor, all)
            }
            (None, _) => YarnScaling::mscale(factor, 1.0),
        };
        let truncate = match keys.obj.get("truncate") {
            None => true,
            Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(Error::Config {
                    field: format!("{}.truncate", keys.field),
                    reason: format!("{other} is not true or false"),
                })
            }
        };
        Ok(YarnScaling {
            factor,
            original_max_position_embeddings: original,
            beta_fast: or_default("beta_fast", YarnScaling::BETA_FAST)?,
            beta_slow: or_default("beta_slow", YarnScaling::BETA_SLOW)?,
            truncate,
            attention_factor,
        })
    }
}

/// One rotary object's entries, read with errors naming `field.key`.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    field: &'a str,
}

impl Keys<'_> {
    /// A number, or `None` when absent or `null`.
    fn number(&self, key: &str) -> Result<Option<f64>> {
        match self.obj.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::Config {
                field: format!("{}.{key}", self.field),
                reason: format!("{v} is not a number"),
            }),
        }
    }

    fn required(&self, key: &str) -> Result<f64> {
        self.number(key)?.ok_or_else(|| Error::Config {
            field: format!("{}.{key}", self.field),
            reason: "missing or not a number".into(),
        })
    }

    fn count(&self, key: &str) -> Result<Option<usize>> {
        match self.obj.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => count(v, &format!("{}.{key}", self.field)).map(Some),
        }
    }
}

/// A whole number ≥ 0 (also written as a float, `8192.0`).
fn count(v: &Value, field: &str) -> Result<usize> {
    let whole = |f: f64| (f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53)).then_some(f as u64);
    v.as_u64()
        .or_else(|| v.as_f64().and_then(whole))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::Config {
            field: field.into(),
            reason: format!("{v} is not a whole number ≥ 0"),
        })
}
