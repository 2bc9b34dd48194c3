//! Whole layers and width in one run (`--depth-ratio`): the same model, plan and repairs as a depth run followed
//! by a width run on its output, a plan that replays to that model, and clear refusals.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use common::*;
use pollster::block_on;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::params::count_params;
use prunelab::model::Llama;
use prunelab::progress::Silent;
use prunelab::prune::calib::CalibSource;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::importance::Importance;
use prunelab::prune::pipeline::{apply_plan, prune, Pruned};
use prunelab::prune::recipe::{DepthFirst, LayerRange, Recipe};
use prunelab::prune::sequential::Reconstruction;
use prunelab::prune::structure::StructureKind;
use prunelab::readback::to_vec;

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

fn calib() -> Vec<Vec<u32>> {
    id_windows(&golden_json("tiny-gqa")["calibration_input_ids"])
}

/// KV groups and MLP channels of layers 1..4 of tiny-gqa, after a third of those layers went whole.
fn combined(importance: Importance, depth: DepthFirst, compensation: Compensation) -> Recipe {
    Recipe {
        structures: vec![StructureKind::KvGroups, StructureKind::Mlp],
        importance,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 1, end: 4 }),
        calibration: CalibSource::Ids { windows: calib() },
        compensation,
        depth: Some(depth),
        ..Recipe::default()
    }
}

fn probe_logits(model: &Llama<Cpu>) -> Vec<f32> {
    let probe = id_windows(&golden_json("tiny-gqa")["probe_input_ids"]);
    let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<Cpu>(&refs, &Default::default());
    block_on(to_vec(model.forward(ids))).unwrap()
}

fn run(model: Llama<Ad>, recipe: &Recipe) -> Pruned<Ad> {
    block_on(prune(model, recipe, &calib(), &Default::default(), &Silent)).unwrap()
}

/// The combined run against the two runs it stands for, done by hand: the depth recipe on the fixture, then the
/// width recipe over the layers that stayed (range 1..4 less the removed layer: 1..3) on its output.
fn check_against_two_runs(recipe: &Recipe, width_amount: (Option<f64>, Option<f64>)) {
    let device = Default::default();
    let one = run(load_fixture::<Ad>("tiny-gqa", &device), recipe);
    let d = recipe.depth.unwrap();
    let depth = Recipe {
        structures: vec![StructureKind::Layers],
        importance: d.importance,
        ratio: Some(d.ratio),
        target_params: None,
        depth: None,
        ..recipe.clone()
    };
    let first = run(load_fixture::<Ad>("tiny-gqa", &device), &depth);
    assert_eq!(first.plan.removed_layers.len(), 1, "{:?}", first.plan);
    let width = Recipe {
        layers: Some(LayerRange { start: 1, end: 3 }),
        ratio: width_amount.0,
        target_params: width_amount.1,
        depth: None,
        ..recipe.clone()
    };
    let second = run(Llama::from_inner(first.model), &width);

    assert_eq!(probe_logits(&one.model), probe_logits(&second.model));
    let cfg = load_fixture::<Cpu>("tiny-gqa", &device).config;
    let kept = first.plan.kept_layers(&cfg);
    assert_eq!(one.plan.removed_layers, first.plan.removed_layers);
    assert_eq!(one.plan, first.plan.then(&cfg, second.plan.clone()));
    // Width plans name the original layers: the smaller model's layer i is the original kept[i].
    assert_eq!(one.plan.layers.len(), second.plan.layers.len());
    for (a, b) in one.plan.layers.iter().zip(&second.plan.layers) {
        assert_eq!(a.layer, kept[b.layer]);
        assert_eq!(
            (&a.kv_groups, &a.mlp_channels),
            (&b.kv_groups, &b.mlp_channels)
        );
    }
    // The plan, split again, gives back the two steps' plans.
    let (d_plan, w_plan) = one.plan.split(&cfg);
    assert_eq!((d_plan, w_plan), (first.plan.clone(), second.plan));
    assert_eq!(one.ratio, second.ratio);
    let repairs = |p: &[Reconstruction], renumber: &dyn Fn(usize) -> usize| {
        p.iter()
            .map(|r| (renumber(r.layer), r.module.to_string(), r.after))
            .collect::<Vec<_>>()
    };
    let mut want = repairs(&first.reconstruction, &|l| l);
    want.extend(repairs(&second.reconstruction, &|l| kept[l]));
    assert_eq!(repairs(&one.reconstruction, &|l| l), want);
    let stages: Vec<&str> = one.timings.iter().map(|t| t.stage.as_str()).collect();
    assert!(
        stages.iter().any(|s| s.starts_with("depth: ")),
        "{stages:?}"
    );

    // The saved plan, applied with the run's recipe, repairs in the same two steps: the same model.
    let replay = block_on(apply_plan(
        load_fixture::<Cpu>("tiny-gqa", &device),
        recipe,
        Some(one.plan.clone()),
        None,
        &calib(),
        &device,
        &Silent,
        &mut vec![],
    ))
    .unwrap();
    assert_eq!(replay.plan, one.plan);
    let diff = max_abs_diff(&probe_logits(&replay.model), &probe_logits(&one.model));
    assert!(diff < 1e-5, "replayed plan: {diff:e}");
}

