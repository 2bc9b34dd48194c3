//! Safetensors weights from bytes: one file, or shards with `model.safetensors.index.json`. F32, F16 and BF16
//! tensors are handed out one at a time in their stored type (copied, never converted); the file
//! itself is borrowed (memory-mapped natively, a `File` slice in the browser), never copied whole.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Bytes, DType, TensorData};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::safetensors_header::header;
use crate::error::{parse_json, Error, Result};
use crate::model::WeightSource;

/// Tensors of one or more safetensors files.
pub struct SafetensorsWeights<'a> {
    shards: Vec<(String, SafeTensors<'a>)>,
    /// tensor name → shard index
    location: HashMap<String, usize>,
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl<'a> SafetensorsWeights<'a> {
    /// Parses the headers of `files` (`(file name, bytes)`). With `index` (the bytes of
    /// `model.safetensors.index.json`) every tensor must sit in the shard the index names.
    pub fn from_files(files: &[(String, &'a [u8])], index: Option<&[u8]>) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::Safetensors {
                file: "model".into(),
                message: "no *.safetensors file given".into(),
            });
        }
        let mut shards = Vec::with_capacity(files.len());
        let mut location = HashMap::new();
        for (i, (file, bytes)) in files.iter().enumerate() {
            // Our check names the tensor and the fault; the crate's own is the backstop.
            header(file, *bytes)?;
            let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
                file: file.clone(),
                message: describe(&e),
            })?;
            for name in st.names() {
                if let Some(prev) = location.insert(name.to_string(), i) {
                    return Err(Error::Safetensors {
                        file: file.clone(),
                        message: format!("tensor {name} is also in {}", files[prev].0),
                    });
                }
            }
            shards.push((file.clone(), st));
        }
        if let Some(index) = index {
            let index: Index = parse_json(index, "model.safetensors.index.json")?;
            for (name, shard) in &index.weight_map {
                let Some(&at) = location.get(name) else {
                    return Err(Error::Safetensors {
                        file: shard.clone(),
                        message: format!(
                            "the index places {name} here, but no given file holds it"
                        ),
                    });
                };
                if !shards[at].0.ends_with(shard.as_str()) {
                    return Err(Error::Safetensors {
                        file: shards[at].0.clone(),
                        message: format!("holds {name}, which the index places in {shard}"),
                    });
                }
            }
        }
        Ok(Self { shards, location })
    }
}

/// The safetensors crate's error, in words a user can act on.
fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::HeaderTooLarge | E::InvalidHeaderLength => {
            format!("truncated or garbled header ({e})")
        }
        E::InvalidHeader(_) | E::InvalidHeaderStart | E::InvalidHeaderDeserialization(_) => {
            format!("garbled header: not the JSON header safetensors expects ({e})")
        }
        E::MetadataIncompleteBuffer | E::InvalidOffset(_) => {
            format!("truncated: the header promises more tensor data than the file holds ({e})")
        }
        _ => e.to_string(),
    }
}

impl WeightSource for SafetensorsWeights<'_> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.shards
            .iter()
            .flat_map(|(_, st)| st.iter().map(|(n, v)| (n.to_string(), v.shape().to_vec())))
            .collect()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        self.tensor(name, None)
    }

    fn read_as(&self, name: &str, dtype: DType) -> Result<TensorData> {
        self.tensor(name, Some(dtype))
    }

    fn unreadable_type(&self, name: &str) -> Option<String> {
        let (_, st) = &self.shards[*self.location.get(name)?];
        let stored = st.tensor(name).ok()?.dtype();
        float_type(stored).is_none().then(|| format!("{stored:?}"))
    }
}

impl SafetensorsWeights<'_> {
    fn tensor(&self, name: &str, want: Option<DType>) -> Result<TensorData> {
        let missing = || Error::MissingTensor {
            name: name.into(),
            expected: vec![],
        };
        let (file, st) = &self.shards[*self.location.get(name).ok_or_else(missing)?];
        let view = st.tensor(name).map_err(|e| Error::Safetensors {
            file: file.clone(),
            message: e.to_string(),
        })?;
        tensor_data(view.dtype(), view.data(), view.shape(), name, want)
    }
}

/// The little-endian F32 / F16 / BF16 bytes of tensor `name` as tensor data of type `want` (default: the stored
/// type), in one pass into an allocation of the element's width where it can: a copy for the stored type, a
/// decode for f32. Other stored types are refused by name.
pub(crate) fn tensor_data(
    stored: Dtype,
    bytes: &[u8],
    shape: &[usize],
    name: &str,
    want: Option<DType>,
) -> Result<TensorData> {
    let stored = float_type(stored).ok_or_else(|| Error::Dtype {
        name: name.into(),
        dtype: format!("{stored:?}"),
    })?;
    let numel: usize = shape.iter().product();
    if bytes.len() != numel * stored.size() {
        return Err(Error::Invalid(format!(
            "tensor {name}: {} bytes for shape {shape:?} of {stored:?}",
            bytes.len()
        )));
    }
    let want = want.unwrap_or(stored);
    let copy = || match stored {
        DType::F32 => Bytes::from_elems(words(bytes, u32::from_le_bytes)),
        _ => Bytes::from_elems(words(bytes, u16::from_le_bytes)),
    };
    let shape = shape.to_vec();
    Ok(match (stored, want) {
        (a, b) if a == b => TensorData::from_bytes(copy(), shape, stored),
        (DType::BF16, DType::F32) => {
            TensorData::new(words(bytes, |w| bf16::from_le_bytes(w).to_f32()), shape)
        }
        (DType::F16, DType::F32) => {
            TensorData::new(words(bytes, |w| f16::from_le_bytes(w).to_f32()), shape)
        }
        _ => TensorData::from_bytes(copy(), shape, stored).convert_dtype(want),
    })
}

/// The float type of a stored safetensors type, if it is one the readers hand out.
pub(crate) fn float_type(stored: Dtype) -> Option<DType> {
    match stored {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Little-endian `N`-byte words, each mapped to a value.
fn words<const N: usize, W>(bytes: &[u8], value: impl Fn([u8; N]) -> W) -> Vec<W> {
    bytes
        .chunks_exact(N)
        .map(|c| value(c.try_into().expect("N bytes")))
        .collect()
}
