//! Where weights come from: a [`WeightSource`] names its tensors with HF names and hands each out in its stored
//! float type (a bf16 checkpoint reaches a bf16 device without ever passing through f32 on the host).
//! Safetensors (single or sharded) and GGUF implement it; the model loader checks the inventory against the
//! config before it reads a single tensor, so a mismatch costs nothing and names the culprit.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{backend::Backend, get_device_settings, DType, Tensor, TensorData};

use super::config::ModelConfig;
use super::tensors::tensor_specs;
use crate::error::{Error, Result};

/// A read-only collection of named tensors.
pub trait WeightSource {
    /// Every tensor's HF name and shape.
    fn inventory(&self) -> Vec<(String, Vec<usize>)>;
    /// One tensor in its stored float type (f32, f16 or bf16), row-major, with its shape.
    fn read(&self, name: &str) -> Result<TensorData>;
    /// The stored type of tensor `name` when [`Self::read`] would refuse it (an integer tensor, say), so a
    /// model is refused before anything is read; `None` when it is readable or unknown.
    fn unreadable_type(&self, _name: &str) -> Option<String> {
        None
    }
    /// One tensor as float type `dtype`: the stored values when they already are of that type, converted
    /// otherwise (sources that can decode straight into `dtype` do it in one pass).
    fn read_as(&self, name: &str, dtype: DType) -> Result<TensorData> {
        Ok(self.read(name)?.convert_dtype(dtype))
    }
    /// Seconds this source has spent so far computing the weights it serves (a streamed pass's load, compute
    /// and read back; 0 for stored weights). A pass reading from it leaves them out of its own load time.
    fn work_seconds(&self) -> f64 {
        0.0
    }
    /// One tensor converted to f32, row-major.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.read_as(name, DType::F32)?
            .into_vec()
            .map_err(|e| Error::Invalid(format!("tensor {name}: {e:?}")))
    }
}

/// Tensors that checkpoints carry but the model recomputes (rotary buffers of old transformers versions).
fn is_ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// Checks that `src` holds exactly the tensors `cfg` implies, with the implied shapes, in types it can read.
pub fn check_inventory(cfg: &ModelConfig, src: &dyn WeightSource) -> Result<()> {
    let mut found: HashMap<String, Vec<usize>> = HashMap::new();
    for (name, shape) in src.inventory() {
        if found.contains_key(&name) {
            return Err(Error::DuplicateTensor { name });
        }
        found.insert(name, shape);
    }
    let specs = tensor_specs(cfg);
    for spec in &specs {
        match found.get(&spec.name) {
            None => {
                return Err(Error::MissingTensor {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                })
            }
            Some(shape) if *shape != spec.shape => {
                return Err(Error::ShapeMismatch {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: shape.clone(),
                })
            }
            Some(_) => {
                if let Some(dtype) = src.unreadable_type(&spec.name) {
                    return Err(Error::Dtype {
                        name: spec.name.clone(),
                        dtype,
                    });
                }
            }
        }
    }
    let expected: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut extra: Vec<_> = found
        .iter()
        .filter(|(n, _)| !expected.contains(n.as_str()) && !is_ignorable(n, cfg))
        .collect();
    extra.sort();
    if let Some((name, shape)) = extra.first() {
        return Err(Error::UnexpectedTensor {
            name: (*name).clone(),
            shape: (*shape).clone(),
        });
    }
    Ok(())
}

/// Reads one tensor as a parameter of rank `D` (shape already checked by [`check_inventory`]) in the device's
/// float type: a bf16 checkpoint reaches a bf16 device as its bytes, an f32 device in one decoding pass.
pub fn load_param<B: Backend, const D: usize>(
    src: &dyn WeightSource,
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    let dtype = get_device_settings::<B>(device).float_dtype.into();
    let data = src.read_as(name, dtype)?;
    if data.shape.as_slice() != shape.as_slice() {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: shape.to_vec(),
            found: data.shape.to_vec(),
        });
    }
    Ok(Param::from_tensor(Tensor::from_data(data, device)))
}
