//! GGUF v3 output, streamed: [`GgufWriter::header`] lays out metadata and tensor infos (sizes are known from
//! shapes), then each tensor's bytes follow in order, so no more than one tensor is ever held in memory.
//! Uniform models are written as architecture `llama`; per-layer widths as `deci` with per-layer arrays.

use super::llama::{gguf_name, permute_rotary};
use super::quant::{quantize, GgmlType};
use super::reader::{Value, DEFAULT_ALIGNMENT};
use super::{rope_freqs, rope_metadata};
use crate::error::{Error, Result};
use crate::model::tensors::tensor_specs;
use crate::model::{ModelConfig, WeightSource};

/// Storage type of written matrices (vectors are always F32, as llama.cpp's converter writes norms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GgufDtype {
    F32,
    F16,
    Q8_0,
}

impl GgufDtype {
    fn ggml(self) -> GgmlType {
        match self {
            GgufDtype::F32 => GgmlType::F32,
            GgufDtype::F16 => GgmlType::F16,
            GgufDtype::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// One tensor to write: its HF name, PyTorch shape and storage type.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub hf_name: String,
    pub gguf_name: String,
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    pub size: usize,
    /// The values of a tensor the config determines (`rope_freqs.weight`), not read from the weights.
    computed: Option<Vec<f32>>,
}

/// The layout of a GGUF file about to be written.
pub struct GgufWriter {
    pub tensors: Vec<PlannedTensor>,
    header: Vec<u8>,
    head_dim: usize,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            let item_type = items.first().map(type_id).unwrap_or(4);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn padding(len: usize) -> usize {
    len.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT - len
}

/// The architecture metadata of `cfg`: `llama` when every layer agrees, else `deci` with per-layer arrays;
/// refused when llama.cpp could not compute its rotary embeddings.
pub fn architecture_metadata(cfg: &ModelConfig) -> Result<(String, Vec<(String, Value)>)> {
    let arch = if cfg.is_uniform() { "llama" } else { "deci" };
    let k = |s: &str| format!("{arch}.{s}");
    let u = |x: usize| Value::U32(x as u32);
    let per_layer = |f: fn(&crate::model::LayerShape) -> usize| match cfg.is_uniform() {
        true => u(f(&cfg.layers[0])),
        false => Value::Array(cfg.layers.iter().map(|l| Value::I32(f(l) as i32)).collect()),
    };
    let mut meta = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("vocab_size"), u(cfg.vocab_size)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("block_count"), u(cfg.num_layers())),
        (k("feed_forward_length"), per_layer(|l| l.intermediate_size)),
        (k("attention.head_count"), per_layer(|l| l.num_heads)),
        (k("attention.head_count_kv"), per_layer(|l| l.num_kv_heads)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("attention.value_length"), u(cfg.head_dim)),
        (k("rope.dimension_count"), u(cfg.head_dim)),
        (k("rope.freq_base"), Value::F32(cfg.rope.theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
    ];
    meta.extend(rope_metadata::keys(cfg, arch)?);
    Ok((arch.into(), meta))
}

impl GgufWriter {
    /// Plans the file for `cfg`: architecture metadata first, then `extra` (tokenizer, general.*; keys of the
    /// architecture are dropped from it), then tensor infos with their aligned offsets.
    pub fn new(cfg: &ModelConfig, extra: &[(String, Value)], dtype: GgufDtype) -> Result<Self> {
        let (arch, mut meta) = architecture_metadata(cfg)?;
        meta.push((
            "general.alignment".into(),
            Value::U32(DEFAULT_ALIGNMENT as u32),
        ));
        meta.push((
            "general.file_type".into(),
            Value::U32(match dtype {
                GgufDtype::F32 => 0,
                GgufDtype::F16 => 1,
                GgufDtype::Q8_0 => 7,
            }),
        ));
        for (key, v) in extra {
            let ours = key.starts_with("llama.")
                || key.starts_with("deci.")
                || key.starts_with(&format!("{arch}."));
            if !ours && !meta.iter().any(|(k, _)| k == key) {
                meta.push((key.clone(), v.clone()));
            }
        }
        let mut tensors = Vec::new();
        if let Some(scaling) = cfg.rope.llama3() {
            let values = rope_freqs::factors(&cfg.rope, cfg.head_dim);
            // Never a file this reader would refuse.
            rope_freqs::scaling_from_factors(&values, cfg.rope.theta, cfg.head_dim).map_err(
                |e| {
                    Error::unsupported(
                        "rope_scaling",
                        format!("{scaling:?}"),
                        &format!("its GGUF factors would not read back ({e})"),
                    )
                },
            )?;
            tensors.push(PlannedTensor {
                hf_name: rope_freqs::NAME.into(),
                gguf_name: rope_freqs::NAME.into(),
                shape: vec![values.len()],
                ggml_type: GgmlType::F32,
                size: 4 * values.len(),
                computed: Some(values),
            });
        }
        for spec in tensor_specs(cfg) {
            let ggml_type = match (spec.shape.len(), dtype) {
                (1, _) => GgmlType::F32,
                (_, GgufDtype::Q8_0) if spec.shape[1] % 32 != 0 => GgmlType::F16,
                (_, d) => d.ggml(),
            };
            let size = ggml_type
                .bytes_for(spec.numel())
                .expect("block-aligned by construction");
            let gguf = gguf_name(&spec.name)
                .ok_or_else(|| Error::Gguf(format!("no GGUF name for {}", spec.name)))?;
            tensors.push(PlannedTensor {
                hf_name: spec.name,
                gguf_name: gguf,
                shape: spec.shape,
                ggml_type,
                size,
                computed: None,
            });
        }
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in &meta {
            put_str(&mut h, k);
            h.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut h, v);
        }
        let mut offset = 0usize;
        for t in &tensors {
            put_str(&mut h, &t.gguf_name);
            h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in t.shape.iter().rev() {
                h.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.size + padding(t.size);
        }
        h.resize(h.len() + padding(h.len()), 0);
        Ok(Self {
            tensors,
            header: h,
            head_dim: cfg.head_dim,
        })
    }

    /// Header bytes (magic, metadata, tensor infos, padding to the data section).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The bytes of tensor `i`: its values read from `src` (or computed from the config), encoded, rotary rows
    /// permuted, padded to alignment.
    pub fn tensor(&self, i: usize, src: &dyn WeightSource) -> Result<Vec<u8>> {
        let t = &self.tensors[i];
        match &t.computed {
            Some(values) => self.tensor_bytes(i, values),
            None => self.tensor_bytes(i, &src.read_f32(&t.hf_name)?),
        }
    }

    /// The bytes of tensor `i` (values in HF layout), encoded, rotary rows permuted, padded to alignment.
    fn tensor_bytes(&self, i: usize, values: &[f32]) -> Result<Vec<u8>> {
        let t = &self.tensors[i];
        if values.len() != t.shape.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                name: t.hf_name.clone(),
                expected: t.shape.clone(),
                found: vec![values.len()],
            });
        }
        let rotary =
            t.hf_name.contains(".self_attn.q_proj.") || t.hf_name.contains(".self_attn.k_proj.");
        let mut bytes = match rotary {
            true => {
                let cols = if t.shape.len() == 2 { t.shape[1] } else { 1 };
                quantize(
                    t.ggml_type,
                    &permute_rotary(values, cols, self.head_dim, true),
                )
            }
            false => quantize(t.ggml_type, values),
        };
        bytes.resize(bytes.len() + padding(bytes.len()), 0);
        Ok(bytes)
    }
}
