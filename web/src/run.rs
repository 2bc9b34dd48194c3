//! One run of the lab: load the model on WebGPU or the CPU, perplexity (and multiple-choice accuracy) before,
//! prune (the same core pipeline as the CLI), the same after, and hand the pruned model's files to the page in
//! parts.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use prunelab::backend::{largest_buffer, Precision};
use prunelab::error::{Error, Result};
use prunelab::eval::choice::{EncodedTask, Task};
use prunelab::eval::generate::greedy;
use prunelab::eval::perplexity;
use prunelab::io::gguf::metadata::keep_pre;
use prunelab::io::safetensors_out::{hf_config, SafetensorsLayout, StDtype};
use prunelab::io::Tokenizer;
use prunelab::model::footprint::DeviceLimit;
use prunelab::model::tensors::tensor_specs;
use prunelab::model::Llama;
use prunelab::prune::calib::{calibration_footprint, sample_windows, CalibSource};
use prunelab::prune::pipeline::prune;
use prunelab::prune::recipe::EvalSpec;
use prunelab::prune::report::{EvalReport, Report, StageTime, TasksReport};
use prunelab::prune::Recipe;
use web_time::Instant;

use crate::files::ModelFiles;
use crate::host::{Emit, JsProgress};

/// Initialises burn's wgpu device on the browser's WebGPU adapter; returns its name and limits as JSON.
pub async fn init_webgpu() -> std::result::Result<String, String> {
    use burn::backend::wgpu::{graphics::WebGpu, init_setup_async, RuntimeOptions, WgpuDevice};
    let setup = init_setup_async::<WebGpu>(&WgpuDevice::default(), RuntimeOptions::default()).await;
    let (info, limits) = (setup.adapter.get_info(), setup.adapter.limits());
    Ok(serde_json::json!({
        "name": info.name,
        "driver": info.driver,
        "backend": format!("{:?}", info.backend),
        "max_buffer_size": limits.max_buffer_size,
        "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
    })
    .to_string())
}

/// Everything one run needs besides the backend.
struct Inputs<'a> {
    files: &'a ModelFiles,
    recipe: Recipe,
    calib: Vec<Vec<u32>>,
    eval: Vec<u32>,
    spec: EvalSpec,
    tokenizer: &'a [u8],
    /// The first tokens of the evaluation text: the generation samples continue them.
    prompt: Vec<u32>,
    /// A multiple-choice task scored before and after, as `prune --tasks` scores it.
    tasks: Option<EncodedTask>,
}

/// Tokens of each greedy sample, before and after pruning (fewer when the model ends the text).
const SAMPLE_TOKENS: usize = 24;
/// Tokens of the evaluation text that prompt the samples.
const PROMPT_TOKENS: usize = 16;

#[allow(clippy::too_many_arguments)]
pub async fn run(
    files: &ModelFiles,
    recipe: &str,
    calib: &str,
    eval: &str,
    tasks: Option<Task>,
    gpu: bool,
    progress: &JsProgress,
    emit: &Emit,
) -> Result<String> {
    let recipe = Recipe::from_json(recipe.as_bytes())?;
    recipe.check(&files.config)?;
    let tokenizer = files.tokenizer.as_deref().ok_or_else(|| {
        Error::Tokenizer("the model has no tokenizer.json: texts cannot be tokenized".into())
    })?;
    let tok = Tokenizer::from_json(tokenizer)?;
    let calib = match &recipe.calibration {
        CalibSource::Ids { windows } => windows.clone(),
        CalibSource::Sampled { samples, length } => {
            sample_windows(&tok.encode(calib)?, *samples, *length, recipe.seed)?
        }
    };
    let eval = tok.encode(eval)?;
    let tasks = match tasks {
        Some(t) => Some(t.encode(&tok, &files.config)?),
        None => None,
    };
    let prompt = eval[..eval.len().min(PROMPT_TOKENS)].to_vec();
    let spec = recipe.eval.unwrap_or(EvalSpec {
        seq_len: 128,
        max_windows: Some(64),
    });
    let limit = device_limit(gpu);
    // The tab holds and computes its models in f32.
    calibration_footprint(&files.config, &calib, &recipe, Precision::F32).check(&limit)?;
    spec.options()
        .footprint(&files.config, eval.len())
        .check(&limit)?;
    if let Some(t) = &tasks {
        t.batches.footprint(&files.config).check(&limit)?;
    }
    let inputs = Inputs {
        files,
        prompt,
        spec,
        eval,
        recipe,
        calib,
        tokenizer,
        tasks,
    };
    match gpu {
        true => {
            let device = burn::backend::wgpu::WgpuDevice::default();
            go::<burn::backend::Autodiff<prunelab::backend::Wgpu>>(inputs, device, progress, emit)
                .await
        }
        false => {
            go::<burn::backend::Autodiff<prunelab::backend::Cpu>>(
                inputs,
                Default::default(),
                progress,
                emit,
            )
            .await
        }
    }
}

