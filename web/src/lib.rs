//! Browser bindings of prunelab: what the page's worker calls. The core does the work; this file only adapts
//! JavaScript values (files, callbacks) to it. Everything runs in one dedicated worker.

mod files;
mod run;

use std::rc::Rc;

use prunelab::model::params::count_params;
use prunelab::model::ModelConfig;
use prunelab::prune::allocate::{ratio_for_target, shapes_at, Allocation};
use prunelab::prune::Recipe;
use wasm_bindgen::prelude::*;

use files::ModelFiles;

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The library version, shown in the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Parses a `config.json` and returns the resolved per-layer configuration and parameter counts as JSON.
#[wasm_bindgen]
pub fn resolve_config(bytes: &[u8]) -> Result<String, JsError> {
    let cfg = ModelConfig::from_json(bytes).map_err(js)?;
    let params = count_params(&cfg);
    Ok(serde_json::json!({ "config": cfg, "params": params }).to_string())
}

/// Every method the core offers, with one-line explanations, for the page's menus.
#[wasm_bindgen]
pub fn methods() -> String {
    use prunelab::prune::compensate::Compensation;
    use prunelab::prune::Importance;
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let scores: Vec<_> = Importance::ALL
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": name(serde_json::to_value(k).unwrap_or_default()),
                "describe": k.describe(),
                "training_free": k.needs_activations() || !(k.needs_gradient() || k.needs_fisher()),
            })
        })
        .collect();
    let comps: Vec<_> = Compensation::ALL
        .iter()
        .map(|c| serde_json::json!({ "name": name(serde_json::to_value(c).unwrap_or_default()), "describe": c.describe() }))
        .collect();
    let allocs: Vec<_> = [
        Allocation::Uniform,
        Allocation::Global,
        Allocation::AttnMlpRatio { gamma: 1.0 },
    ]
    .iter()
    .map(|a| serde_json::json!({ "value": a, "describe": a.describe() }))
    .collect();
    serde_json::json!({
        "scores": scores,
        "compensations": comps,
        "allocations": allocs,
        "default_recipe": Recipe::default(),
    })
    .to_string()
}

/// The model the page loaded, and the runs made on it.
#[wasm_bindgen]
pub struct Lab {
    files: Rc<ModelFiles>,
}

#[wasm_bindgen]
impl Lab {
    /// A model uploaded as files: `config.json` and `tokenizer.json` bytes (small), and the `*.safetensors`
    /// `File`s, which are read one tensor at a time with `File.slice`. Checks names and shapes before anything
    /// else; returns the summary JSON (config, parameters, largest tensor in bytes).
    #[wasm_bindgen(js_name = fromFiles)]
    pub fn from_files(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        names: Vec<String>,
        shards: Vec<web_sys::File>,
    ) -> Result<Lab, JsError> {
        let files = ModelFiles::uploaded(config, tokenizer, names, shards).map_err(js)?;
        Ok(Lab {
            files: Rc::new(files),
        })
    }

    /// A model whose files the page already holds as bytes (the built-in demo, fetched from its own origin).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        names: Vec<String>,
        shards: Vec<js_sys::Uint8Array>,
    ) -> Result<Lab, JsError> {
        let shards = shards.iter().map(|a| a.to_vec()).collect();
        let files = ModelFiles::in_memory(config, tokenizer, names, shards).map_err(js)?;
        Ok(Lab {
            files: Rc::new(files),
        })
    }

    /// Config, parameter count and tensor sizes of the loaded model (JSON).
    pub fn summary(&self) -> String {
        self.files.summary().to_string()
    }

    /// The parameter count a recipe would leave, before anything runs (JSON `{params, ratio}`; `global`
    /// allocation reports its target, since it depends on the scores).
    #[wasm_bindgen(js_name = plannedParams)]
    pub fn planned_params(&self, recipe: &str) -> Result<String, JsError> {
        let recipe = Recipe::from_json(recipe.as_bytes()).map_err(js)?;
        let cfg = &self.files.config;
        recipe.check(cfg).map_err(js)?;
        let total = count_params(cfg).total as f64;
        let layers = recipe.layer_range(cfg);
        let ratio = match (recipe.allocation, recipe.ratio, recipe.target_params) {
            (Allocation::Global, _, Some(t)) => {
                return Ok(
                    serde_json::json!({ "params": (total * (1.0 - t)).floor(), "ratio": null })
                        .to_string(),
                )
            }
            (_, Some(r), _) => r,
            (alloc, None, Some(t)) => {
                ratio_for_target(cfg, &layers, t, &recipe.structures, alloc).map_err(js)?
            }
            _ => return Err(js("give a ratio or a parameter target")),
        };
        let after = shapes_at(cfg, &layers, ratio, &recipe.structures, recipe.allocation);
        Ok(serde_json::json!({ "params": count_params(&after).total, "ratio": ratio }).to_string())
    }

    /// Runs `recipe` (JSON) with calibration and evaluation texts on WebGPU (`gpu`) or the CPU: perplexity
    /// before, prune, perplexity after. `progress(stage, done, total)` is called as work goes; `emit(file,
    /// bytes)` receives the pruned model's files in parts (one tensor at a time). Resolves to `report.json`.
    pub fn run(
        &self,
        recipe: String,
        calib: String,
        eval: String,
        gpu: bool,
        progress: js_sys::Function,
        emit: js_sys::Function,
    ) -> js_sys::Promise {
        let files = self.files.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            run::run(&files, &recipe, &calib, &eval, gpu, progress, emit)
                .await
                .map(JsValue::from)
                .map_err(|e| JsError::new(&e.to_string()).into())
        })
    }
}

/// WebGPU's adapter (name, limits) as JSON, initialising burn's wgpu device on it; rejects when there is none.
#[wasm_bindgen(js_name = initWebGpu)]
pub fn init_webgpu() -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move {
        run::init_webgpu()
            .await
            .map(JsValue::from)
            .map_err(|e| JsError::new(&e).into())
    })
}
