//! Parameter accounting: totals per module and per layer, with tied embeddings counted once.

use std::collections::BTreeMap;

use super::config::ModelConfig;
use super::tensors::{tensor_specs, Module};

/// Parameter counts of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamCount {
    pub total: usize,
    pub per_module: BTreeMap<Module, usize>,
    /// Attention + MLP + norm parameters of each decoder layer.
    pub per_layer: Vec<usize>,
}

/// Counts every parameter the configuration implies (a tied `lm_head` is the embedding, counted once).
pub fn count_params(cfg: &ModelConfig) -> ParamCount {
    let mut per_module = BTreeMap::new();
    let mut per_layer = vec![0; cfg.num_layers()];
    let mut total = 0;
    for spec in tensor_specs(cfg) {
        let n = spec.numel();
        total += n;
        *per_module.entry(spec.module).or_insert(0) += n;
        if let Some(l) = spec.layer {
            per_layer[l] += n;
        }
    }
    ParamCount {
        total,
        per_module,
        per_layer,
    }
}
