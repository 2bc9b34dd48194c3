//! Safetensors output, streamed and sharded: the layout (header with every offset) is computed from shapes,
//! then tensors are encoded one at a time. The safetensors crate serialises only whole in-memory collections,
//! so this small writer exists to keep one tensor in memory at a time (a 7B export, a download built in a
//! browser tab); files it writes are read back by the crate in the tests.

use std::collections::BTreeMap;

use burn::tensor::{Bytes, DType, TensorData};
use serde_json::json;

use crate::error::Result;
use crate::model::ModelConfig;

#[cfg(target_endian = "big")]
compile_error!("the safetensors writer hands out native bytes as little-endian ones");

/// Storage type of written tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StDtype {
    F32,
    F16,
    BF16,
}

impl StDtype {
    fn name(self) -> &'static str {
        match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
        }
    }
    fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            _ => 2,
        }
    }
    /// The same type in burn's terms.
    pub fn burn_dtype(self) -> DType {
        match self {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
        }
    }
    /// The little-endian bytes of `data` in this type (tensor data holds native values, and every target prunelab
    /// builds for is little-endian: x86-64, AArch64, wasm32): its own bytes when it already is of this type (a bf16
    /// tensor read back from a bf16 device is written without a conversion), converted (rounded to nearest)
    /// otherwise.
    pub fn encode(self, data: TensorData) -> Bytes {
        data.convert_dtype(self.burn_dtype()).into_bytes()
    }
}

/// One output file: its name, header bytes and the tensors (HF names) whose data follow, in order.
#[derive(Debug, Clone)]
pub struct Shard {
    pub file: String,
    pub header: Vec<u8>,
    pub tensors: Vec<String>,
}

/// The layout of a (possibly sharded) safetensors checkpoint.
#[derive(Debug, Clone)]
pub struct SafetensorsLayout {
    pub shards: Vec<Shard>,
    pub dtype: StDtype,
    /// `model.safetensors.index.json` when there is more than one shard.
    pub index: Option<Vec<u8>>,
}

impl SafetensorsLayout {
    /// Lays out `tensors` (`(HF name, shape)`, in write order) in shards of at most `max_shard_bytes` of data
    /// (one file named `model.safetensors` when everything fits).
    pub fn new(
        tensors: &[(String, Vec<usize>)],
        dtype: StDtype,
        max_shard_bytes: usize,
    ) -> Result<Self> {
        let mut groups: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
        let mut used = 0usize;
        for (name, shape) in tensors {
            let bytes = shape.iter().product::<usize>() * dtype.size();
            if used > 0 && used + bytes > max_shard_bytes {
                groups.push(vec![]);
                used = 0;
            }
            used += bytes;
            groups
                .last_mut()
                .expect("non-empty")
                .push((name.clone(), shape.clone()));
        }
        let n = groups.len();
        let mut shards = Vec::with_capacity(n);
        let mut weight_map = BTreeMap::new();
        let mut total = 0usize;
        for (i, group) in groups.into_iter().enumerate() {
            let file = match n {
                1 => "model.safetensors".to_string(),
                _ => format!("model-{:05}-of-{:05}.safetensors", i + 1, n),
            };
            let mut header = serde_json::Map::new();
            header.insert("__metadata__".into(), json!({"format": "pt"}));
            let mut offset = 0usize;
            for (name, shape) in &group {
                let bytes = shape.iter().product::<usize>() * dtype.size();
                header.insert(name.clone(), json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + bytes]}));
                offset += bytes;
                weight_map.insert(name.clone(), file.clone());
            }
            total += offset;
            let mut text = serde_json::to_vec(&header).expect("serialisable");
            // The data section starts 8-byte aligned (the header is padded with spaces, as the format allows).
            text.resize((text.len() + 8).div_ceil(8) * 8 - 8, b' ');
            let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&text);
            shards.push(Shard {
                file,
                header: bytes,
                tensors: group.into_iter().map(|(n, _)| n).collect(),
            });
        }
        let index = (n > 1).then(|| {
            serde_json::to_vec_pretty(
                &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
            )
            .expect("serialisable")
        });
        Ok(Self {
            shards,
            dtype,
            index,
        })
    }
}

/// The `config.json` of an HF folder written with `dtype` weights (fields of `base` that prunelab does not
/// model are kept).
pub fn hf_config(
    cfg: &ModelConfig,
    base: Option<&serde_json::Value>,
    dtype: StDtype,
) -> serde_json::Value {
    let mut config = cfg.to_hf_json(base);
    config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    config["torch_dtype"] = serde_json::json!(match dtype {
        StDtype::F32 => "float32",
        StDtype::F16 => "float16",
        StDtype::BF16 => "bfloat16",
    });
    if let Some(id) = cfg.bos_token_id {
        config["bos_token_id"] = id.into();
    }
    if let Some(id) = cfg.eos_token_id {
        config["eos_token_id"] = id.into();
    }
    config
}
