//! [`RandomWeights`]: a seeded [`WeightSource`] with the tensors a config implies — the initialisation of a model
//! trained from scratch and the weights of synthetic checkpoints of real shapes. Each tensor is drawn from its
//! own stream (seed and name), so any one tensor can be produced without the others.

use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};

use super::config::ModelConfig;
use super::tensors::tensor_specs;
use super::weights::WeightSource;
use crate::error::{Error, Result};

/// GPT-2 / LLaMA-style initialisation: norms 1, biases 0, matrices `N(0, std²)`; the projections that write to
/// the residual stream (`o_proj`, `down_proj`) use `std / sqrt(2 · layers)`.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    cfg: ModelConfig,
    seed: u64,
    std: f64,
}

impl RandomWeights {
    pub fn new(cfg: &ModelConfig, seed: u64, std: f64) -> Self {
        Self {
            cfg: cfg.clone(),
            seed,
            std,
        }
    }
}

/// FNV-1a: a stable hash of a tensor name (the standard library's hasher may change between releases).
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl WeightSource for RandomWeights {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        tensor_specs(&self.cfg)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect()
    }

    fn read(&self, name: &str) -> Result<TensorData> {
        let spec = tensor_specs(&self.cfg)
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                expected: vec![],
            })?;
        let n = spec.numel();
        let data = |values: Vec<f32>| TensorData::new(values, spec.shape.clone());
        if name.ends_with("norm.weight") {
            return Ok(data(vec![1.0; n]));
        }
        if name.ends_with(".bias") {
            return Ok(data(vec![0.0; n]));
        }
        let residual = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
        let std = match residual {
            true => self.std / (2.0 * self.cfg.num_layers() as f64).sqrt(),
            false => self.std,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ stable_hash(name));
        // Box–Muller: two standard normals from two uniforms in (0, 1].
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let t = std::f64::consts::TAU * u2;
            out.push((r * t.cos()) as f32);
            out.push((r * t.sin()) as f32);
        }
        out.truncate(n);
        Ok(data(out))
    }
}
