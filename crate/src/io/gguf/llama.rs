//! The `llama` (uniform layers), `deci` (per-layer widths) and `qwen2` (read only) GGUF architectures ↔ our
//! config and HF tensor names, and llama.cpp's rotary row permutation of `q_proj` / `k_proj`, which `llama` and
//! `deci` files carry and `qwen2` files do not (llama.cpp rotates their halves as HF does).

use burn::tensor::TensorData;

use super::reader::{GgufFile, GgufHeader, Value};
use super::{rope_freqs, rope_metadata};
use crate::error::{Error, Result};
use crate::io::ranges::ByteRanges;
use crate::model::config::{check_layer_count, LayerShape, RopeConfig, RopeScaling};
use crate::model::{ModelConfig, WeightSource};

/// GGUF ↔ HF names of the tensors outside decoder layers.
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF ↔ HF suffixes of decoder-layer tensors (`blk.N.` ↔ `model.layers.N.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_output.bias", "self_attn.o_proj.bias"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_gate.bias", "mlp.gate_proj.bias"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_up.bias", "mlp.up_proj.bias"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("ffn_down.bias", "mlp.down_proj.bias"),
];

/// The HF name of a GGUF tensor.
pub fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    // Only the canonical spelling: `blk.00` or `blk.+0` would be a second name for `blk.0`.
    let layer: usize = layer
        .parse()
        .ok()
        .filter(|n: &usize| n.to_string() == layer)?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The GGUF name of an HF tensor.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// Whether an HF tensor is a query or key projection (weight or bias), whose rows llama.cpp permutes.
fn is_rotary(hf: &str) -> bool {
    hf.starts_with("model.layers.")
        && (hf.contains(".self_attn.q_proj.") || hf.contains(".self_attn.k_proj."))
}

/// llama.cpp's converter interleaves the two rotary halves of every head's rows
/// (`convert_hf_to_gguf.py: LlamaModel.permute`): GGUF row `h·d + 2i + j` is HF row `h·d + j·d/2 + i`.
/// `data` is `[rows, cols]` row-major with `rows = heads · head_dim`; `to_gguf` picks the direction.
pub fn permute_rotary(data: &[f32], cols: usize, head_dim: usize, to_gguf: bool) -> Vec<f32> {
    let rows = data.len() / cols;
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let (head, within) = (r / head_dim, r % head_dim);
        let (i, j) = (within / 2, within % 2);
        let gguf_row = r;
        let hf_row = head * head_dim + j * half + i;
        let (src, dst) = if to_gguf {
            (hf_row, gguf_row)
        } else {
            (gguf_row, hf_row)
        };
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
    }
    out
}

fn missing(key: &str) -> Error {
    Error::Gguf(format!("missing metadata {key}"))
}

/// A value that is either one number for every layer or an array with one entry per layer.
fn per_layer(file: &GgufHeader, key: &str, n: usize) -> Result<Vec<usize>> {
    let v = file.get(key).ok_or_else(|| missing(key))?;
    match v {
        Value::Array(items) => {
            if items.len() != n {
                return Err(Error::Gguf(format!(
                    "{key} has {} entries for {n} layers",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| Error::Gguf(format!("{key}: {x:?} is not a count")))
                })
                .collect()
        }
        v => Ok(vec![
            v.as_u64()
                .ok_or_else(|| Error::Gguf(format!("{key}: {v:?} is not a count")))?
                as usize;
            n
        ]),
    }
}

/// A LLaMA-family model inside a GGUF file: its config and its weights under HF names (dequantised to f32,
/// rotary permutation undone).
pub struct GgufModel<R> {
    pub file: GgufFile<R>,
    pub config: ModelConfig,
    /// `llama`, `deci` or `qwen2`.
    pub architecture: String,
}

/// The architectures read; outputs are written as the first two.
const ARCHITECTURES: [&str; 3] = ["llama", "deci", "qwen2"];

impl<'a> GgufModel<&'a [u8]> {
    /// Parses a file held in memory (or mapped).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::open(bytes)
    }
}

impl<R: ByteRanges> GgufModel<R> {
    /// Reads the header of `data` and maps the `llama` / `deci` / `qwen2` metadata to a config.
    pub fn open(data: R) -> Result<Self> {
        let file = GgufFile::open(data)?;
        let arch = file
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("general.architecture"))?
            .to_string();
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(Error::unsupported(
                "general.architecture",
                arch,
                "prunelab reads the GGUF architectures llama, deci and qwen2",
            ));
        }
        let qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
        if arch == "qwen2" && !qkv_bias {
            return Err(Error::Gguf(
                "a qwen2 file without blk.0.attn_q.bias: Qwen2 has q/k/v biases".into(),
            ));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let count = |k: &str| -> Result<usize> {
            let k = key(k);
            let v = file.get(&k).ok_or_else(|| missing(&k))?;
            v.as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| Error::Gguf(format!("{k} = {v:?} is not a count")))
        };
        if let Some(n) = file
            .get(&key("expert_count"))
            .filter(|v| v.as_u64() != Some(0))
        {
            return Err(Error::Unsupported {
                field: key("expert_count"),
                value: format!("{n:?}"),
                reason: "mixture-of-experts models are not supported".into(),
            });
        }
        let hidden = count("embedding_length")?;
        let n_layers = count("block_count")?;
        check_layer_count(n_layers, &key("block_count"))?;
        let heads = per_layer(&file, &key("attention.head_count"), n_layers)?;
        let kv = match file.get(&key("attention.head_count_kv")) {
            Some(_) => per_layer(&file, &key("attention.head_count_kv"), n_layers)?,
            None => heads.clone(),
        };
        let mlp = per_layer(&file, &key("feed_forward_length"), n_layers)?;
        let max_heads = heads.iter().copied().max().unwrap_or(0);
        let head_dim = match file
            .get(&key("attention.key_length"))
            .and_then(Value::as_u64)
        {
            Some(d) => d as usize,
            None if max_heads > 0 => hidden / max_heads,
            None => {
                return Err(Error::Gguf(format!(
                    "{} is zero in every layer",
                    key("attention.head_count")
                )))
            }
        };
        if let Some(rot) = file
            .get(&key("rope.dimension_count"))
            .and_then(Value::as_u64)
        {
            if rot as usize != head_dim {
                return Err(Error::Unsupported {
                    field: key("rope.dimension_count"),
                    value: rot.to_string(),
                    reason: format!(
                        "partial rotary embeddings (head_dim is {head_dim}) are not supported"
                    ),
                });
            }
        }
        let theta = file
            .get(&key("rope.freq_base"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let max_position_embeddings = count("context_length").unwrap_or(2048);
        let scaling = rope_metadata::read(&file, &arch, max_position_embeddings)?;
        let layers = (0..n_layers)
            .map(|l| LayerShape {
                num_heads: heads[l],
                num_kv_heads: kv[l],
                intermediate_size: mlp[l],
            })
            .collect();
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::MissingTensor {
                name: "token_embd.weight".into(),
                expected: vec![],
            })?;
        let vocab_size = match file.get(&key("vocab_size")).and_then(Value::as_u64) {
            Some(v) => v as usize,
            None => embd.shape()[0],
        };
        let token_id = |k: &str| file.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let mut config = ModelConfig {
            model_type: match arch.as_str() {
                "qwen2" => "qwen2",
                _ => "llama",
            }
            .into(),
            vocab_size,
            hidden_size: hidden,
            head_dim,
            rms_norm_eps: file
                .get(&key("attention.layer_norm_rms_epsilon"))
                .and_then(Value::as_f64)
                .ok_or_else(|| missing(&key("attention.layer_norm_rms_epsilon")))?,
            rope: RopeConfig {
                theta,
                scaling: scaling.as_ref().map(|&(_, s)| s),
            },
            max_position_embeddings,
            tie_word_embeddings: file.tensor("output.weight").is_none(),
            qkv_bias,
            o_bias: file.tensor("blk.0.attn_output.bias").is_some(),
            mlp_bias: file.tensor("blk.0.ffn_up.bias").is_some(),
            bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
            eos_token_id: token_id("tokenizer.ggml.eos_token_id"),
            layers,
        };
        config.validate()?;
        // Read once the config is known to be sane (theta, head_dim).
        let llama3 = match file.tensor(rope_freqs::NAME) {
            Some(info) if info.shape() != [head_dim / 2] => {
                return Err(Error::Gguf(format!(
                    "{} has shape {:?}, expected [{}] (head_dim / 2)",
                    rope_freqs::NAME,
                    info.shape(),
                    head_dim / 2
                )))
            }
            Some(info) => rope_freqs::scaling_from_factors(&file.read_f32(info)?, theta, head_dim)?,
            None => None,
        };
        if let Some(l3) = llama3 {
            if let Some((name, s)) = scaling {
                return Err(Error::Unsupported {
                    field: name,
                    value: format!("{s} beside {}", rope_freqs::NAME),
                    reason: "scaling on top of per-frequency factors is not supported".into(),
                });
            }
            config.rope.scaling = Some(RopeScaling::Llama3(l3));
        }
        config.validate()?;
        Ok(Self {
            file,
            config,
            architecture: arch,
        })
    }
}

impl<R: ByteRanges> WeightSource for GgufModel<R> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.file
            .tensors
            .iter()
            .filter(|t| t.name != rope_freqs::NAME)
            .map(|t| {
                (
                    hf_name(&t.name).unwrap_or_else(|| t.name.clone()),
                    t.shape(),
                )
            })
            .collect()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        let gguf = gguf_name(name).unwrap_or_else(|| name.to_string());
        let info = self
            .file
            .tensor(&gguf)
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                expected: vec![],
            })?;
        let data = self.file.read_f32(info)?;
        let data = match is_rotary(name) && self.architecture != "qwen2" {
            true => {
                let cols = if info.dims.len() == 2 {
                    info.dims[0] as usize
                } else {
                    1
                };
                permute_rotary(&data, cols, self.config.head_dim, false)
            }
            false => data,
        };
        Ok(TensorData::new(data, info.shape()))
    }
}
