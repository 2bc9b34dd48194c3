//! The GGUF container (v2 and v3) by byte ranges: header, typed metadata, tensor infos, alignment, and every
//! offset checked against the file's length before any tensor is read; tensors are read one at a time.

use std::collections::HashMap;

use super::quant::{dequantize, GgmlType};
use crate::error::{Error, Result};
use crate::io::ranges::ByteRanges;

const MAGIC: &[u8; 4] = b"GGUF";
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Through the shortest decimal form, so 1e-5 stored as f32 reads back as 1e-5, not 9.9999997e-6.
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if it is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives and how it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (the columns of a matrix).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub size: usize,
}

impl TensorInfo {
    /// Shape in PyTorch order (`[rows, cols]` for a matrix): the ggml dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// What a GGUF file says before its data: version, metadata and where each tensor lies.
pub struct GgufHeader {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// A GGUF file: its header, read up front, and its bytes, read one tensor at a time.
pub struct GgufFile<R> {
    header: GgufHeader,
    data: R,
}

impl<R> std::ops::Deref for GgufFile<R> {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

/// Bytes read first when looking for the end of the header; grown ×4 while the header runs on (SmolLM2's,
/// with a 49,152-token vocabulary and its merges, is ≈ 3 MB).
const FIRST_READ: u64 = 1 << 20;
/// How deep metadata arrays may nest (llama.cpp writes flat arrays; a crafted file must not exhaust the stack).
const MAX_NESTING: usize = 4;

/// Reads a header from a prefix of a `file_len`-byte file.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file_len: u64,
    /// Set when the header runs past the prefix but not past the file: read more and parse again.
    short: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        if let Some(end) = end.filter(|&e| e <= self.b.len()) {
            let s = &self.b[self.pos..end];
            self.pos = end;
            return Ok(s);
        }
        if end.is_some_and(|e| (e as u64) <= self.file_len) {
            self.short = true;
        }
        Err(err(format!(
            "truncated: {what} at byte {} needs {n} bytes but the file has {}",
            self.pos, self.file_len
        )))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)? as usize;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
    }
    /// One metadata value of type `ty`; arrays may nest [`MAX_NESTING`] deep (`depth` counts the levels
    /// entered).
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let b = |c: &mut Self, n| c.take(n, key);
        Ok(match ty {
            0 => Value::U8(b(self, 1)?[0]),
            1 => Value::I8(b(self, 1)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            3 => Value::I16(i16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => Value::Bool(b(self, 1)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 => {
                let item = self.u32(key)?;
                let n = self.u64(key)?;
                if n > self.file_len {
                    return Err(err(format!(
                        "metadata {key}: array of {n} items is longer than the file"
                    )));
                }
                if depth >= MAX_NESTING {
                    return Err(err(format!(
                        "metadata {key}: arrays nested more than {MAX_NESTING} deep"
                    )));
                }
                let mut items = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            other => return Err(err(format!("metadata {key}: unknown value type {other}"))),
        })
    }
}

impl GgufHeader {
    /// Parses the header, metadata and tensor infos, checking every tensor's data lies in the file.
    fn parse(c: &mut Cursor) -> Result<Self> {
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(err(format!(
                "bad magic {magic:?}: not a GGUF file (expected \"GGUF\")"
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(err(format!(
                "unsupported version {version} (prunelab reads GGUF v2 and v3)"
            )));
        }
        let n_tensors = c.u64("tensor count")? as usize;
        let n_kv = c.u64("metadata count")? as usize;
        let mut metadata = Vec::with_capacity(n_kv.min(1 << 16));
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            metadata.push((key, value));
        }
        let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name {i}"))?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(err(format!(
                    "tensor {name}: {n_dims} dimensions (ggml allows 1 to 4)"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&name))
                .collect::<Result<Vec<_>>>()?;
            let type_id = c.u32(&name)?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                err(format!(
                    "tensor {name}: unknown or unsupported tensor type {type_id} \
                     (prunelab reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL)"
                ))
            })?;
            let offset = c.u64(&name)?;
            infos.push((name, dims, ggml_type, offset));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) => v
                .as_u64()
                .filter(|&a| a > 0 && a.is_power_of_two())
                .and_then(|a| usize::try_from(a).ok())
                .ok_or_else(|| {
                    err(format!(
                        "general.alignment = {v:?} is not a power of two this machine can address"
                    ))
                })?,
            None => DEFAULT_ALIGNMENT,
        };
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut index = HashMap::new();
        for (name, dims, ggml_type, rel) in infos {
            // Sizes from the file are checked in u64 (no wrap) before they become addresses.
            let past_end = |what: String| {
                err(format!(
                    "tensor {name}: {what} lies past the end of the file ({} bytes); truncated?",
                    c.file_len
                ))
            };
            let n = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= c.file_len.saturating_mul(2))
                .ok_or_else(|| past_end(format!("a shape of {dims:?}")))?;
            let n = usize::try_from(n).map_err(|_| past_end(format!("{n} values")))?;
            let size = ggml_type.bytes_for(n).ok_or_else(|| {
                err(format!(
                    "tensor {name}: {n} values are not whole {ggml_type:?} blocks"
                ))
            })?;
            let offset = (data_start as u64)
                .checked_add(rel)
                .filter(|o| o.checked_add(size as u64).is_some_and(|e| e <= c.file_len))
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| {
                    let start = (data_start as u64).saturating_add(rel);
                    past_end(format!(
                        "data [{start}, {})",
                        start.saturating_add(size as u64)
                    ))
                })?;
            if offset % alignment != 0 {
                return Err(err(format!(
                    "tensor {name}: offset {offset} is not aligned to {alignment}"
                )));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(err(format!("tensor {name} appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            index,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor's info by GGUF name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}

impl<R: ByteRanges> GgufFile<R> {
    /// Reads the header of `data` (a prefix, grown until the header ends), checking every tensor's data lies in
    /// the file; no tensor is read.
    pub fn open(data: R) -> Result<Self> {
        let size = data.size();
        let mut prefix_len = size.min(FIRST_READ);
        loop {
            let prefix = data.read(0, prefix_len as usize)?;
            let mut c = Cursor {
                b: &prefix,
                pos: 0,
                file_len: size,
                short: false,
            };
            match GgufHeader::parse(&mut c) {
                Ok(header) => return Ok(Self { header, data }),
                Err(_) if c.short && prefix_len < size => prefix_len = size.min(prefix_len * 4),
                Err(e) => return Err(e),
            }
        }
    }

    /// A tensor dequantised to f32, in ggml order (row-major over the reversed dims).
    pub fn read_f32(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.data.read(info.offset as u64, info.size)?;
        Ok(dequantize(info.ggml_type, &bytes))
    }
}