#[test]
fn one_run_of_depth_then_width_is_the_two_runs_it_stands_for() {
    // Block influence picks the layer, numerical + ls narrows the rest (scored on the repaired prefix).
    let bi = DepthFirst {
        ratio: 0.3,
        importance: Importance::BlockInfluence,
    };
    check_against_two_runs(
        &combined(Importance::Numerical, bi, Compensation::Ls),
        (Some(0.5), None),
    );
    // Taylor scores need gradients of the model the depth step left; the skipped-layer perplexity ranks layers.
    let ppl = DepthFirst {
        ratio: 0.3,
        importance: Importance::Perplexity,
    };
    let taylor = combined(Importance::TaylorFirst, ppl, Compensation::None);
    check_against_two_runs(&taylor, (Some(0.5), None));
}

#[test]
fn a_parameter_target_counts_both_steps() {
    let device = Default::default();
    let cfg = load_fixture::<Cpu>("tiny-gqa", &device).config;
    let bi = DepthFirst {
        ratio: 0.3,
        importance: Importance::BlockInfluence,
    };
    let t = 0.3;
    let recipe = Recipe {
        ratio: None,
        target_params: Some(t),
        ..combined(Importance::Numerical, bi, Compensation::Ls)
    };
    let one = run(load_fixture::<Ad>("tiny-gqa", &device), &recipe);
    let removed = one.plan.removed_layers.clone();
    // The width step's share of the smaller model: t·P₀ − (P₀ − P₁) = t'·P₁.
    let p0 = count_params(&cfg).total as f64;
    let smaller = prunelab::prune::Plan::depth(&cfg, removed.clone()).pruned_config(&cfg);
    let p1 = count_params(&smaller).total as f64;
    let narrowing = recipe.narrowing_after(&cfg, &removed).unwrap();
    let t1 = narrowing.target_params.unwrap();
    assert!((t * p0 - (p0 - p1) - t1 * p1).abs() < 1e-6 * p0, "{t1}");
    assert_eq!(narrowing.layers, Some(LayerRange { start: 1, end: 3 }));
    // The run reaches the whole target.
    let after = count_params(&one.model.config).total as f64;
    let got = 1.0 - after / p0;
    assert!(got >= t, "removed {got} for target {t}");
    check_against_two_runs(&recipe, (None, Some(t1)));
}

#[test]
fn bad_depth_then_width_recipes_are_refused() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let bi = |ratio: f64| DepthFirst {
        ratio,
        importance: Importance::BlockInfluence,
    };
    let base = combined(Importance::Numerical, bi(0.3), Compensation::Ls);
    base.check(&cfg).unwrap();
    let cases = [
        (
            Recipe {
                structures: vec![StructureKind::Layers, StructureKind::Mlp],
                ..base.clone()
            },
            "list only kv-groups, query-heads or mlp",
        ),
        (
            Recipe {
                depth: Some(bi(0.0)),
                ..base.clone()
            },
            "depth ratio 0 is outside (0, 1)",
        ),
        (
            Recipe {
                depth: Some(bi(1.0)),
                ..base.clone()
            },
            "depth ratio 1 is outside (0, 1)",
        ),
        (
            Recipe {
                depth: Some(bi(0.9)),
                ..base.clone()
            },
            "depth ratio 0.9 removes all 3 layers of the range 1..4, leaving none to narrow",
        ),
        (
            Recipe {
                depth: Some(DepthFirst {
                    ratio: 0.3,
                    importance: Importance::Flap,
                }),
                ..base.clone()
            },
            "flap scores columns of o_proj / down_proj and cannot rank whole layers",
        ),
        (
            Recipe {
                layers: Some(LayerRange { start: 0, end: 4 }),
                ..base.clone()
            },
            "no layer before it",
        ),
    ];
    for (recipe, want) in cases {
        let got = recipe.check(&cfg).unwrap_err().to_string();
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    // A target the removed layers already meet leaves nothing to narrow: refused before any work (one layer of
    // four is 24.07% of tiny-gqa's parameters), and by the run for the layers it removes.
    let small = Recipe {
        ratio: None,
        target_params: Some(0.05),
        ..base.clone()
    };
    let got = small.check(&cfg).unwrap_err().to_string();
    assert!(
        got.contains(
            "removing layers [1] already takes 24.07% of the parameters, the whole target 0.05"
        ),
        "{got}"
    );
    let got = small.narrowing_after(&cfg, &[2]).unwrap_err().to_string();
    assert!(
        got.contains("removing layers [2] already takes 24.07%"),
        "{got}"
    );
}

