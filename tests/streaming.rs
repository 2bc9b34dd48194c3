//! Streamed pruning (`prune --stream`) on a synthetic checkpoint of the `tiny` shape: it writes the same model as
//! the in-memory pipeline, reads each input layer once and only after the previous output layer was written,
//! and never holds more than one decoder layer on the device and one on the host.

mod common;

use std::cell::RefCell;
use std::process::Command;

use burn::backend::Flex;
use burn::tensor::TensorData;
use common::{run_cli, run_cli_json};
use prunelab::eval::streamed::streamed_perplexity;
use prunelab::eval::{perplexity, PerplexityOptions};
use prunelab::model::random::RandomWeights;
use prunelab::model::shapes::known_shape;
use prunelab::model::tensors::tensor_specs;
use prunelab::model::{Llama, ModelConfig, WeightSource};
use prunelab::progress::Silent;
use prunelab::prune::calib::sample_windows;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::depth::remove_layers;
use prunelab::prune::plan::Plan;
use prunelab::prune::recipe::{LayerRange, Recipe};
use prunelab::prune::sequential::prune_sequential;
use prunelab::prune::streaming::Streamed;
use prunelab::prune::structure::StructureKind;
use prunelab::prune::Importance;

fn tiny() -> ModelConfig {
    ModelConfig::from_json(&serde_json::to_vec(&known_shape("tiny").unwrap()).unwrap()).unwrap()
}

fn recipe(compensation: Compensation) -> Recipe {
    Recipe {
        importance: Importance::Obs,
        compensation,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 1, end: 3 }),
        ..Recipe::default()
    }
}

fn calib(cfg: &ModelConfig) -> Vec<Vec<u32>> {
    let ids: Vec<u32> = (0..4000u32)
        .map(|i| (i * 7919 + i / 3) % cfg.vocab_size as u32)
        .collect();
    sample_windows(&ids, 8, 32, 1).unwrap()
}

/// Records every tensor read from the input and from the streamed output, in order.
struct Logged<'a> {
    inner: &'a dyn WeightSource,
    log: &'a RefCell<Vec<String>>,
}

impl WeightSource for Logged<'_> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.inner.inventory()
    }
    fn read(&self, name: &str) -> prunelab::Result<TensorData> {
        self.log.borrow_mut().push(format!("in {name}"));
        self.inner.read(name)
    }
}

/// The pruned model streamed from `input` at the recipe's ratio, on the CPU backend.
fn stream<'a>(
    input: &'a dyn WeightSource,
    cfg: &ModelConfig,
    recipe: &'a Recipe,
    calib: &'a [Vec<u32>],
) -> Streamed<'a, Flex> {
    let device = Default::default();
    Streamed::new(
        input,
        cfg,
        recipe,
        recipe.ratio,
        None,
        calib,
        device,
        &Silent,
    )
    .unwrap()
}

/// Bytes of decoder layer `l`'s weights in f32.
fn layer_bytes(c: &ModelConfig, l: usize) -> usize {
    tensor_specs(c)
        .iter()
        .filter(|s| s.layer == Some(l))
        .map(|s| s.numel() * 4)
        .sum()
}

