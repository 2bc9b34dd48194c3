//! The model files the page hands over: an HF folder's files (small JSON files as bytes, weight shards read by
//! byte ranges) or one `.gguf`. `Blob`s (and `File`s) are read with `Blob.slice` + `FileReaderSync`, so a file is
//! never copied whole into wasm memory.

use prunelab::error::{parse_json, Error, Result};
use prunelab::io::gguf::metadata::carried;
use prunelab::io::gguf::reader::Value;
use prunelab::io::gguf::tokenizer::tokenizer_json;
use prunelab::io::gguf::GgufModel;
use prunelab::io::ranges::ByteRanges;
use prunelab::io::safetensors_ranges::RangedSafetensors;
use prunelab::io::side_files::{chat_template, hf_side_files, stop_ids, SideFile};
use prunelab::model::params::count_params;
use prunelab::model::weights::check_inventory;
use prunelab::model::{ModelConfig, WeightSource};
use wasm_bindgen::JsCast;

/// A `Blob` (an uploaded `File`, or parts the page assembled) read by byte ranges.
pub struct BlobRanges {
    pub name: String,
    pub blob: web_sys::Blob,
}

impl ByteRanges for BlobRanges {
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let fail = |what: &str, e: wasm_bindgen::JsValue| {
            Error::Invalid(format!("reading {}: {what} failed ({e:?})", self.name))
        };
        let part = self
            .blob
            .slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)
            .map_err(|e| fail("slice", e))?;
        let reader = web_sys::FileReaderSync::new().map_err(|e| fail("FileReaderSync", e))?;
        let buf = reader
            .read_as_array_buffer(&part)
            .map_err(|e| fail("read", e))?;
        Ok(js_sys::Uint8Array::new(buf.unchecked_ref()).to_vec())
    }
}

/// One weight file: uploaded (read by ranges) or already in memory (the demo, fetched from the page's origin).
pub enum Data {
    Blob(BlobRanges),
    Bytes(Vec<u8>),
}

impl ByteRanges for Data {
    fn size(&self) -> u64 {
        match self {
            Data::Blob(b) => b.size(),
            Data::Bytes(b) => b.len() as u64,
        }
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            Data::Blob(b) => b.read(offset, len),
            Data::Bytes(b) => b.as_slice().read(offset, len),
        }
    }
}

enum Weights {
    /// `*.safetensors` shards by file name.
    Safetensors(Vec<(String, Data)>),
    Gguf(Data),
}

/// A model's files.
pub struct ModelFiles {
    pub config: ModelConfig,
    /// The input's `config.json` (fields prunelab does not model are carried to the output); none for GGUF.
    pub base_config: Option<serde_json::Value>,
    /// `tokenizer.json` bytes: uploaded, or built from a GGUF's metadata.
    pub tokenizer: Option<Vec<u8>>,
    /// A GGUF input's general.* and tokenizer.* metadata, kept for GGUF downloads.
    pub gguf_metadata: Vec<(String, Value)>,
    /// The tokenizer and generation files of an HF upload (`tokenizer_config.json`, …), or made from a GGUF's
    /// metadata: they go into the zip download, and their chat template into a GGUF download.
    pub side_files: Vec<SideFile>,
    weights: Weights,
    /// Bytes of the largest tensor in f32 and of all tensors in f32 (what the device must hold).
    pub largest_tensor: u64,
    pub total_f32: u64,
}

impl ModelFiles {
    /// An HF folder's files: `config.json`, optional `tokenizer.json`, side files, and the weight shards.
    pub fn hf(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        side_files: Vec<SideFile>,
        shards: Vec<(String, Data)>,
    ) -> Result<Self> {
        let cfg = ModelConfig::from_json(config)?;
        let base_config = parse_json(config, "config.json")?;
        if let Some(t) = &tokenizer {
            prunelab::io::Tokenizer::from_json(t)?;
        }
        // The side files are read when the model generates: a garbled one is named at the upload.
        chat_template(&side_files)?;
        stop_ids(&cfg, Some(&base_config), &side_files)?;
        Self {
            config: cfg,
            base_config: Some(base_config),
            tokenizer,
            gguf_metadata: vec![],
            side_files,
            weights: Weights::Safetensors(shards),
            largest_tensor: 0,
            total_f32: 0,
        }
        .checked()
    }

    /// One `.gguf` file: config, tokenizer and metadata from its header.
    pub fn gguf(data: Data) -> Result<Self> {
        let model = GgufModel::open(&data)?;
        let tokenizer = match model.file.get("tokenizer.ggml.model") {
            Some(_) => Some(tokenizer_json(&model.file)?),
            None => None,
        };
        let (config, gguf_metadata) = (model.config, carried(&model.file));
        let side_files = hf_side_files(&gguf_metadata, tokenizer.as_ref());
        let tokenizer = tokenizer.map(|t| t.to_string().into_bytes());
        Self {
            config,
            base_config: None,
            tokenizer,
            gguf_metadata,
            side_files,
            weights: Weights::Gguf(data),
            largest_tensor: 0,
            total_f32: 0,
        }
        .checked()
    }

    /// A run's pruned model, which the page assembled from the run's parts (its `config.json` bytes and
    /// `model.safetensors` as a `Blob`): this model's tokenizer with the pruned weights.
    pub fn pruned(&self, config: &[u8], weights: web_sys::Blob) -> Result<Self> {
        let name = "model.safetensors".to_string();
        let weights = Data::Blob(BlobRanges {
            name: name.clone(),
            blob: weights,
        });
        Self::hf(
            config,
            self.tokenizer.clone(),
            vec![],
            vec![(name, weights)],
        )
    }

    /// Checks names and shapes against the config and records tensor sizes.
    fn checked(mut self) -> Result<Self> {
        let sizes: Vec<u64> = self.with_source(|src| {
            check_inventory(&self.config, src)?;
            Ok(src
                .inventory()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
                .collect())
        })?;
        self.largest_tensor = sizes.iter().copied().max().unwrap_or(0);
        self.total_f32 = sizes.iter().sum();
        Ok(self)
    }

    /// Runs `f` on the weights (headers are read again each time: they are small).
    pub fn with_source<R>(&self, f: impl FnOnce(&dyn WeightSource) -> Result<R>) -> Result<R> {
        match &self.weights {
            Weights::Safetensors(files) => {
                let ranges = files.iter().map(|(n, d)| (n.clone(), d)).collect();
                f(&RangedSafetensors::open(ranges)?)
            }
            Weights::Gguf(data) => f(&GgufModel::open(data)?),
        }
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "config": self.config,
            "params": count_params(&self.config),
            "largest_tensor_bytes": self.largest_tensor,
            "total_f32_bytes": self.total_f32,
            "has_tokenizer": self.tokenizer.is_some(),
            "has_chat_template": matches!(chat_template(&self.side_files), Ok(Some(_))),
            "format": match self.weights { Weights::Safetensors(_) => "safetensors", Weights::Gguf(_) => "gguf" },
        })
    }
}