/// `prune` on tiny-gqa: a third of layers 1..4 whole, then half the KV groups and MLP channels of the rest.
fn cli_args(out: &std::path::Path, ids: &std::path::Path) -> Vec<String> {
    let model = fixture("tiny-gqa");
    [
        "prune",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--depth-ratio",
        "0.3",
        "--structures",
        "kv-groups,mlp",
        "--ratio",
        "0.5",
        "--layers",
        "1..4",
        "--calib-ids",
        ids.to_str().unwrap(),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn the_cli_writes_depth_then_width_models_that_load_back_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let (hf, gguf) = (dir.path().join("hf"), dir.path().join("m.gguf"));
    let report = run_cli_json(&cli_args(&hf, &ids));
    let mut g = cli_args(&gguf, &ids);
    g.extend(["--format".into(), "gguf".into()]);
    assert_eq!(run_cli_json(&g)["plan"], report["plan"]);
    assert_eq!(
        report["recipe"]["depth"],
        serde_json::json!({"ratio": 0.3, "importance": "block-influence"})
    );
    assert_eq!(
        report["plan"]["removed_layers"].as_array().unwrap().len(),
        1
    );
    let layers = report["layers_after"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    // Layer 0 is outside the range; the two kept layers of the range lose one of two KV groups and half the MLP.
    assert_eq!(layers[0]["num_kv_heads"], 2);
    for l in &layers[1..] {
        assert_eq!(
            (l["num_kv_heads"].as_u64(), l["intermediate_size"].as_u64()),
            (Some(1), Some(96))
        );
    }
    let modules: Vec<&str> = report["reconstruction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["module"].as_str().unwrap())
        .collect();
    assert_eq!(modules[0], "down_proj+removed");
    assert_eq!(modules.len(), 1 + 2 * 2, "{modules:?}");

    // The library's run on the saved recipe: the files hold that model.
    let device = Default::default();
    let recipe = Recipe::from_json(&read(&hf.join("recipe.json"))).unwrap();
    assert_eq!(recipe.depth.unwrap().ratio, 0.3);
    let out = run(load_fixture::<Ad>("tiny-gqa", &device), &recipe);
    let want = probe_logits(&out.model);
    assert_eq!(
        probe_logits(&load_hf_folder::<Cpu>(&hf, &device)),
        want,
        "HF folder"
    );
    assert_eq!(
        probe_logits(&load_gguf::<Cpu>(&gguf, &device)),
        want,
        "GGUF"
    );
    // The saved plan with the saved recipe replays to the same model.
    let replay = dir.path().join("replay");
    replay_run(&fixture("tiny-gqa"), &hf, &replay, &ids);
    let diff = max_abs_diff(
        &probe_logits(&load_hf_folder::<Cpu>(&replay, &device)),
        &want,
    );
    assert!(diff < 1e-5, "replayed plan: {diff:e}");
    // The saved recipe's depth step takes a score or a ratio from the flags and keeps the other.
    let model = fixture("tiny-gqa");
    let saved = hf.join("recipe.json");
    let depth_of = |name: &str, recipe: &std::path::Path, flag: &str, value: &str| {
        let out = dir.path().join(name);
        let args = [
            "prune",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            flag,
            value,
            "--json",
        ];
        run_cli_json(&args.map(String::from))["recipe"]["depth"].clone()
    };
    assert_eq!(
        depth_of("scored", &saved, "--depth-importance", "l2"),
        serde_json::json!({"ratio": 0.3, "importance": "l2"})
    );
    let scored = dir.path().join("scored/recipe.json");
    assert_eq!(
        depth_of("deeper", &scored, "--depth-ratio", "0.6"),
        serde_json::json!({"ratio": 0.6, "importance": "l2"})
    );
    // Without a depth step there is nothing to score.
    refused_prune(
        &model,
        &dir.path().join("refused"),
        &[
            "--ratio",
            "0.5",
            "--depth-importance",
            "l2",
            "--calib-ids",
            ids.to_str().unwrap(),
        ],
        "--depth-importance scores the whole layers of a depth step",
    );
}
