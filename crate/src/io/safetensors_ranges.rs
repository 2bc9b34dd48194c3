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

/// One tensor of a safetensors header.
#[derive(Deserialize)]
pub(crate) struct Entry {
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

/// Reads and checks the header of one file: its length, its JSON, and a data section that the tensors tile
/// exactly — each `dtype × shape` bytes long, in order, with no overlap, gap or trailing byte (what the
/// safetensors crate requires, here with the tensor named). Returns where the data starts and the entries.
pub(crate) fn header<R: ByteRanges + ?Sized>(
    file: &str,
    ranges: &R,
) -> Result<(u64, HashMap<String, Entry>)> {
    let size = ranges.size();
    if size < 8 {
        return Err(bad(
            file,
            format!("truncated or garbled header: {size} bytes are too short for one"),
        ));
    }
    let n = u64::from_le_bytes(ranges.read(0, 8)?.try_into().expect("8 bytes"));
    if n > 100 << 20 || 8 + n > size {
        return Err(bad(
            file,
            format!(
                "truncated or garbled header: its length {n} does not fit the file of {size} bytes"
            ),
        ));
    }
    let header = ranges.read(8, n as usize)?;
    let mut values: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(file, format!("garbled header: not valid JSON ({e})")))?;
    values.remove("__metadata__");
    let mut entries = HashMap::new();
    for (name, v) in values {
        let e: Entry =
            serde_json::from_value(v).map_err(|e| bad(file, format!("tensor {name}: {e}")))?;
        let (a, b) = e.data_offsets;
        let bits = e
            .shape
            .iter()
            .try_fold(e.dtype.bitsize() as u64, |n, &x| n.checked_mul(x as u64));
        if b < a || bits.is_none_or(|bits| !bits.is_multiple_of(8) || bits / 8 != b - a) {
            return Err(bad(
                file,
                format!(
                    "tensor {name}: bytes [{a}, {b}) do not hold shape {:?} of {:?}",
                    e.shape, e.dtype
                ),
            ));
        }
        entries.insert(name, e);
    }
    let data_start = 8 + n;
    let data_len = size - data_start;
    let mut by_offset: Vec<(&String, &Entry)> = entries.iter().collect();
    by_offset.sort_by_key(|(name, e)| (e.data_offsets, name.as_str()));
    let mut end = (0, None::<&str>);
    for (name, e) in by_offset {
        let (a, b) = e.data_offsets;
        let after = end
            .1
            .map_or("the header".to_string(), |p| format!("tensor {p}"));
        if a < end.0 {
            return Err(bad(
                file,
                format!("tensor {name}: bytes [{a}, {b}) overlap {after}"),
            ));
        }
        if a > end.0 {
            return Err(bad(
                file,
                format!(
                    "bytes [{}, {a}) between {after} and tensor {name} belong to no tensor",
                    end.0
                ),
            ));
        }
        end = (b, Some(name));
    }
    if end.0 > data_len {
        let last = end.1.unwrap_or_default();
        return Err(bad(
            file,
            format!(
                "truncated: tensor {last} ends at byte {} of a {size}-byte file",
                data_start + end.0
            ),
        ));
    }
    if end.0 < data_len {
        return Err(bad(
            file,
            format!(
                "{} bytes after the last tensor belong to no tensor",
                data_len - end.0
            ),
        ));
    }
    Ok((data_start, entries))
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