fn layer_of(name: &str) -> Option<usize> {
    name.split("model.layers.")
        .nth(1)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[test]
fn streamed_pruning_equals_the_in_memory_pipeline_one_layer_at_a_time() {
    for comp in [Compensation::Ls, Compensation::LsBias] {
        let cfg = tiny();
        let weights = RandomWeights::new(&cfg, 5, 0.05);
        let (recipe, calib) = (recipe(comp), calib(&cfg));
        let device = Default::default();

        let model = Llama::<Flex>::load(&cfg, &weights, &device).unwrap();
        let whole = pollster::block_on(prune_sequential(
            model,
            &recipe,
            recipe.ratio,
            &calib,
            None,
            &device,
            &Silent,
        ))
        .unwrap();
        let expected: Vec<(String, Vec<f32>)> = whole
            .model
            .named_weights()
            .into_iter()
            .map(|(n, w)| {
                (
                    n,
                    pollster::block_on(prunelab::readback::to_vec(w.flatten())).unwrap(),
                )
            })
            .collect();

        let log = RefCell::new(vec![]);
        let input = Logged {
            inner: &weights,
            log: &log,
        };
        let streamed = stream(&input, &cfg, &recipe, &calib);
        assert_eq!(streamed.config(), &whole.model.config);
        // A writer's order: the output's tensors as the config lists them.
        for spec in tensor_specs(streamed.config()) {
            let got = streamed.read_f32(&spec.name).unwrap();
            log.borrow_mut().push(format!("out {}", spec.name));
            let want = &expected.iter().find(|(n, _)| *n == spec.name).unwrap().1;
            let diff = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "{comp:?} {}: differs by {diff}", spec.name);
        }
        let (plan, _, recon) = streamed.take_results();
        assert_eq!(plan, whole.plan);
        assert_eq!(recon.len(), 4);

        // Input layers in the range are read once each, and only after every output tensor of the layers before
        // them was written (no read-ahead, nothing pending).
        let log = log.borrow().clone();
        for (i, entry) in log.iter().enumerate() {
            let Some(name) = entry.strip_prefix("in ") else {
                continue;
            };
            let Some(l) = layer_of(name).filter(|l| (1..3).contains(l)) else {
                continue;
            };
            let reads = log.iter().filter(|e| *e == entry).count();
            assert_eq!(reads, 1, "{name} read {reads} times");
            let pending = tensor_specs(streamed.config())
                .iter()
                .filter(|s| s.layer.is_some_and(|k| k < l))
                .filter(|s| !log[..i].contains(&format!("out {}", s.name)))
                .count();
            assert_eq!(
                pending, 0,
                "{name} was read with {pending} earlier output tensors unwritten"
            );
        }
        // Peak memory of decoder-layer weights: one layer on the device, one pruned layer on the host.
        let max_in = (0..4).map(|l| layer_bytes(&cfg, l)).max().unwrap();
        let max_out = (0..4)
            .map(|l| layer_bytes(streamed.config(), l))
            .max()
            .unwrap();
        let peak = streamed.peak();
        assert!(
            peak.device <= max_in,
            "device peak {} > one layer {max_in}",
            peak.device
        );
        assert!(
            peak.host <= max_out,
            "host peak {} > one layer {max_out}",
            peak.host
        );
        assert!(peak.device > 0 && peak.host > 0);
    }
}

#[test]
fn whole_layers_stream_like_the_in_memory_run_with_two_layers_on_the_device() {
    for comp in [Compensation::Ls, Compensation::None] {
        let cfg = tiny();
        let weights = RandomWeights::new(&cfg, 7, 0.05);
        let calib = calib(&cfg);
        let recipe = Recipe {
            structures: vec![StructureKind::Layers],
            importance: Importance::BlockInfluence,
            compensation: comp,
            ratio: Some(0.5),
            layers: Some(LayerRange { start: 1, end: 4 }),
            ..Recipe::default()
        };
        // Layers 2 and 3 go: one run, absorbed by layer 1.
        let plan = Plan::depth(&cfg, vec![2, 3]);
        let device = Default::default();
        let model = Llama::<Flex>::load(&cfg, &weights, &device).unwrap();
        let whole = pollster::block_on(remove_layers(
            model,
            &recipe,
            plan.clone(),
            &calib,
            &device,
            &Silent,
        ))
        .unwrap();
        let log = RefCell::new(vec![]);
        let input = Logged {
            inner: &weights,
            log: &log,
        };
        let streamed = Streamed::<Flex>::new(
            &input,
            &cfg,
            &recipe,
            None,
            Some(&plan),
            &calib,
            device,
            &Silent,
        )
        .unwrap();
        assert_eq!(streamed.config(), &whole.model.config);
        assert_eq!(streamed.config().num_layers(), 2);
        for (name, w) in whole.model.named_weights() {
            let want = pollster::block_on(prunelab::readback::to_vec(w.flatten())).unwrap();
            let got = streamed.read_f32(&name).unwrap();
            assert_eq!(got.len(), want.len(), "{name}");
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-6, "{comp:?} {name}: differs by {diff}");
        }
        let (got_plan, _, recon) = streamed.take_results();
        assert_eq!(got_plan, plan);
        assert_eq!(recon.len(), usize::from(comp != Compensation::None));
        // Output layer 1 is input layer 1 (repaired) and nothing of input layers 2 and 3 is copied.
        let log = log.borrow();
        let copied = |l: usize| log.iter().filter(|e| layer_of(e) == Some(l)).count();
        let per_layer = tensor_specs(&cfg)
            .iter()
            .filter(|s| s.layer == Some(2))
            .count();
        match comp {
            // Without a repair nothing runs: each kept layer is copied once, the removed ones never read.
            Compensation::None => {
                assert_eq!(
                    (copied(0), copied(1), copied(2), copied(3)),
                    (per_layer, per_layer, 0, 0)
                );
                assert_eq!(streamed.peak().device, 0);
            }
            // With one: layers 0 and 1 run the windows (layer 0 is then copied), 2 and 3 run once.
            _ => {
                assert_eq!(copied(0), 2 * per_layer);
                assert_eq!(
                    (copied(1), copied(2), copied(3)),
                    (per_layer, per_layer, per_layer)
                );
                let one = layer_bytes(&cfg, 1);
                let peak = streamed.peak();
                assert!(
                    peak.device <= 2 * one,
                    "device peak {} > two layers",
                    peak.device
                );
                assert!(
                    peak.device > one,
                    "the kept layer stays while the run passes"
                );
                assert!(peak.host <= layer_bytes(streamed.config(), 1));
            }
        }
    }
}

