//! Safetensors read by byte ranges: only the header is read up front, each tensor when it is asked for — how the
//! page reads `File`s with `File.slice` (a file is never copied whole into wasm memory).

use std::collections::HashMap;

use burn::tensor::{DType, TensorData};
use safetensors::Dtype;
use serde::Deserialize;

pub use super::ranges::ByteRanges;
use super::safetensors::tensor_data;
use crate::error::{Error, Result};
use crate::model::WeightSource;

#[derive(Deserialize)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

struct Shard<R> {
    file: String,
    ranges: R,
    /// Where the data section starts.
    data_start: u64,
    entries: HashMap<String, Entry>,
}

/// One or more `.safetensors` files (shards) read lazily.
pub struct RangedSafetensors<R: ByteRanges> {
    shards: Vec<Shard<R>>,
    location: HashMap<String, usize>,
}

fn bad(file: &str, message: String) -> Error {
    Error::Safetensors {
        file: file.into(),
        message,
    }
}

fn dtype_size(d: Dtype) -> Option<u64> {
    match d {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

impl<R: ByteRanges> RangedSafetensors<R> {
    /// Reads and checks every header: offsets inside the file, sizes equal to dtype × shape, no tensor twice.
    pub fn open(files: Vec<(String, R)>) -> Result<Self> {
        if files.is_empty() {
            return Err(bad("model", "no *.safetensors file given".into()));
        }
        let (mut shards, mut location) = (vec![], HashMap::new());
        for (file, ranges) in files {
            let size = ranges.size();
            if size < 8 {
                return Err(bad(&file, format!("{size} bytes: too short for a header")));
            }
            let n = u64::from_le_bytes(ranges.read(0, 8)?.try_into().expect("8 bytes"));
            if n > 100 << 20 || 8 + n > size {
                return Err(bad(
                    &file,
                    format!("header length {n} does not fit the file of {size} bytes"),
                ));
            }
            let header = ranges.read(8, n as usize)?;
            let mut entries: HashMap<String, serde_json::Value> =
                serde_json::from_slice(&header)
                    .map_err(|e| bad(&file, format!("header is not valid JSON: {e}")))?;
            entries.remove("__metadata__");
            let data_start = 8 + n;
            let mut parsed = HashMap::new();
            for (name, v) in entries {
                let e: Entry = serde_json::from_value(v)
                    .map_err(|e| bad(&file, format!("tensor {name}: {e}")))?;
                let (a, b) = e.data_offsets;
                let numel = e
                    .shape
                    .iter()
                    .try_fold(1u64, |n, &x| n.checked_mul(x as u64));
                if let Some(sz) = dtype_size(e.dtype) {
                    let size = numel.and_then(|n| n.checked_mul(sz));
                    if b < a || Some(b - a) != size {
                        return Err(bad(
                            &file,
                            format!(
                                "tensor {name}: {} bytes for shape {:?} of {:?}",
                                b.wrapping_sub(a),
                                e.shape,
                                e.dtype
                            ),
                        ));
                    }
                }
                if data_start + b > size {
                    return Err(bad(
                        &file,
                        format!(
                            "tensor {name} ends at byte {} of a {size}-byte file (truncated?)",
                            data_start + b
                        ),
                    ));
                }
                if location.insert(name.clone(), shards.len()).is_some() {
                    return Err(bad(
                        &file,
                        format!("tensor {name} is in more than one shard"),
                    ));
                }
                parsed.insert(name, e);
            }
            shards.push(Shard {
                file,
                ranges,
                data_start,
                entries: parsed,
            });
        }
        Ok(Self { shards, location })
    }
}

impl<R: ByteRanges> WeightSource for RangedSafetensors<R> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.shards
            .iter()
            .flat_map(|s| s.entries.iter().map(|(n, e)| (n.clone(), e.shape.clone())))
            .collect()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        self.tensor(name, None)
    }

    fn read_as(&self, name: &str, dtype: DType) -> Result<TensorData> {
        self.tensor(name, Some(dtype))
    }
}

impl<R: ByteRanges> RangedSafetensors<R> {
    fn tensor(&self, name: &str, want: Option<DType>) -> Result<TensorData> {
        let shard = &self.shards[*self
            .location
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                expected: vec![],
            })?];
        let e = &shard.entries[name];
        let (a, b) = e.data_offsets;
        let bytes = shard.ranges.read(shard.data_start + a, (b - a) as usize)?;
        if bytes.len() as u64 != b - a {
            return Err(bad(&shard.file, format!("tensor {name}: short read")));
        }
        tensor_data(e.dtype, &bytes, &e.shape, name, want)
    }
}
