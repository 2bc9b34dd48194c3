//! Safetensors read by byte ranges: only the header is read up front, each tensor when it is asked for — how the
//! page reads `File`s with `File.slice` (a file is never copied whole into wasm memory).

use std::collections::HashMap;

use burn::tensor::{DType, TensorData};

pub use super::ranges::ByteRanges;
use super::safetensors::{float_type, tensor_data};
use super::safetensors_header::{bad, header, Entry};
use crate::error::{Error, Result};
use crate::model::WeightSource;

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

impl<R: ByteRanges> RangedSafetensors<R> {
    /// Reads and checks every header ([`header`]), and that no tensor is in two files.
    pub fn open(files: Vec<(String, R)>) -> Result<Self> {
        if files.is_empty() {
            return Err(bad("model", "no *.safetensors file given".into()));
        }
        let (mut shards, mut location) = (vec![], HashMap::new());
        for (file, ranges) in files {
            let (data_start, entries) = header(&file, &ranges)?;
            for name in entries.keys() {
                if location.insert(name.clone(), shards.len()).is_some() {
                    return Err(bad(
                        &file,
                        format!("tensor {name} is in more than one shard"),
                    ));
                }
            }
            shards.push(Shard {
                file,
                ranges,
                data_start,
                entries,
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

    fn unreadable_type(&self, name: &str) -> Option<String> {
        let stored = self.shards[*self.location.get(name)?].entries[name].dtype;
        float_type(stored).is_none().then(|| format!("{stored:?}"))
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
