//! Shared helpers of the cross-cutting tests: where the fixtures are, and how to read them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use prunelab::io::SafetensorsWeights;
use prunelab::model::config::Llama3Scaling;
use prunelab::model::{Llama, ModelConfig, WeightSource};

/// `../shared` beside the repository (override with `PRUNELAB_SHARED`).
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("PRUNELAB_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    }
}

/// A fixture folder, e.g. `fixture("tiny-gqa")`.
pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures").join(name)
}

/// Reads a file, panicking with its path (tests only).
pub fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The built-in demo model's folder (`models/demo`).
pub fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/demo")
}

/// A text file's token ids through `model`'s `tokenizer.json`: what `--eval` or `--calib` with that file reads,
/// for the `--eval-ids` / `--calib-ids` side of a comparison.
pub fn tokenized(model: &std::path::Path, text: &std::path::Path) -> Vec<u32> {
    let tokenizer =
        prunelab::io::Tokenizer::from_json(&read(&model.join("tokenizer.json"))).unwrap();
    let text = std::fs::read_to_string(text).unwrap_or_else(|e| panic!("{}: {e}", text.display()));
    tokenizer.encode(&text).unwrap()
}

/// A fixture's `golden.json`.
pub fn golden_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&read(&fixture(name).join("golden.json"))).expect("golden.json parses")
}

/// All tensors of a fixture's `golden.safetensors`, as (shape, f32 values).
pub fn golden_tensors(name: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = read(&fixture(name).join("golden.safetensors"));
    let st =
        SafetensorsWeights::from_files(&[("golden.safetensors".into(), &bytes)], None).unwrap();
    st.inventory()
        .into_iter()
        .map(|(n, shape)| {
            let v = st.read_f32(&n).unwrap();
            (n, (shape, v))
        })
        .collect()
}

/// `[[id, …], …]` from a golden.json field, as windows.
pub fn id_windows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// The fixture's config and raw weights bytes.
pub fn fixture_files(name: &str) -> (ModelConfig, Vec<u8>) {
    let dir = fixture(name);
    let cfg = ModelConfig::from_json(&read(&dir.join("config.json"))).unwrap();
    (cfg, read(&dir.join("model.safetensors")))
}

/// Loads a fixture model on backend `B`.
pub fn load_fixture<B: burn::tensor::backend::Backend>(name: &str, device: &B::Device) -> Llama<B> {
    let (cfg, bytes) = fixture_files(name);
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    Llama::load(&cfg, &st, device).unwrap()
}

/// Loads an HF folder with one `model.safetensors` (as the CLI writes small models) on backend `B`.
pub fn load_hf_folder<B: burn::tensor::backend::Backend>(
    path: &std::path::Path,
    device: &B::Device,
) -> Llama<B> {
    let bytes = read(&path.join("model.safetensors"));
    let cfg = ModelConfig::from_json(&read(&path.join("config.json"))).unwrap();
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    Llama::load(&cfg, &st, device).unwrap()
}

/// Loads a GGUF file on backend `B`.
pub fn load_gguf<B: burn::tensor::backend::Backend>(
    path: &std::path::Path,
    device: &B::Device,
) -> Llama<B> {
    let bytes = read(path);
    let parsed = prunelab::io::gguf::GgufModel::parse(&bytes).unwrap();
    Llama::load(&parsed.config, &parsed, device).unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Runs the CLI with `args`, which must succeed; its stdout.
#[cfg(feature = "cli")]
pub fn run_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prunelab"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the CLI with `args`, which must be refused: exit code 2, no panic, nothing on stdout; its stderr.
#[cfg(feature = "cli")]
pub fn refused_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prunelab"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    err
}

/// `prune MODEL --out OUT` with `flags`, which must be refused ([`refused_cli`]) with a message containing `want`,
/// leaving no output behind.
#[cfg(feature = "cli")]
pub fn refused_prune(model: &std::path::Path, out: &std::path::Path, flags: &[&str], want: &str) {
    refused_prune_saying(model, out, flags, &[want]);
}

/// [`refused_prune`] whose one message holds every part of `wants` (what it names, and what to change).
#[cfg(feature = "cli")]
pub fn refused_prune_saying(
    model: &std::path::Path,
    out: &std::path::Path,
    flags: &[&str],
    wants: &[&str],
) {
    let (model, out_arg) = (model.to_str().unwrap(), out.to_str().unwrap());
    let args = [&["prune", model, "--out", out_arg][..], flags].concat();
    let err = refused_cli(&args);
    for want in wants {
        assert!(err.contains(want), "{flags:?}: {want:?} missing from {err}");
    }
    assert!(!out.exists(), "{flags:?} wrote an output");
}

/// `run_cli` on owned arguments, its stdout parsed as the JSON it prints (`--json`).
pub fn run_cli_json(args: &[String]) -> serde_json::Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&run_cli(&refs)).unwrap()
}

/// Writes fixture `name`'s golden calibration windows as `calib.json` in `dir` (for `--calib-ids`).
pub fn calib_ids_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let path = dir.join("calib.json");
    std::fs::write(
        &path,
        golden_json(name)["calibration_input_ids"].to_string(),
    )
    .unwrap();
    path
}

/// Replays a CLI run: prunes `model` into `out` with the `plan.json` and `recipe.json` the run wrote to `run`,
/// calibrating on the token windows in `ids` (JSON).
pub fn replay_run(
    model: &std::path::Path,
    run: &std::path::Path,
    out: &std::path::Path,
    ids: &std::path::Path,
) {
    let (plan, recipe) = (run.join("plan.json"), run.join("recipe.json"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    run_cli(&[
        "prune",
        &path(model),
        "--out",
        &path(out),
        "--plan",
        &path(&plan),
        "--recipe",
        &path(&recipe),
        "--calib-ids",
        &path(ids),
    ]);
}

/// LLaMA-3 rotary scaling with `low_freq_factor` 1 (as in every release): frequencies with wavelengths above
/// `l` divided by `factor`, below `l / high` kept.
pub fn llama3(factor: f64, high: f64, l: usize) -> Llama3Scaling {
    Llama3Scaling {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: high,
        original_max_position_embeddings: l,
    }
}

/// A progress sink that keeps every report: `(stage, done, total, message)`.
#[derive(Default)]
pub struct Recorder(std::cell::RefCell<Vec<(String, usize, usize, String)>>);

impl prunelab::progress::Progress for Recorder {
    fn report(&self, e: prunelab::progress::ProgressEvent<'_>) {
        self.0
            .borrow_mut()
            .push((e.stage.into(), e.done, e.total, e.message));
    }
}

impl Recorder {
    /// The reports of `stage`, in order: `(done, total, message)`.
    pub fn of(&self, stage: &str) -> Vec<(usize, usize, String)> {
        let all = self.0.borrow();
        let of = all.iter().filter(|e| e.0 == stage);
        of.map(|(_, d, t, m)| (*d, *t, m.clone())).collect()
    }
}
