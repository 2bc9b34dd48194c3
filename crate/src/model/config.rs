//! Model configuration: [`HfConfig`] mirrors HF `config.json` field for field (transformers 4.x and 5.x keys),
//! and resolves into [`ModelConfig`], the runtime blueprint with **per-layer** widths.
//!
//! Pruned models differ per layer. Their `config.json` keeps the standard fields (the original model's sizes)
//! and adds the per-layer lists
//! [`PER_LAYER_HEADS`], [`PER_LAYER_KV_HEADS`] and [`PER_LAYER_MLP`]; our loader reads them, and a config
//! whose layers all agree is written as a plain LlamaConfig without them.

use serde::Deserialize;
use serde_json::Value;

use super::rope;
use super::rope_scaling::RopeKeys;
pub use super::rope_scaling::{Llama3Scaling, RopeConfig, RopeScaling, YarnScaling};

use crate::error::{parse_json, Error, Result};

/// Per-layer query head counts of a pruned model (extension key of `config.json`).
pub const PER_LAYER_HEADS: &str = "num_attention_heads_per_layer";
/// Per-layer KV head counts of a pruned model (extension key of `config.json`).
pub const PER_LAYER_KV_HEADS: &str = "num_key_value_heads_per_layer";
/// Per-layer MLP widths of a pruned model (extension key of `config.json`).
pub const PER_LAYER_MLP: &str = "intermediate_size_per_layer";

/// The most decoder layers a config may name (the deepest LLaMA-family models have about 130), checked before
/// per-layer lists are built.
pub const MAX_LAYERS: usize = 1 << 16;
/// The widest head a config may name (real models have 64 to 256), checked before rotary tables are built.
const MAX_HEAD_DIM: usize = 1 << 16;
/// The most parameters a config may imply (10¹⁴); beyond it the sizes are garbage (or overflow).
const MAX_PARAMS: u128 = 100_000_000_000_000;

/// Refuses a layer count beyond [`MAX_LAYERS`] before anything is allocated per layer.
pub fn check_layer_count(n: usize, field: &str) -> Result<()> {
    match n {
        0 => Err(Error::Config {
            field: field.into(),
            reason: "is 0: a model needs at least one decoder layer".into(),
        }),
        n if n > MAX_LAYERS => Err(Error::Config {
            field: field.into(),
            reason: format!("is {n}, beyond any model (at most {MAX_LAYERS})"),
        }),
        _ => Ok(()),
    }
}

/// The HF `config.json` of a LLaMA-family model, as written by transformers 4.x or 5.x.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    /// Defaults to `num_attention_heads` (MHA).
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub hidden_act: Option<String>,
    pub rms_norm_eps: Option<f64>,
    /// transformers 4.x: rotary base.
    pub rope_theta: Option<f64>,
    /// transformers 4.x: rotary scaling (`{"rope_type"|"type": "linear" | "dynamic" | "llama3" | "yarn", …}`).
    pub rope_scaling: Option<Value>,
    /// transformers 5.x: `{"rope_theta": …, "rope_type": …, …}` replaces both keys above.
    pub rope_parameters: Option<Value>,
    pub max_position_embeddings: Option<usize>,
    /// Top-level pretraining length (Phi-3 style); transformers prefers it for llama3 and yarn scaling.
    pub original_max_position_embeddings: Option<Value>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
    pub sliding_window: Option<Value>,
    pub use_sliding_window: Option<bool>,
    pub partial_rotary_factor: Option<f64>,
    pub num_local_experts: Option<Value>,
    pub num_experts: Option<Value>,
    #[serde(rename = "num_attention_heads_per_layer")]
    pub heads_per_layer: Option<Vec<usize>>,
    #[serde(rename = "num_key_value_heads_per_layer")]
    pub kv_heads_per_layer: Option<Vec<usize>>,
    #[serde(rename = "intermediate_size_per_layer")]
    pub mlp_per_layer: Option<Vec<usize>>,
}

/// The widths of one decoder layer. Heads are `head_dim` wide; `num_heads % num_kv_heads == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
}

