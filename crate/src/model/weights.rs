//! Where weights come from: a [`WeightSource`] names its tensors with HF names and hands each out as f32.
//! Safetensors (single or sharded) and GGUF implement it; the model loader checks the inventory against the
//! config before it reads a single tensor, so a mismatch costs nothing and names the culprit.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::config::ModelConfig;
use super::tensors::tensor_specs;
use crate::error::{Error, Result};

/// A read-only collection of named tensors.
pub trait WeightSource {
    /// Every tensor's HF name and shape.
    fn inventory(&self) -> Vec<(String, Vec<usize>)>;
    /// One tensor converted to f32, row-major.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
}

/// Tensors that checkpoints carry but the model recomputes (rotary buffers of old transformers versions).
fn is_ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// Checks that `src` holds exactly the tensors `cfg` implies, with the implied shapes.
pub fn check_inventory(cfg: &ModelConfig, src: &dyn WeightSource) -> Result<()> {
    let found: HashMap<String, Vec<usize>> = src.inventory().into_iter().collect();
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
            Some(_) => {}
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

/// Reads one tensor as a parameter of rank `D` (shape already checked by [`check_inventory`]).
pub fn load_param<B: Backend, const D: usize>(
    src: &dyn WeightSource,
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    let data = src.read_f32(name)?;
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(data, shape),
        device,
    )))
}