/// The most bytes one tensor may take: on WebGPU the largest buffer the adapter binds, on the CPU backend what is
/// left of the tab's 4 GiB of wasm memory.
pub(crate) fn device_limit(gpu: bool) -> DeviceLimit {
    match gpu {
        true => largest_buffer::<burn::cubecl::wgpu::WgpuRuntime>(&Default::default(), "WebGPU"),
        false => DeviceLimit {
            bytes: (4u64 << 30).saturating_sub(crate::memory_bytes() as u64),
            source: "what is left of the tab's 4 GiB of wasm memory".into(),
        },
    }
}

async fn go<B: AutodiffBackend>(
    inp: Inputs<'_>,
    device: B::Device,
    progress: &JsProgress,
    emit: &Emit,
) -> Result<String> {
    let cfg = &inp.files.config;
    let mut timings = vec![];
    let mut stage = |name: &str, start: Instant| {
        timings.push(StageTime {
            stage: name.into(),
            seconds: start.elapsed().as_secs_f64(),
        })
    };
    let start = Instant::now();
    let model = inp
        .files
        .with_source(|src| Llama::<B>::load(cfg, src, &device))?;
    stage("load", start);
    let opts = inp.spec.options();
    let start = Instant::now();
    let before = perplexity(&model.valid(), &inp.eval, &opts, &device, progress).await?;
    stage("eval before", start);
    let tok = Tokenizer::from_json(inp.tokenizer)?;
    let start = Instant::now();
    let tasks_before = match &inp.tasks {
        Some(t) => Some(t.accuracy(&model.valid(), &device, progress).await?),
        None => None,
    };
    if tasks_before.is_some() {
        stage("tasks before", start);
    }
    let (prompt, stop) = (&inp.prompt, cfg.eos_token_id.as_slice());
    let sample_before = greedy(&model.valid(), prompt, SAMPLE_TOKENS, stop, &device).await?;
    let start = Instant::now();
    let out = prune(model, &inp.recipe, &inp.calib, &device, progress).await?;
    let sample_after = greedy(&out.model, prompt, SAMPLE_TOKENS, stop, &device).await?;
    stage("prune", start);
    let start = Instant::now();
    let after = perplexity(&out.model, &inp.eval, &opts, &device, progress).await?;
    stage("eval after", start);
    let start = Instant::now();
    let tasks = match (&inp.tasks, tasks_before) {
        (Some(t), Some(before)) => Some(TasksReport {
            task: t.name.clone(),
            before,
            after: t.accuracy(&out.model, &device, progress).await?,
        }),
        _ => None,
    };
    if tasks.is_some() {
        stage("tasks after", start);
    }
    let mut timings_all = out.timings.clone();
    timings_all.extend(timings);
    let mut report = Report::new(
        &inp.recipe,
        out.ratio,
        cfg,
        &out.model.config,
        out.plan.clone(),
        &out.scores,
        out.reconstruction.clone(),
        timings_all,
        Some(EvalReport { before, after }),
    );
    report.tasks = tasks;
    report.adapruner = out.tuned.clone();
    report.search = out.search.clone();
    let pretty = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("json");
    let mut config = hf_config(
        &out.model.config,
        inp.files.base_config.as_ref(),
        StDtype::F32,
    );
    keep_pre(&mut config, &inp.files.gguf_metadata);
    emit.part("config.json", &pretty(config))?;
    emit.part("tokenizer.json", inp.tokenizer)?;
    for (name, bytes) in &inp.files.side_files {
        emit.part(name, bytes)?;
    }
    emit.part(
        "report.json",
        &pretty(serde_json::to_value(&report).expect("json")),
    )?;
    emit.part(
        "plan.json",
        &pretty(serde_json::to_value(&report.plan).expect("json")),
    )?;
    emit.part(
        "recipe.json",
        &pretty(serde_json::to_value(&report.recipe).expect("json")),
    )?;
    // The weights: one safetensors file, header first, then one tensor at a time.
    let specs: Vec<(String, Vec<usize>)> = tensor_specs(&out.model.config)
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect();
    let layout = SafetensorsLayout::new(&specs, StDtype::F32, usize::MAX)?;
    let weights: std::collections::HashMap<_, _> = out.model.named_weights().into_iter().collect();
    for shard in &layout.shards {
        emit.part(&shard.file, &shard.header)?;
        for name in &shard.tensors {
            let w = weights.get(name).ok_or_else(|| Error::MissingTensor {
                name: name.clone(),
                expected: vec![],
            })?;
            emit.part(
                &shard.file,
                &StDtype::F32.encode(w.clone().to_data().await?),
            )?;
        }
    }
    Ok(serde_json::json!({
        "report": report,
        "scores": out.scores,
        "sample": {
            "prompt": tok.decode(prompt)?,
            "before": tok.decode(&sample_before)?,
            "after": tok.decode(&sample_after)?,
        },
    })
    .to_string())
}