impl LayerShape {
    /// Query heads per KV head (`n_rep` of HF `repeat_kv`).
    pub fn n_rep(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

/// The resolved runtime configuration: what the model code reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (llama `attention_bias`, always on qwen2).
    pub qkv_bias: bool,
    /// Bias on o_proj (llama `attention_bias`).
    pub o_bias: bool,
    /// Biases on gate/up/down (`mlp_bias`).
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// One entry per decoder layer.
    pub layers: Vec<LayerShape>,
}

fn required<T: Copy>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| Error::Config {
        field: field.into(),
        reason: "missing".into(),
    })
}

fn first_id(v: &Option<Value>) -> Option<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

fn per_layer(list: &Option<Vec<usize>>, key: &str, uniform: usize, n: usize) -> Result<Vec<usize>> {
    match list {
        None => Ok(vec![uniform; n]),
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(Error::Config {
            field: key.into(),
            reason: format!("has {} entries but num_hidden_layers is {n}", v.len()),
        }),
    }
}

impl HfConfig {
    /// Parses `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        parse_json(bytes, "config.json")
    }

    /// Checks that the model is a plain LLaMA block stack and resolves the runtime configuration.
    pub fn resolve(&self) -> Result<ModelConfig> {
        let model_type = self.model_type.clone().unwrap_or_default();
        if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(Error::unsupported(
                "model_type",
                format!("{model_type:?}"),
                "prunelab supports the LLaMA family: llama, mistral, qwen2",
            ));
        }
        let act = self.hidden_act.as_deref().unwrap_or("silu");
        if act != "silu" {
            return Err(Error::unsupported(
                "hidden_act",
                act,
                "only SwiGLU (silu) MLPs are supported",
            ));
        }
        if let Some(w) = self.sliding_window.as_ref().filter(|w| !w.is_null()) {
            let active = model_type != "qwen2" || self.use_sliding_window.unwrap_or(false);
            if active {
                return Err(Error::unsupported(
                    "sliding_window",
                    w,
                    "sliding-window attention is not supported",
                ));
            }
        }
        for (field, v) in [
            ("num_local_experts", &self.num_local_experts),
            ("num_experts", &self.num_experts),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_null() && v.as_u64() != Some(0)) {
                return Err(Error::unsupported(
                    field,
                    v,
                    "mixture-of-experts models are not supported",
                ));
            }
        }
        if let Some(f) = self.partial_rotary_factor.filter(|f| *f != 1.0) {
            return Err(Error::unsupported(
                "partial_rotary_factor",
                f,
                "only full rotary embeddings are supported",
            ));
        }
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let num_layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        check_layer_count(num_layers, "num_hidden_layers")?;
        let num_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        let intermediate = required(self.intermediate_size, "intermediate_size")?;
        let vocab_size = required(self.vocab_size, "vocab_size")?;
        if num_heads == 0 || hidden_size == 0 || vocab_size == 0 {
            return Err(Error::Config {
                field: "hidden_size/num_attention_heads/vocab_size".into(),
                reason: "must be positive".into(),
            });
        }
        let head_dim = self.head_dim.unwrap_or(hidden_size / num_heads);
        let heads = per_layer(
            &self.heads_per_layer,
            PER_LAYER_HEADS,
            num_heads,
            num_layers,
        )?;
        let kv = per_layer(
            &self.kv_heads_per_layer,
            PER_LAYER_KV_HEADS,
            num_kv_heads,
            num_layers,
        )?;
        let mlp = per_layer(&self.mlp_per_layer, PER_LAYER_MLP, intermediate, num_layers)?;
        let layers = (heads.iter().zip(&kv).zip(&mlp))
            .map(|((&h, &k), &m)| LayerShape {
                num_heads: h,
                num_kv_heads: k,
                intermediate_size: m,
            })
            .collect();
        let attention_bias = self.attention_bias.unwrap_or(false);
        let max_position_embeddings = self.max_position_embeddings.unwrap_or(2048);
        let cfg = ModelConfig {
            qkv_bias: attention_bias || model_type == "qwen2",
            o_bias: attention_bias && model_type != "qwen2",
            mlp_bias: self.mlp_bias.unwrap_or(false),
            model_type,
            vocab_size,
            hidden_size,
            head_dim,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            rope: RopeKeys {
                rope_parameters: &self.rope_parameters,
                rope_scaling: &self.rope_scaling,
                rope_theta: self.rope_theta,
                max_position_embeddings,
                original_max_position_embeddings: self.original_max_position_embeddings.clone(),
            }
            .resolve()?,
            max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            bos_token_id: first_id(&self.bos_token_id),
            eos_token_id: first_id(&self.eos_token_id),
            layers,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl ModelConfig {
    /// Parses and resolves `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        HfConfig::from_json(bytes)?.resolve()
    }

    /// Checks what every loader (HF config, GGUF metadata) must guarantee before a model is built: positive
    /// widths (every layer's MLP included), query heads shared evenly by KV heads, an even `head_dim`, finite
    /// positive rotary and norm constants, and a parameter count that is a size rather than garbage.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(Error::Config {
                field: field.into(),
                reason,
            })
        };
        check_layer_count(self.num_layers(), "num_hidden_layers")?;
        if self.hidden_size == 0 || self.vocab_size == 0 {
            return bad(
                "hidden_size/vocab_size",
                format!(
                    "must be positive (got {} / {})",
                    self.hidden_size, self.vocab_size
                ),
            );
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(Error::unsupported(
                "head_dim",
                self.head_dim,
                "rotary embeddings need an even head_dim",
            ));
        }
        for (i, s) in self.layers.iter().enumerate() {
            let (h, k) = (s.num_heads, s.num_kv_heads);
            if k == 0 || h == 0 || h % k != 0 {
                return bad(
                    &format!("layer {i} heads"),
                    format!("{h} query heads cannot be shared evenly by {k} KV heads"),
                );
            }
            if s.intermediate_size == 0 {
                return bad(
                    &format!("layer {i} intermediate_size"),
                    "is 0: an MLP needs at least one channel".into(),
                );
            }
        }
        let (theta, eps) = (self.rope.theta, self.rms_norm_eps);
        if !(theta > 0.0 && theta.is_finite()) {
            return bad("rope_theta", format!("{theta} is not a finite number > 0"));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return bad("rms_norm_eps", format!("{eps} is not a finite number ≥ 0"));
        }
        if let Some(reason) = self
            .rope
            .scaling
            .and_then(|s| s.invalid_reason(theta, self.head_dim))
        {
            return bad("rope_scaling", reason);
        }
        if let Some(RopeScaling::Dynamic {
            max_position_embeddings: m,
            ..
        }) = self.rope.scaling
        {
            if m != self.max_position_embeddings {
                return bad(
                    "rope_scaling",
                    format!(
                        "dynamic grows from {m} positions but max_position_embeddings is {}",
                        self.max_position_embeddings
                    ),
                );
            }
        }
        match self.checked_params() {
            Some(p) if p <= MAX_PARAMS => {}
            p => {
                return bad(
                    "hidden_size/intermediate_size/head_dim/vocab_size",
                    format!(
                        "imply {} parameters, beyond any model (at most {MAX_PARAMS})",
                        p.map_or("more than 2^128".into(), |p| p.to_string())
                    ),
                )
            }
        }
        if self.head_dim > MAX_HEAD_DIM {
            return bad(
                "head_dim",
                format!(
                    "is {}, beyond any model (at most {MAX_HEAD_DIM})",
                    self.head_dim
                ),
            );
        }
        // The tables are f32: a frequency or attention factor beyond it would make every angle NaN.
        let f32_finite = |x: f64| (x as f32).is_finite();
        let freqs = rope::inv_freq(&self.rope, self.head_dim, 0);
        if !(freqs.iter().all(|&f| f32_finite(f)) && f32_finite(self.rope.attention_factor())) {
            return bad(
                "rope_theta/rope_scaling",
                format!(
                    "give rotary frequencies up to {:e} and an attention factor of {:e}, beyond f32",
                    freqs.iter().fold(0f64, |a, &b| a.max(b)),
                    self.rope.attention_factor()
                ),
            );
        }
        Ok(())
    }

    /// The parameter count in wide arithmetic (`None` past `u128`), for [`Self::validate`].
    fn checked_params(&self) -> Option<u128> {
        let w = |x: usize| x as u128;
        let (d, hd) = (w(self.hidden_size), w(self.head_dim));
        let embed = w(self.vocab_size).checked_mul(d)?.checked_mul(2)?;
        self.layers.iter().try_fold(embed, |acc, s| {
            let q = w(s.num_heads).checked_mul(hd)?;
            let kv = w(s.num_kv_heads).checked_mul(hd)?;
            let attn = q.checked_add(kv)?.checked_mul(d)?.checked_mul(2)?;
            let mlp = w(s.intermediate_size).checked_mul(d)?.checked_mul(3)?;
            acc.checked_add(attn)?.checked_add(mlp)
        })
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The widest layer's MLP width (0 without layers).
    pub fn widest_intermediate(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.intermediate_size)
            .max()
            .unwrap_or(0)
    }

    /// Whether every layer has the same widths (then the output is a standard LlamaConfig).
    pub fn is_uniform(&self) -> bool {
        self.layers.windows(2).all(|w| w[0] == w[1])
    }

    /// Writes `config.json` for this configuration. `base` is the original document: fields we do not model
    /// (`architectures`, `torch_dtype`, …) are carried over; the widths are replaced by ours. When the layers
    /// differ, the standard width fields keep the original model's sizes (those of `base`, which a pruned input
    /// carries over from its own original), or the largest width where `base` has none or a smaller one.
    pub fn to_hf_json(&self, base: Option<&Value>) -> Value {
        let mut m = base.and_then(Value::as_object).cloned().unwrap_or_default();
        let first = self.layers.first().copied().unwrap_or(LayerShape {
            num_heads: 1,
            num_kv_heads: 1,
            intermediate_size: 0,
        });
        // `keys` in order of precedence: an original without `num_key_value_heads` has one per query head.
        let original = |keys: &[&str], f: fn(&LayerShape) -> usize| {
            let largest = self.layers.iter().map(f).max().unwrap_or(0);
            let given = keys.iter().find_map(|k| m.get(*k).and_then(Value::as_u64));
            given
                .map(|v| v as usize)
                .filter(|&v| v >= largest)
                .unwrap_or(largest)
        };
        let (heads, kv, mlp) = if self.is_uniform() {
            (first.num_heads, first.num_kv_heads, first.intermediate_size)
        } else {
            (
                original(&["num_attention_heads"], |l| l.num_heads),
                original(&["num_key_value_heads", "num_attention_heads"], |l| {
                    l.num_kv_heads
                }),
                original(&["intermediate_size"], |l| l.intermediate_size),
            )
        };
        let mut set = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        set("model_type", self.model_type.clone().into());
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("head_dim", self.head_dim.into());
        set("num_hidden_layers", self.num_layers().into());
        set("num_attention_heads", heads.into());
        set("num_key_value_heads", kv.into());
        set("intermediate_size", mlp.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set(
            "max_position_embeddings",
            self.max_position_embeddings.into(),
        );
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set("mlp_bias", self.mlp_bias.into());
        if self.model_type != "qwen2" {
            set("attention_bias", self.qkv_bias.into());
        }
        set("hidden_act", "silu".into());
        let theta = self.rope.theta;
        let rope = self.rope.to_hf_json();
        // Both spellings, so that transformers 4.x and 5.x read the same rotary settings.
        set("rope_theta", theta.into());
        set(
            "rope_scaling",
            match self.rope.scaling {
                Some(_) => rope.clone(),
                None => Value::Null,
            },
        );
        set("rope_parameters", rope);
        for key in [PER_LAYER_HEADS, PER_LAYER_KV_HEADS, PER_LAYER_MLP] {
            m.remove(key);
        }
        // transformers checks `layer_types` against the layer count; every model we read has full attention in
        // each layer (sliding windows are refused), so the list keeps its one value at the new length.
        if let Some(Value::Array(types)) = m.get("layer_types").cloned() {
            if let Some(first) = types.first().filter(|t| types.iter().all(|x| x == *t)) {
                let types = vec![first.clone(); self.num_layers()];
                m.insert("layer_types".into(), Value::from(types));
            }
        }
        if !self.is_uniform() {
            let list = |f: fn(&LayerShape) -> usize| {
                Value::from(self.layers.iter().map(f).collect::<Vec<_>>())
            };
            m.insert(PER_LAYER_HEADS.into(), list(|l| l.num_heads));
            m.insert(PER_LAYER_KV_HEADS.into(), list(|l| l.num_kv_heads));
            m.insert(PER_LAYER_MLP.into(), list(|l| l.intermediate_size));
        }
        Value::Object(m)
    }
}