/// The largest difference between two f32 HF outputs' tensors (same names and shapes).
fn output_diff(a: &std::path::Path, b: &std::path::Path) -> f32 {
    let (x, y) = (
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
    );
    let (sx, sy) = (
        safetensors::SafeTensors::deserialize(&x).unwrap(),
        safetensors::SafeTensors::deserialize(&y).unwrap(),
    );
    assert_eq!(sx.len(), sy.len());
    let f = |b: &[u8]| -> Vec<f32> {
        b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut diff = 0.0f32;
    for (name, t) in sx.tensors() {
        let u = sy.tensor(&name).unwrap();
        assert_eq!(t.shape(), u.shape(), "{name}");
        diff = diff.max(common::max_abs_diff(&f(t.data()), &f(u.data())));
    }
    diff
}

/// Whole layers and then width, streamed: a width pass reading a depth pass gives the model of the two steps in
/// memory, reads each input decoder layer once, and each pass holds its own layers only (two on the device for
/// the depth repair, one for the width pass; one on the host each).
#[test]
fn a_width_pass_over_a_depth_pass_streams_both_steps() {
    let cfg = tiny();
    let weights = RandomWeights::new(&cfg, 7, 0.05);
    let calib = calib(&cfg);
    let depth = Recipe {
        structures: vec![StructureKind::Layers],
        importance: Importance::BlockInfluence,
        compensation: Compensation::Ls,
        ratio: Some(0.3),
        layers: Some(LayerRange { start: 1, end: 4 }),
        ..Recipe::default()
    };
    // Layer 1 goes, absorbed by layer 0 (below the width range); the width step narrows layers 1..3 of the three
    // left (input layers 2 and 3).
    let plan = Plan::depth(&cfg, vec![1]);
    let width = Recipe {
        structures: vec![StructureKind::KvGroups, StructureKind::Mlp],
        layers: Some(LayerRange { start: 1, end: 3 }),
        ..recipe(Compensation::Ls)
    };
    let device = Default::default();
    let model = Llama::<Flex>::load(&cfg, &weights, &device).unwrap();
    let shallower = pollster::block_on(remove_layers(
        model,
        &depth,
        plan.clone(),
        &calib,
        &device,
        &Silent,
    ))
    .unwrap();
    let mid = shallower.model.config.clone();
    let whole = pollster::block_on(prune_sequential(
        shallower.model,
        &width,
        width.ratio,
        &calib,
        None,
        &device,
        &Silent,
    ))
    .unwrap();

    let log = RefCell::new(vec![]);
    let input = Logged {
        inner: &weights,
        log: &log,
    };
    let depth_pass = || {
        Streamed::<Flex>::new(
            &input,
            &cfg,
            &depth,
            None,
            Some(&plan),
            &calib,
            device,
            &Silent,
        )
        .unwrap()
    };
    // The width pass runs its windows through layer 0, which its writer also copies: without a second read of
    // the depth pass's layers below the range, the chain stops with a clear error.
    let inner = depth_pass();
    let outer = stream(&inner, &mid, &width, &calib);
    let err = tensor_specs(outer.config())
        .iter()
        .map(|spec| outer.read(&spec.name))
        .find_map(|r| r.err())
        .unwrap()
        .to_string();
    assert!(err.contains("was already read"), "{err}");

    log.borrow_mut().clear();
    let inner = depth_pass().rereadable_below(1);
    let outer = stream(&inner, &mid, &width, &calib);
    assert_eq!(outer.config(), &whole.model.config);
    for (name, w) in whole.model.named_weights() {
        let want = pollster::block_on(prunelab::readback::to_vec(w.flatten())).unwrap();
        let got = outer.read_f32(&name).unwrap();
        let diff = common::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{name}: differs by {diff}");
    }
    let (depth_plan, _, depth_recon) = inner.take_results();
    let (width_plan, _, width_recon) = outer.take_results();
    assert_eq!(depth_plan, plan);
    assert_eq!(width_plan, whole.plan);
    assert_eq!((depth_recon.len(), width_recon.len()), (1, 4));
    assert_eq!(depth_recon[0].layer, 0);
    // Every input decoder tensor is read once (layer 1 to repair layer 0, the rest as each pass needs them).
    let log = log.borrow();
    for spec in tensor_specs(&cfg).iter().filter(|s| s.layer.is_some()) {
        let reads = log.iter().filter(|e| **e == format!("in {}", spec.name));
        assert_eq!(reads.count(), 1, "{}", spec.name);
    }
    let (one_in, one_mid) = (layer_bytes(&cfg, 1), layer_bytes(&mid, 1));
    let (d, w) = (inner.peak(), outer.peak());
    assert!(d.device > one_in && d.device <= 2 * one_in, "{d:?}");
    assert!(d.host <= layer_bytes(&mid, 0), "{d:?}");
    assert!(w.device > 0 && w.device <= one_mid, "{w:?}");
    assert!(
        w.host > 0 && w.host <= layer_bytes(outer.config(), 1),
        "{w:?}"
    );
}

/// `prune --stream --depth-ratio` chains the two passes and writes the in-memory run's model, plan, scores and
/// repairs, for a uniform width step, a global one (scored in a pass over a depth pass) and one without repair;
/// the saved plan replays streamed to the same model.
#[test]
fn cli_streams_whole_layers_then_width_like_the_in_memory_run() {
    let dir = tempfile::tempdir().unwrap();
    let (synth, ids) = synth_tiny(dir.path());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let common = [
        "--depth-ratio",
        "0.3",
        "--structures",
        "kv-groups,mlp",
        "--layers",
        "1..4",
        "--calib-ids",
        ids.to_str().unwrap(),
    ];
    let run = |out: &std::path::Path, extra: &[&str]| prune_json(&synth, out, &common, extra);
    let runs: [(&str, &[&str]); 3] = [
        (
            "flap-uniform",
            &[
                "--importance",
                "flap",
                "--compensation",
                "ls",
                "--ratio",
                "0.5",
            ],
        ),
        (
            "flap-global",
            &[
                "--importance",
                "flap",
                "--compensation",
                "ls",
                "--allocation",
                "global",
                "--target-params",
                "0.4",
            ],
        ),
        (
            "l2-none",
            &[
                "--depth-importance",
                "l2",
                "--importance",
                "l2",
                "--compensation",
                "none",
                "--ratio",
                "0.5",
            ],
        ),
    ];
    for (name, extra) in runs {
        let (a, b) = (dir.path().join(name), dir.path().join(format!("{name}-s")));
        let whole = run(&a, extra);
        let mut args = extra.to_vec();
        args.push("--stream");
        let streamed = run(&b, &args);
        for key in ["plan", "ratio", "params_after", "scores", "reconstruction"] {
            assert_eq!(whole[key], streamed[key], "{name} {key}");
        }
        assert_eq!(whole["plan"]["removed_layers"].as_array().unwrap().len(), 1);
        let diff = output_diff(&a, &b);
        assert!(diff < 1e-5, "{name}: {diff}");
        let stages = stage_names(&streamed);
        let passes = [
            "depth: load layers",
            "depth: compute",
            "depth: read back",
            "load layers",
            "compute",
            "read back",
            "copy + write",
        ];
        let scored: &[&str] = match name {
            "flap-global" => &["depth: score", "score"],
            _ => &["depth: score"],
        };
        assert_eq!(stages, [scored, &passes].concat(), "{name}");
        // Each pass counts only its own time (the width pass's loads leave out the depth work they set off).
        let timings = streamed["timings"].as_array().unwrap();
        assert!(
            timings
                .iter()
                .all(|t| t["seconds"].as_f64().unwrap() >= 0.0),
            "{name}: {timings:?}"
        );
        // The saved plan and recipe, streamed: the same model again.
        let replayed = dir.path().join(format!("{name}-replayed"));
        let (plan, recipe) = (path(&a.join("plan.json")), path(&a.join("recipe.json")));
        let replay = [
            "--plan",
            &plan,
            "--recipe",
            &recipe,
            "--calib-ids",
            ids.to_str().unwrap(),
            "--stream",
        ];
        let again = prune_json(&synth, &replayed, &replay, &[]);
        assert_eq!(again["plan"], whole["plan"], "{name}");
        assert_eq!(again["reconstruction"], whole["reconstruction"], "{name}");
        let diff = output_diff(&a, &replayed);
        assert!(diff < 1e-5, "{name} replayed: {diff}");
    }
}

/// Perplexity read one decoder layer at a time: the in-memory number exactly (the same windows and batches),
/// with every input tensor read once.
#[test]
fn streamed_perplexity_reads_each_layer_once_for_the_in_memory_number() {
    let cfg = tiny();
    let weights = RandomWeights::new(&cfg, 5, 0.05);
    let ids: Vec<u32> = calib(&cfg).concat();
    let opts = PerplexityOptions {
        seq_len: 32,
        max_windows: Some(7),
        batch: 3,
    };
    let device = Default::default();
    let model = Llama::<Flex>::load(&cfg, &weights, &device).unwrap();
    let want = pollster::block_on(perplexity(&model, &ids, &opts, &device, &Silent)).unwrap();
    let log = RefCell::new(vec![]);
    let input = Logged {
        inner: &weights,
        log: &log,
    };
    let got = streamed_perplexity::<Flex>(&input, &cfg, &ids, &opts, &device, &Silent).unwrap();
    assert_eq!(got, want);
    assert_eq!((got.windows, got.tokens), (7, 7 * 31));
    let mut reads = log.borrow().clone();
    reads.sort();
    let mut names: Vec<String> = tensor_specs(&cfg)
        .into_iter()
        .map(|s| format!("in {}", s.name))
        .collect();
    names.sort();
    assert_eq!(reads, names);
    // An id outside the vocabulary is refused before any layer is read.
    log.borrow_mut().clear();
    let err = streamed_perplexity::<Flex>(&input, &cfg, &[5, 1000, 7], &opts, &device, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 1000 is outside the model's vocabulary of 1000"),
        "{err}"
    );
    assert!(log.borrow().is_empty());
}

/// `prune --stream --eval` measures the input before and the output as written after, one layer at a time: the
/// in-memory run's perplexities on the demo (whole layers then width), HF and GGUF, and so does `--eval-ids`
/// with the text's ids; `eval --stream` gives `eval`'s number.
#[test]
fn streamed_runs_evaluate_like_the_in_memory_run() {
    let dir = tempfile::tempdir().unwrap();
    let demo = common::demo_dir();
    let data = common::shared_dir().join("data");
    let (calib, eval) = (
        data.join("calib-python-tutorial.txt"),
        data.join("eval-python-faq.txt"),
    );
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (calib, eval) = (path(&calib), path(&eval));
    let common = [
        "--depth-ratio",
        "0.2",
        "--structures",
        "kv-groups,mlp",
        "--importance",
        "flap",
        "--compensation",
        "ls",
        "--ratio",
        "0.3",
        "--layers",
        "1..5",
        "--calib-samples",
        "8",
        "--eval-windows",
        "6",
        "--calib",
        &calib,
    ];
    let with_text = [&common[..], &["--eval", &eval]].concat();
    let run = |out: &std::path::Path, extra: &[&str]| prune_json(&demo, out, &with_text, extra);
    let whole = run(&dir.path().join("whole"), &[]);
    assert!(
        whole["eval"]["after"]["ppl"].as_f64().unwrap()
            > whole["eval"]["before"]["ppl"].as_f64().unwrap()
    );
    let ids = common::tokenized(&demo, std::path::Path::new(&eval));
    let ids_file = dir.path().join("eval.json");
    std::fs::write(&ids_file, serde_json::to_string(&ids).unwrap()).unwrap();
    let ids_file = path(&ids_file);
    for (name, extra) in [
        ("hf", vec!["--stream"]),
        ("m.gguf", vec!["--stream", "--format", "gguf"]),
        ("ids", vec!["--stream", "--eval-ids", &ids_file]),
    ] {
        let out = dir.path().join(name);
        let streamed = match name {
            // The evaluation text's ids in place of the text.
            "ids" => prune_json(&demo, &out, &common, &extra),
            _ => run(&out, &extra),
        };
        assert_eq!(streamed["plan"], whole["plan"], "{name}");
        for when in ["before", "after"] {
            let (a, b) = (&whole["eval"][when], &streamed["eval"][when]);
            assert_eq!(a["tokens"], b["tokens"], "{name} {when}");
            let (x, y) = (
                a["mean_nll"].as_f64().unwrap(),
                b["mean_nll"].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-6, "{name} {when}: {x} vs {y}");
        }
        let stages = stage_names(&streamed);
        assert_eq!(stages.first(), Some(&"eval before"), "{name}");
        assert_eq!(stages.last(), Some(&"eval after"), "{name}");
    }
    for model in [&demo, &dir.path().join("hf")] {
        let eval_args = |stream: bool| {
            let mut a = vec![
                "eval".to_string(),
                path(model),
                "--text".into(),
                eval.clone(),
            ];
            a.extend(["--max-windows", "6", "--json"].map(String::from));
            if stream {
                a.push("--stream".into());
            }
            a
        };
        let (a, b) = (
            run_cli_json(&eval_args(false)),
            run_cli_json(&eval_args(true)),
        );
        assert_eq!(a["mean_nll"], b["mean_nll"], "{}", model.display());
    }
}

/// `prunelab prune MODEL --out OUT --json` with `common` then `extra` flags: its report.
fn prune_json(
    model: &std::path::Path,
    out: &std::path::Path,
    common: &[&str],
    extra: &[&str],
) -> serde_json::Value {
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mut args = vec!["prune".to_string(), path(model), "--out".into(), path(out)];
    args.push("--json".into());
    args.extend(common.iter().chain(extra).map(|a| a.to_string()));
    run_cli_json(&args)
}

/// The stage names of a report's timings, in order.
fn stage_names(report: &serde_json::Value) -> Vec<&str> {
    report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap())
        .collect()
}

