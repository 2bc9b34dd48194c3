//! The header of one `.safetensors` file, read through byte ranges and checked before any tensor is: both readers
//! (memory map, byte ranges) use it, so a damaged file gets the same message whichever reads it.

use std::collections::HashMap;

use safetensors::Dtype;
use serde::Deserialize;

use super::ranges::ByteRanges;
use crate::error::{Error, Result};

/// One tensor of a safetensors header.
#[derive(Deserialize)]
pub(crate) struct Entry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data_offsets: (u64, u64),
}

/// A safetensors error about `file`.
pub(crate) fn bad(file: &str, message: String) -> Error {
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
