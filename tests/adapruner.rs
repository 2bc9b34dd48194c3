//! The `adapruner` score (AdaPruner, methods.md §3) on `tiny-gqa`: its mix against the closed form; trial 0 is
//! the first mixed score alone on the whole pool, with exactly that score's plan and the loss measured here;
//! a search over a Taylor, Fisher, NTK and magnitude mix ends no worse than trial 0, reports the loss its plan
//! gives, and repeats itself for a seed; the CLI writes what it found and replays it from `recipe.json`, and
//! refuses by name, writing nothing, what it cannot do.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use common::*;
use pollster::block_on;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::Llama;
use prunelab::progress::{Progress, Silent};
use prunelab::prune::adapruner::{mix, AdaprunerSettings, Tuned};
use prunelab::prune::calib::CalibSource;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::importance::{Importance, LayerScores};
use prunelab::prune::pipeline::{make_plan, Planned};
use prunelab::prune::plan::{apply, Plan};
use prunelab::prune::recipe::{LayerRange, Recipe};
use prunelab::readback::scalar;

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

fn calib() -> Vec<Vec<u32>> {
    id_windows(&golden_json("tiny-gqa")["calibration_input_ids"])
}

/// Layers 0..4 of `tiny-gqa`, a quarter of each layer's KV groups and MLP channels, no repair.
fn recipe(importance: Importance, settings: Option<AdaprunerSettings>) -> Recipe {
    Recipe {
        importance,
        ratio: Some(0.25),
        layers: Some(LayerRange { start: 0, end: 4 }),
        calibration: CalibSource::Ids { windows: calib() },
        compensation: Compensation::None,
        adapruner: settings,
        ..Recipe::default()
    }
}

fn planned(model: &Llama<Ad>, recipe: &Recipe, windows: &[Vec<u32>]) -> Planned {
    planned_telling(model, recipe, windows, &Silent)
}

fn planned_telling(
    model: &Llama<Ad>,
    recipe: &Recipe,
    windows: &[Vec<u32>],
    progress: &dyn Progress,
) -> Planned {
    block_on(make_plan(
        model,
        recipe,
        windows,
        &Default::default(),
        progress,
        &mut vec![],
    ))
    .unwrap()
}

/// The mean next-token loss of `model` pruned by `plan`, on `windows`.
fn loss(model: &Llama<Ad>, plan: &Plan, windows: &[Vec<u32>]) -> f64 {
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    let pruned = apply(model.valid(), plan).unwrap();
    block_on(scalar(
        pruned.loss(batch_tensor::<Cpu>(&refs, &Default::default())),
    ))
    .unwrap()
}

fn scores(layer: usize, kv: &[f32], mlp: &[f32]) -> LayerScores {
    LayerScores {
        layer,
        kv_groups: kv.to_vec(),
        query_heads: vec![],
        mlp_channels: mlp.to_vec(),
        whole: None,
    }
}

/// `Σ_m w_m · s_m / mean_m` per layer and kind, by hand.
#[test]
fn the_mix_is_the_weighted_sum_of_mean_normalised_scores() {
    let a = vec![scores(3, &[1.0, 3.0], &[2.0, 4.0, 6.0])];
    let b = vec![scores(3, &[10.0, 30.0], &[9.0, 0.0, 3.0])];
    let m = mix(&[a, b], &[0.25, 0.75]);
    assert_eq!(m[0].layer, 3);
    // kv: means 2 and 20; mlp: means 4 and 4.
    let want_kv = [0.25 * 0.5 + 0.75 * 0.5, 0.25 * 1.5 + 0.75 * 1.5];
    let want_mlp = [
        0.25 * 0.5 + 0.75 * 2.25,
        0.25 * 1.0 + 0.75 * 0.0,
        0.25 * 1.5 + 0.75 * 0.75,
    ];
    for (got, want) in m[0].kv_groups.iter().zip(want_kv) {
        assert!((*got as f64 - want).abs() < 1e-6, "{:?}", m[0].kv_groups);
    }
    for (got, want) in m[0].mlp_channels.iter().zip(want_mlp) {
        assert!((*got as f64 - want).abs() < 1e-6, "{:?}", m[0].mlp_channels);
    }
}

