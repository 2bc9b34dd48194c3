//! Safetensors weights from bytes: one file, or shards with `model.safetensors.index.json`. F32, F16 and BF16
//! convert to f32 one tensor at a time; the bytes themselves are borrowed (memory-mapped natively, a `File`
//! slice in the browser), never copied whole.

use std::collections::{BTreeMap, HashMap};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
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
            let index: Index = serde_json::from_slice(index).map_err(|e| Error::Json {
                what: "model.safetensors.index.json".into(),
                message: e.to_string(),
            })?;
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

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let missing = || Error::MissingTensor {
            name: name.into(),
            expected: vec![],
        };
        let (file, st) = &self.shards[*self.location.get(name).ok_or_else(missing)?];
        let view = st.tensor(name).map_err(|e| Error::Safetensors {
            file: file.clone(),
            message: e.to_string(),
        })?;
        decode(view.dtype(), view.data(), name)
    }
}

/// Little-endian F32 / F16 / BF16 bytes of tensor `name` as f32.
pub(crate) fn decode(dtype: Dtype, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Dtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}
