//! The model files the page hands over: small JSON files as bytes, weight shards either as `File`s read by byte
//! ranges (`File.slice` + `FileReaderSync`, so a file is never copied whole into wasm memory) or as bytes.

use prunelab::error::{Error, Result};
use prunelab::io::safetensors_ranges::{ByteRanges, RangedSafetensors};
use prunelab::model::params::count_params;
use prunelab::model::weights::check_inventory;
use prunelab::model::{ModelConfig, WeightSource};
use wasm_bindgen::JsCast;

/// A `File` read by byte ranges.
pub struct FileRanges(web_sys::File);

impl ByteRanges for FileRanges {
    fn size(&self) -> u64 {
        self.0.size() as u64
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let fail = |what: &str, e: wasm_bindgen::JsValue| {
            Error::Invalid(format!("reading {}: {what} failed ({e:?})", self.0.name()))
        };
        let blob = self
            .0
            .slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)
            .map_err(|e| fail("slice", e))?;
        let reader = web_sys::FileReaderSync::new().map_err(|e| fail("FileReaderSync", e))?;
        let buf = reader
            .read_as_array_buffer(&blob)
            .map_err(|e| fail("read", e))?;
        Ok(js_sys::Uint8Array::new(buf.unchecked_ref()).to_vec())
    }
}

enum Shards {
    Files(Vec<(String, web_sys::File)>),
    Bytes(Vec<(String, Vec<u8>)>),
}

/// A model's files.
pub struct ModelFiles {
    pub config: ModelConfig,
    /// The input's `config.json` (fields prunelab does not model are carried to the output).
    pub base_config: serde_json::Value,
    pub tokenizer: Option<Vec<u8>>,
    shards: Shards,
    /// Bytes of the largest tensor in f32 and of all tensors in f32 (what the device must hold).
    pub largest_tensor: u64,
    pub total_f32: u64,
}

impl ModelFiles {
    fn new(config: &[u8], tokenizer: Option<Vec<u8>>, shards: Shards) -> Result<Self> {
        let cfg = ModelConfig::from_json(config)?;
        let base_config = serde_json::from_slice(config).map_err(|e| Error::Json {
            what: "config.json".into(),
            message: e.to_string(),
        })?;
        if let Some(t) = &tokenizer {
            prunelab::io::Tokenizer::from_json(t)?;
        }
        let mut files = Self {
            config: cfg,
            base_config,
            tokenizer,
            shards,
            largest_tensor: 0,
            total_f32: 0,
        };
        let sizes: Vec<u64> = files.with_source(|src| {
            check_inventory(&files.config, src)?;
            Ok(src
                .inventory()
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64 * 4)
                .collect())
        })?;
        files.largest_tensor = sizes.iter().copied().max().unwrap_or(0);
        files.total_f32 = sizes.iter().sum();
        Ok(files)
    }

    pub fn uploaded(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        names: Vec<String>,
        shards: Vec<web_sys::File>,
    ) -> Result<Self> {
        Self::new(
            config,
            tokenizer,
            Shards::Files(names.into_iter().zip(shards).collect()),
        )
    }

    pub fn in_memory(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        names: Vec<String>,
        shards: Vec<Vec<u8>>,
    ) -> Result<Self> {
        Self::new(
            config,
            tokenizer,
            Shards::Bytes(names.into_iter().zip(shards).collect()),
        )
    }

    /// Runs `f` on the weights (headers are read again each time: they are small).
    pub fn with_source<R>(&self, f: impl FnOnce(&dyn WeightSource) -> Result<R>) -> Result<R> {
        match &self.shards {
            Shards::Files(files) => {
                let ranges = files
                    .iter()
                    .map(|(n, f)| (n.clone(), FileRanges(f.clone())))
                    .collect();
                f(&RangedSafetensors::open(ranges)?)
            }
            Shards::Bytes(files) => {
                let ranges = files
                    .iter()
                    .map(|(n, b)| (n.clone(), b.as_slice()))
                    .collect();
                f(&RangedSafetensors::open(ranges)?)
            }
        }
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "config": self.config,
            "params": count_params(&self.config),
            "largest_tensor_bytes": self.largest_tensor,
            "total_f32_bytes": self.total_f32,
            "has_tokenizer": self.tokenizer.is_some(),
        })
    }
}