/// An f32 synthetic checkpoint of the `tiny` shape in `dir`, and its calibration windows as a JSON file.
fn synth_tiny(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let synth = dir.join("tiny");
    run_cli(&[
        "synth",
        "--shape",
        "tiny",
        "--out",
        synth.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    let ids = dir.join("calib.json");
    std::fs::write(&ids, serde_json::to_vec(&calib(&tiny())).unwrap()).unwrap();
    (synth, ids)
}

#[test]
fn cli_streams_a_synthetic_checkpoint_to_the_same_output_as_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_prunelab");
    let (synth, ids) = synth_tiny(dir.path());
    let common = [
        "--compensation",
        "ls",
        "--target-params",
        "0.15",
        "--layers",
        "1..4",
        "--calib-ids",
        ids.to_str().unwrap(),
        "--json",
    ];
    // `global` ranks every layer before pruning: streamed, a first pass scores the unpruned layers one at a
    // time. Activation scores (flap) and weight scores (l2) both stream.
    let runs = [
        ("flap", "uniform"),
        ("flap", "global"),
        ("l2", "uniform"),
        ("l2", "global"),
    ];
    for (importance, allocation) in runs {
        let (a, b) = (
            dir.path().join(format!("whole-{importance}-{allocation}")),
            dir.path()
                .join(format!("streamed-{importance}-{allocation}")),
        );
        let mut args = vec![
            "prune",
            synth.to_str().unwrap(),
            "--out",
            a.to_str().unwrap(),
            "--importance",
            importance,
            "--allocation",
            allocation,
        ];
        args.extend(common);
        let whole: serde_json::Value = serde_json::from_str(&run_cli(&args)).unwrap();
        args[3] = b.to_str().unwrap();
        args.push("--stream");
        let streamed: serde_json::Value = serde_json::from_str(&run_cli(&args)).unwrap();
        assert_eq!(
            whole["params_after"], streamed["params_after"],
            "{importance} {allocation}"
        );
        assert_eq!(whole["plan"], streamed["plan"], "{importance} {allocation}");
        assert_eq!(
            whole["scores"], streamed["scores"],
            "{importance} {allocation}"
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["plan"], streamed["plan"]);
        // Where the time went: the layers' phases, then passing tensors through and writing.
        let timings = streamed["timings"].as_array().unwrap();
        let stages = stage_names(&streamed);
        let mut want = vec!["load layers", "compute", "read back", "copy + write"];
        if allocation == "global" {
            want.insert(0, "score");
        }
        assert_eq!(stages, want);
        assert!(timings
            .iter()
            .all(|t| t["seconds"].as_f64().unwrap() >= 0.0));
        let diff = output_diff(&a, &b);
        assert!(diff < 1e-5, "{importance} {allocation}: {diff}");
    }
    // Recipes that need the whole model are refused up front, and nothing is written.
    for amount in [["--ratio", "0.2"], ["--target-params", "0.15"]] {
        let c = dir.path().join("refused");
        let mut args = vec![
            "prune",
            synth.to_str().unwrap(),
            "--out",
            c.to_str().unwrap(),
            "--importance",
            "taylor-first",
            "--calib-ids",
            ids.to_str().unwrap(),
            "--stream",
        ];
        args.extend(amount);
        if amount[0] == "--target-params" {
            args.extend(["--allocation", "global"]);
        }
        let out = Command::new(bin).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{amount:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("training-free"));
        assert!(!c.exists());
    }
}

/// A weight score without repair, or a saved plan without repair, streams without calibration text: each input
/// tensor is read once (no activations run through the layers) and the output is the in-memory slice, byte for
/// byte, uniform and global.
#[test]
fn weight_scores_without_repair_stream_without_calibration() {
    let cfg = tiny();
    let weights = RandomWeights::new(&cfg, 5, 0.05);
    let recipe = Recipe {
        importance: Importance::L1,
        ..recipe(Compensation::None)
    };
    let log = RefCell::new(vec![]);
    let input = Logged {
        inner: &weights,
        log: &log,
    };
    let streamed = stream(&input, &cfg, &recipe, &[]);
    for spec in tensor_specs(streamed.config()) {
        streamed.read(&spec.name).unwrap();
    }
    let reads = log.borrow().clone();
    let names: Vec<String> = tensor_specs(&cfg).into_iter().map(|s| s.name).collect();
    assert_eq!(reads.len(), names.len(), "{reads:?}");
    for name in &names {
        assert!(reads.contains(&format!("in {name}")), "{name} never read");
    }
    let (plan, scores, recon) = streamed.take_results();
    assert_eq!((plan.layers.len(), scores.len(), recon.len()), (2, 2, 0));
    // One f32 input layer on the device and one pruned layer on the host, at most.
    let peak = streamed.peak();
    assert_eq!(peak.device, layer_bytes(&cfg, 1));
    assert_eq!(peak.host, layer_bytes(streamed.config(), 1));

    let dir = tempfile::tempdir().unwrap();
    let (synth, _) = synth_tiny(dir.path());
    let common = ["--compensation", "none", "--layers", "1..4"];
    let run = |out: &std::path::Path, extra: &[&str]| prune_json(&synth, out, &common, extra);
    let bytes = |p: &std::path::Path| std::fs::read(p.join("model.safetensors")).unwrap();
    for allocation in ["uniform", "global"] {
        let amount = [
            "--importance",
            "l1",
            "--allocation",
            allocation,
            "--target-params",
            "0.15",
        ];
        let whole = dir.path().join(format!("whole-{allocation}"));
        let first = run(&whole, &amount);
        let streamed = dir.path().join(format!("streamed-{allocation}"));
        let mut args = amount.to_vec();
        args.push("--stream");
        let again = run(&streamed, &args);
        assert_eq!(again["plan"], first["plan"], "{allocation}");
        assert_eq!(again["scores"], first["scores"], "{allocation}");
        assert_eq!(
            again["reconstruction"],
            serde_json::json!([]),
            "{allocation}"
        );
        assert!(
            bytes(&whole) == bytes(&streamed),
            "{allocation}: outputs differ"
        );
        // The saved plan, streamed without repair: the same slice again.
        let replayed = dir.path().join(format!("replayed-{allocation}"));
        let plan = whole.join("plan.json");
        run(&replayed, &["--plan", plan.to_str().unwrap(), "--stream"]);
        assert!(
            bytes(&whole) == bytes(&replayed),
            "{allocation}: replayed plan differs"
        );
    }
}

/// A saved plan applied with `--plan` (no ratio) is repaired with the recipe's compensation, in memory and
/// streamed, and gives the model of the run that made it; a plan reaching outside the pruned layers is refused.
#[test]
fn a_saved_plan_is_repaired_like_the_run_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let (synth, ids) = synth_tiny(dir.path());
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let common = [
        "--compensation",
        "ls",
        "--layers",
        "1..4",
        "--calib-ids",
        ids.to_str().unwrap(),
    ];
    let run = |out: &std::path::Path, extra: &[&str]| prune_json(&synth, out, &common, extra);
    let made = dir.path().join("made");
    let first = run(&made, &["--importance", "obs", "--ratio", "0.5"]);
    let plan = made.join("plan.json");
    for (name, extra) in [("memory", vec![]), ("streamed", vec!["--stream"])] {
        let out = dir.path().join(name);
        let mut args = vec!["--plan", plan.to_str().unwrap()];
        args.extend(extra);
        let again = run(&out, &args);
        assert_eq!(again["plan"], first["plan"], "{name}");
        assert_eq!(again["params_after"], first["params_after"], "{name}");
        // The same repair: every reconstruction error as the first run reported it.
        let errors = |r: &serde_json::Value| -> Vec<f64> {
            r["reconstruction"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["after"].as_f64().unwrap())
                .collect()
        };
        let (a, b) = (errors(&first), errors(&again));
        assert_eq!((a.len(), b.len()), (6, 6), "{name}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1e-12),
                "{name}: {x} vs {y}"
            );
        }
        let diff = output_diff(&made, &out);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
    // The plan removes from layers 1..4: a range that leaves one out is refused before anything is written.
    let refused = dir.path().join("refused");
    let out = Command::new(env!("CARGO_BIN_EXE_prunelab"))
        .args([
            "prune",
            &path(&synth),
            "--out",
            &path(&refused),
            "--plan",
            plan.to_str().unwrap(),
            "--layers",
            "2..4",
            "--calib-ids",
            ids.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer 1, outside the pruned layers 2..4"),
        "{err}"
    );
    assert!(!refused.exists());
}

/// A bf16 checkpoint is read as bf16 (the file's bytes, no detour through f32), loads exactly into an f32 model,
/// and a bf16 run writes the tensors it does not prune byte for byte as it read them, streamed or not.
#[test]
fn bf16_checkpoints_pass_through_without_conversion() {
    use prunelab::io::safetensors_ranges::RangedSafetensors;
    use prunelab::io::SafetensorsWeights;

    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("tiny-bf16");
    let s = synth.to_str().unwrap();
    run_cli(&["synth", "--shape", "tiny", "--out", s, "--dtype", "bf16"]);
    let input = std::fs::read(synth.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&input).unwrap();

    // Both readers hand out the stored bytes; the f32 view and an f32 model hold the exact bf16 values.
    let whole =
        SafetensorsWeights::from_files(&[("model.safetensors".into(), &input)], None).unwrap();
    let ranged = RangedSafetensors::open(vec![("model.safetensors".into(), &input[..])]).unwrap();
    let cfg = tiny();
    let model = Llama::<Flex>::load(&cfg, &whole, &Default::default()).unwrap();
    let loaded: std::collections::HashMap<_, _> = model.named_weights().into_iter().collect();
    for spec in tensor_specs(&cfg) {
        let view = file.tensor(&spec.name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::BF16);
        for src in [&whole as &dyn WeightSource, &ranged] {
            let data = src.read(&spec.name).unwrap();
            assert_eq!(data.dtype, burn::tensor::DType::BF16, "{}", spec.name);
            assert_eq!(data.shape.to_vec(), spec.shape, "{}", spec.name);
            assert_eq!(data.as_bytes(), view.data(), "{}", spec.name);
        }
        let exact: Vec<f32> = view
            .data()
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(whole.read_f32(&spec.name).unwrap(), exact, "{}", spec.name);
        let w = loaded[&spec.name].clone().flatten();
        assert_eq!(w.dtype(), burn::tensor::DType::F32);
        let got = pollster::block_on(prunelab::readback::to_vec(w)).unwrap();
        assert_eq!(got, exact, "{}", spec.name);
    }

    // A bf16 prune (in memory and streamed) of layers 1..3 leaves every other tensor's bytes as they were.
    let ids = dir.path().join("calib.json");
    std::fs::write(&ids, serde_json::to_vec(&calib(&cfg)).unwrap()).unwrap();
    let mut outputs = vec![];
    for stream in [false, true] {
        let out = dir.path().join(format!("pruned-{stream}"));
        let mut args = vec![
            "prune",
            s,
            "--out",
            out.to_str().unwrap(),
            "--importance",
            "flap",
            "--compensation",
            "ls",
            "--ratio",
            "0.25",
            "--layers",
            "1..3",
            "--calib-ids",
            ids.to_str().unwrap(),
            "--precision",
            "bf16",
            "--dtype",
            "bf16",
            "--json",
        ];
        if stream {
            args.push("--stream");
        }
        let report: serde_json::Value = serde_json::from_str(&run_cli(&args)).unwrap();
        outputs.push((
            report,
            std::fs::read(out.join("model.safetensors")).unwrap(),
        ));
    }
    assert_eq!(outputs[0].0["plan"], outputs[1].0["plan"]);
    for (_, bytes) in &outputs {
        let pruned = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut untouched = 0;
        for (name, view) in file.tensors() {
            let kept = pruned.tensor(&name).unwrap();
            assert_eq!(kept.dtype(), safetensors::Dtype::BF16, "{name}");
            if !(name.starts_with("model.layers.1.") || name.starts_with("model.layers.2.")) {
                assert_eq!(kept.data(), view.data(), "{name}");
                untouched += 1;
            }
        }
        assert_eq!(untouched, file.len() - 2 * 9);
    }
}

/// `synth` draws tensors ahead on other threads; the file holds exactly what `RandomWeights` draws one tensor at
/// a time, in every storage type.
#[test]
fn synth_writes_the_seeded_random_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny();
    for (dtype, st_dtype) in [
        ("f32", safetensors::Dtype::F32),
        ("bf16", safetensors::Dtype::BF16),
    ] {
        let out = dir.path().join(dtype);
        let o = out.to_str().unwrap();
        run_cli(&[
            "synth", "--shape", "tiny", "--seed", "3", "--dtype", dtype, "--out", o,
        ]);
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let random = RandomWeights::new(&cfg, 3, 0.02);
        assert_eq!(file.len(), tensor_specs(&cfg).len());
        for spec in tensor_specs(&cfg) {
            let view = file.tensor(&spec.name).unwrap();
            assert_eq!(view.dtype(), st_dtype);
            let want = random.read(&spec.name).unwrap().convert_dtype(match dtype {
                "f32" => burn::tensor::DType::F32,
                _ => burn::tensor::DType::BF16,
            });
            assert_eq!(view.data(), want.as_bytes(), "{dtype} {}", spec.name);
        }
    }
}