/// One trial: the first score alone on every pool window (the windows after the held-out ones) makes exactly
/// that score's plan on the pool, and its reported loss is that plan's, measured here on the held-out windows.
#[test]
fn trial_zero_is_the_first_score_alone_on_the_pool() {
    let model = load_fixture::<Ad>("tiny-gqa", &Default::default());
    let calib = calib();
    let settings = AdaprunerSettings {
        trials: 1,
        blocks: 2,
        fitness_windows: 2,
        metrics: vec![Importance::TaylorFirst, Importance::L2],
    };
    let tuned = planned(
        &model,
        &recipe(Importance::Adapruner, Some(settings)),
        &calib,
    );
    let plain = planned(&model, &recipe(Importance::TaylorFirst, None), &calib[2..]);
    assert_eq!(tuned.plan, plain.plan);
    assert!(tuned.plan.layers.iter().all(|l| !l.is_empty()));
    let found = tuned.tuned.unwrap();
    assert_eq!(found.weights, vec![1.0, 0.0]);
    assert_eq!(found.blocks, vec![0, 1]);
    assert_eq!((found.best, found.losses.len()), (0, 1));
    assert_eq!(found.losses[0], loss(&model, &plain.plan, &calib[..2]));
}

/// A search mixing taylor-first (loss gradient), taylor-mix (Fisher diagonal), ntk (output gradient) and l2:
/// every trial is reported, the winner is the lowest, no worse than trial 0, its weights sum to 1, its plan's
/// loss measured here is the one reported, and the same seed repeats the whole search. Progress tells each
/// trial's loss and the best so far as the search goes.
#[test]
fn the_search_ends_no_worse_than_trial_zero_and_repeats_for_a_seed() {
    let model = load_fixture::<Ad>("tiny-gqa", &Default::default());
    let calib = calib();
    let settings = AdaprunerSettings {
        trials: 10,
        blocks: 4,
        fitness_windows: 2,
        metrics: vec![
            Importance::TaylorFirst,
            Importance::TaylorMix,
            Importance::Ntk,
            Importance::L2,
        ],
    };
    let r = recipe(Importance::Adapruner, Some(settings));
    let run = planned(&model, &r, &calib);
    let found: Tuned = run.tuned.clone().unwrap();
    eprintln!("adapruner on tiny-gqa: {found:?}");
    assert_eq!(found.losses.len(), 10);
    let min = found.losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(found.losses[found.best], min);
    assert!(min <= found.losses[0]);
    assert!((found.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(!found.blocks.is_empty() && found.blocks.iter().all(|&b| b < 4));
    assert_eq!(loss(&model, &run.plan, &calib[..2]), min);
    let progress = Recorder::default();
    let again = planned_telling(&model, &r, &calib, &progress);
    assert_eq!(again.plan, run.plan);
    assert_eq!(again.tuned.unwrap(), found);
    let reports = progress.of("adapruner");
    assert_eq!(reports.len(), 11);
    assert_eq!(reports[0], (0, 10, String::new()));
    for (t, (done, total, message)) in reports.iter().enumerate().skip(1) {
        let best = found.losses[..t]
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let last = found.losses[t - 1];
        let want = format!("trial {}: loss {last:.4}, best {best:.4}", t - 1);
        assert_eq!((*done, *total, message.as_str()), (t, 10, want.as_str()));
    }
}

/// The CLI: the report carries what the search found, `recipe.json` its settings, and pruning again from that
/// recipe (which holds the calibration windows and the seed) makes the same plan.
#[test]
fn the_cli_reports_the_search_and_replays_it_from_its_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let model = fixture("tiny-gqa");
    let prune = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args: Vec<String> = [
            "prune",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--json".into());
        (run_cli_json(&args), out)
    };
    let (report, out) = prune(
        "a",
        &[
            "--importance",
            "adapruner",
            "--ratio",
            "0.25",
            "--layers",
            "0..4",
            "--calib-ids",
            ids.to_str().unwrap(),
            "--compensation",
            "none",
            "--trials",
            "4",
            "--blocks",
            "2",
            "--fitness-windows",
            "2",
            "--mix",
            "taylor-vector,l1",
        ],
    );
    let found = &report["adapruner"];
    assert_eq!(found["losses"].as_array().unwrap().len(), 4);
    assert_eq!(found["metrics"], serde_json::json!(["taylor-vector", "l1"]));
    let settings = serde_json::json!({
        "trials": 4, "blocks": 2, "fitness_windows": 2, "metrics": ["taylor-vector", "l1"]
    });
    assert_eq!(report["recipe"]["adapruner"], settings);
    assert!(report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["stage"] == "adapruner"));
    let recipe = out.join("recipe.json");
    let (again, _) = prune("b", &["--recipe", recipe.to_str().unwrap()]);
    assert_eq!(again["plan"], report["plan"]);
    assert_eq!(again["adapruner"], report["adapruner"]);
}

