//! Browser bindings of prunelab. The page's worker calls these; the core does the work.

use wasm_bindgen::prelude::*;

/// The library version, shown in the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Parses a `config.json` and returns the resolved per-layer configuration as JSON, or the error message.
#[wasm_bindgen]
pub fn resolve_config(bytes: &[u8]) -> Result<String, JsError> {
    let cfg =
        prunelab::model::ModelConfig::from_json(bytes).map_err(|e| JsError::new(&e.to_string()))?;
    let params = prunelab::model::params::count_params(&cfg);
    Ok(serde_json_string(&cfg, params.total))
}

fn serde_json_string(cfg: &prunelab::model::ModelConfig, params: usize) -> String {
    format!(
        "{{\"layers\":{},\"hidden_size\":{},\"params\":{params}}}",
        cfg.num_layers(),
        cfg.hidden_size
    )
}
