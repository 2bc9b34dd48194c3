//! Browser bindings of prunelab: what the page's worker calls. The core does the work; this file only adapts
//! JavaScript values (files, callbacks) to it. Everything runs in one dedicated worker.

mod export;
mod files;
mod generate;
mod host;
mod run;

use std::rc::Rc;

use prunelab::eval::choice::Task;
use prunelab::model::params::count_params;
use prunelab::model::ModelConfig;
use prunelab::prune::allocate::{pruned_count, ratio_for_target, shapes_at, Allocation};
use prunelab::prune::search::SearchSettings;
use prunelab::prune::{Plan, Recipe};
use wasm_bindgen::prelude::*;

use files::{BlobRanges, Data, ModelFiles};
use host::{Emit, JsProgress};

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

thread_local! {
    /// The message of the panic that stopped the core, for the page to show.
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Keeps a panic's message: the worker reads it with [`last_panic`] after the trap it ends in.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
    }));
}

/// The message of the panic that stopped the core ("" if none).
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> String {
    LAST_PANIC.with(|p| p.borrow().clone())
}

/// Bytes of linear memory the core holds (a tab allows 4 GiB).
#[wasm_bindgen(js_name = memoryBytes)]
pub fn memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

/// The library version, shown in the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// The names of the tokenizer and generation files an HF upload may hold beside its weights (carried into the
/// downloads), as a JSON array.
#[wasm_bindgen(js_name = sideFiles)]
pub fn side_files() -> String {
    serde_json::to_string(&prunelab::io::side_files::SIDE_FILES).expect("json")
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
                "name": k.name(),
                "describe": k.describe(),
                "training_free": !k.needs_backward(),
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
        Allocation::Search(SearchSettings::default()),
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

impl Lab {
    fn with_files(files: prunelab::error::Result<ModelFiles>) -> Result<Lab, JsError> {
        Ok(Lab {
            files: Rc::new(files.map_err(js)?),
        })
    }
}

#[wasm_bindgen]
impl Lab {
    /// A model uploaded as an HF folder's files: `config.json` and `tokenizer.json` bytes (small), the side
    /// files' names and bytes (`tokenizer_config.json`, …), and the `*.safetensors` `File`s, which are read one
    /// tensor at a time with `File.slice`. Checks names and shapes before anything else.
    #[wasm_bindgen(js_name = fromFiles)]
    pub fn from_files(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        side_names: Vec<String>,
        side_bytes: Vec<js_sys::Uint8Array>,
        names: Vec<String>,
        shards: Vec<web_sys::File>,
    ) -> Result<Lab, JsError> {
        let shards = names
            .into_iter()
            .zip(shards)
            .map(|(name, f)| {
                let blob = web_sys::Blob::from(f);
                (name.clone(), Data::Blob(BlobRanges { name, blob }))
            })
            .collect();
        let side = side_names
            .into_iter()
            .zip(&side_bytes)
            .map(|(n, b)| (n, b.to_vec()))
            .collect();
        Lab::with_files(ModelFiles::hf(config, tokenizer, side, shards))
    }

    /// A model uploaded as one `.gguf` `File`: config, tokenizer and weights from it, read by byte ranges.
    #[wasm_bindgen(js_name = fromGguf)]
    pub fn from_gguf(file: web_sys::File) -> Result<Lab, JsError> {
        let name = file.name();
        let blob = web_sys::Blob::from(file);
        Lab::with_files(ModelFiles::gguf(Data::Blob(BlobRanges { name, blob })))
    }

    /// A model whose files the page already holds as bytes (the built-in demo, fetched from its own origin).
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(
        config: &[u8],
        tokenizer: Option<Vec<u8>>,
        names: Vec<String>,
        shards: Vec<js_sys::Uint8Array>,
    ) -> Result<Lab, JsError> {
        let shards = names
            .into_iter()
            .zip(&shards)
            .map(|(n, a)| (n, Data::Bytes(a.to_vec())))
            .collect();
        Lab::with_files(ModelFiles::hf(config, tokenizer, vec![], shards))
    }

    /// Config, parameter count and tensor sizes of the loaded model (JSON).
    pub fn summary(&self) -> String {
        self.files.summary().to_string()
    }

    /// The parameter count a recipe would leave, before anything runs (JSON `{params, ratio}`; `global`
    /// allocation and whole layers at a parameter target report the target, since it depends on the scores; a
    /// depth ratio's layers are counted as the range's first ones).
    #[wasm_bindgen(js_name = plannedParams)]
    pub fn planned_params(&self, recipe: &str) -> Result<String, JsError> {
        let recipe = Recipe::from_json(recipe.as_bytes()).map_err(js)?;
        let cfg = &self.files.config;
        recipe.check(cfg).map_err(js)?;
        let total = count_params(cfg).total as f64;
        let layers = recipe.layer_range(cfg);
        let target =
            |t: f64| serde_json::json!({ "params": (total * (1.0 - t)).floor(), "ratio": null });
        // Which layers go depends on the scores: counted as the range's first ones (exact when the range's
        // layers have equal sizes, as in every unpruned model).
        let first_layers = |r: f64| {
            Plan::depth(
                cfg,
                (layers.start..)
                    .take(pruned_count(layers.len(), r))
                    .collect(),
            )
        };
        if let (Some(depth), Some((_, width))) = (recipe.depth, recipe.steps()) {
            let depth = first_layers(depth.ratio);
            let (smaller, width) = (
                depth.pruned_config(cfg),
                width
                    .narrowing_after(cfg, &depth.removed_layers)
                    .map_err(js)?,
            );
            let ratio = match (width.allocation, width.ratio, recipe.target_params) {
                (_, _, Some(t)) => return Ok(target(t).to_string()),
                (_, Some(r), _) => r,
                _ => return Err(js("give a ratio or a parameter target")),
            };
            let layers = width.layer_range(&smaller);
            let after = shapes_at(
                &smaller,
                &layers,
                ratio,
                &width.structures,
                width.allocation,
            );
            let params = count_params(&after).total;
            return Ok(serde_json::json!({ "params": params, "ratio": ratio }).to_string());
        }
        let ratio = match (recipe.allocation, recipe.ratio, recipe.target_params) {
            (_, Some(r), _) if recipe.prunes_depth() => {
                let after = first_layers(r).pruned_config(cfg);
                let params = count_params(&after).total;
                return Ok(serde_json::json!({ "params": params, "ratio": r }).to_string());
            }
            (_, None, Some(t)) if recipe.prunes_depth() => return Ok(target(t).to_string()),
            (Allocation::Global | Allocation::Search(_), _, Some(t)) => {
                return Ok(target(t).to_string())
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
    /// before, prune, perplexity after; with `tasks` (a multiple-choice task's JSON lines, named `tasks_name`,
    /// its first `tasks_items` items or all) the accuracy before and after as well. `progress(stage, done,
    /// total)` is called as work goes; `checkpoint()`
    /// between layers and windows returns a promise of whether to stop (the run then rejects with "cancelled");
    /// `emit(file, bytes)` receives the pruned model's files in parts (one tensor at a time). Resolves to the
    /// report, the scores and the generation samples (JSON).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        recipe: String,
        calib: String,
        eval: String,
        tasks: Option<String>,
        tasks_name: Option<String>,
        tasks_items: Option<u32>,
        gpu: bool,
        progress: js_sys::Function,
        checkpoint: js_sys::Function,
        emit: js_sys::Function,
    ) -> js_sys::Promise {
        let files = self.files.clone();
        let (progress, emit) = (JsProgress::new(progress, Some(checkpoint)), Emit(emit));
        wasm_bindgen_futures::future_to_promise(async move {
            let go = async {
                let name = tasks_name.unwrap_or_else(|| "tasks".into());
                let items = tasks_items.map(|n| n as usize);
                let tasks = match tasks {
                    Some(t) => Some(Task::parse(&name, t.as_bytes(), items)?),
                    None => None,
                };
                run::run(&files, &recipe, &calib, &eval, tasks, gpu, &progress, &emit).await
            };
            go.await
                .map(JsValue::from)
                .map_err(|e| JsError::new(&e.to_string()).into())
        })
    }

    /// Generates for `request` (JSON: `text` or `messages`, `max_tokens`, `sampling`) with the loaded model,
    /// or with a run's pruned model when its `config.json` bytes and `model.safetensors` `Blob` are given, on
    /// WebGPU (`gpu`) or the CPU. `on_text(text, tokens)` receives the text so far after every token;
    /// `progress(stage, done, total)` counts tokens; `checkpoint()` between tokens returns a promise of whether to
    /// stop. Resolves to the result (JSON).
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        request: String,
        pruned_config: Option<Vec<u8>>,
        pruned_weights: Option<web_sys::Blob>,
        gpu: bool,
        on_text: js_sys::Function,
        progress: js_sys::Function,
        checkpoint: js_sys::Function,
    ) -> js_sys::Promise {
        let files = self.files.clone();
        let progress = JsProgress::new(progress, Some(checkpoint));
        let on_text = generate::OnText(on_text);
        wasm_bindgen_futures::future_to_promise(async move {
            let pruned = match (pruned_config, pruned_weights) {
                (Some(config), Some(weights)) => Some(files.pruned(&config, weights)),
                _ => None,
            }
            .transpose()
            .map_err(|e| JsValue::from(js(e)))?;
            let model = pruned.as_ref().unwrap_or(&files);
            generate::generate(&files, model, &request, gpu, &on_text, &progress)
                .await
                .map(JsValue::from)
                .map_err(|e| JsError::new(&e.to_string()).into())
        })
    }

    /// A run's pruned model (its `config.json` bytes and `model.safetensors` as a `Blob` the page assembled)
    /// as GGUF with matrices in `dtype` (`f32`, `f16`, `q8_0`), keeping this model's tokenizer and GGUF
    /// metadata: `emit("model.gguf", bytes)` receives it one tensor at a time.
    #[wasm_bindgen(js_name = exportGguf)]
    pub fn export_gguf(
        &self,
        config: &[u8],
        weights: web_sys::Blob,
        dtype: String,
        progress: js_sys::Function,
        emit: js_sys::Function,
    ) -> Result<(), JsError> {
        let progress = JsProgress::new(progress, None);
        export::gguf(&self.files, config, weights, &dtype, &progress, &Emit(emit)).map_err(js)
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