/// What adapruner cannot do is refused by name, writing nothing.
#[test]
fn adapruner_is_refused_where_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let out = dir.path().join("out");
    let model = fixture("tiny-gqa");
    let refused_with = |calibrated: bool, extra: &[&str], want: &str| {
        let calib: &[&str] = match calibrated {
            true => &["--calib-ids", ids.to_str().unwrap()],
            false => &[],
        };
        let fixed = ["--layers", "1..4", "--compensation", "none"];
        refused_prune(&model, &out, &[&fixed[..], calib, extra].concat(), want);
    };
    let refused = |extra: &[&str], want: &str| refused_with(true, extra, want);
    let tune = |more: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["--importance", "adapruner", "--ratio", "0.25"];
        args.extend_from_slice(more);
        args
    };
    refused_with(
        false,
        &tune(&[]),
        "adapruner + none needs calibration text: pass --calib FILE or --calib-ids FILE.json",
    );
    refused(
        &tune(&["--blocks", "6", "--fitness-windows", "5"]),
        "adapruner holds out 5 calibration windows to measure trials and splits the rest into 6 blocks: it \
         needs at least 11 windows, but only 10 were given",
    );
    refused(
        &tune(&["--fitness-windows", "18446744073709551615"]),
        "adapruner holds out 18446744073709551615 calibration windows to measure trials and splits the rest \
         into 4 blocks: it needs at least 18446744073709551615 windows, but only 10 were given",
    );
    refused(
        &tune(&["--blocks", "7"]),
        "adapruner splits the calibration pool into 1 to 6 blocks (got 7)",
    );
    refused(
        &tune(&["--trials", "0"]),
        "adapruner needs at least 1 trial and 1 fitness window (got 0 and 4)",
    );
    refused(
        &tune(&["--mix", "taylor-first,flap"]),
        "adapruner mixes per-weight scores (l1, l2, taylor-vector, taylor-first, taylor-second, taylor-mix, \
         ntk), not flap",
    );
    refused(
        &tune(&["--mix", "l2,taylor-first,l2"]),
        "adapruner: score l2 is listed twice",
    );
    refused(
        &tune(&["--mix", "taylor-frist"]),
        "--mix \"taylor-frist\": expected one of",
    );
    refused(
        &["--importance", "l2", "--ratio", "0.25", "--trials", "3"],
        "--trials, --blocks and --mix apply to --importance adapruner",
    );
    refused(
        &["--importance", "adapruner", "--target-params", "0.2", "--allocation", "search"],
        "adapruner plans each trial with the allocation, and the search allocation is a search of its own",
    );
    refused(
        &[
            "--importance",
            "adapruner",
            "--ratio",
            "0.25",
            "--structures",
            "layers",
        ],
        "adapruner mixes scores normalised within each layer, which cannot rank whole layers",
    );
    refused(
        &tune(&["--stream"]),
        "gradient scores and the skipped-layer perplexity need the whole model (drop --stream)",
    );
    // A recipe file that gives adapruner settings to another score.
    let recipe = dir.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"importance": "l2", "adapruner": {"trials": 3}, "ratio": 0.25}"#,
    )
    .unwrap();
    refused(
        &["--recipe", recipe.to_str().unwrap()],
        "adapruner settings apply to importance adapruner, not l2",
    );
}
