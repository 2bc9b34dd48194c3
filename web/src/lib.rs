//! Browser bindings of prunelab. The page's worker calls these; the core does the work.

use wasm_bindgen::prelude::*;

/// The library version, shown in the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Parses a `config.json` and returns the resolved per-layer configuration and parameter counts as JSON;
/// a bad config becomes a JavaScript error with the core's message.
#[wasm_bindgen]
pub fn resolve_config(bytes: &[u8]) -> Result<String, JsError> {
    let cfg =
        prunelab::model::ModelConfig::from_json(bytes).map_err(|e| JsError::new(&e.to_string()))?;
    let params = prunelab::model::params::count_params(&cfg);
    Ok(serde_json::json!({ "config": cfg, "params": params }).to_string())
}
