//! Depth pruning (`--structures layers`): block influence against its definition, the skipped-layer perplexity
//! against the loss of the model without the layer, whole-layer Taylor scores
//! against the sum of LLM-Pruner's golden structure scores, a layer that computes nothing removed without
//! changing the logits (repaired or not), the repair against its normal equations, parameter targets, the CLI's
//! HF and GGUF outputs, plan replay and streamed runs, and bad depth recipes and plans.

mod common;

use std::process::Command;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Param};
use burn::tensor::Tensor;
use common::*;
use pollster::block_on;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::params::count_params;
use prunelab::model::Llama;
use prunelab::progress::Silent;
use prunelab::prune::allocate::pruned_count;
use prunelab::prune::calib::CalibSource;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::depth::depth_plan;
use prunelab::prune::importance::{Importance, LayerScores};
use prunelab::prune::pipeline::{apply_plan, make_plan, prune, Planned};
use prunelab::prune::plan::{apply, Plan};
use prunelab::prune::recipe::{LayerRange, Recipe};
use prunelab::prune::structure::StructureKind;
use prunelab::readback::{scalar, to_vec, to_vec_f64};
use serde_json::Value;

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

fn calib(name: &str) -> Vec<Vec<u32>> {
    id_windows(&golden_json(name)["calibration_input_ids"])
}

fn depth_recipe(
    importance: Importance,
    ratio: f64,
    layers: (usize, usize),
    compensation: Compensation,
    name: &str,
) -> Recipe {
    Recipe {
        structures: vec![StructureKind::Layers],
        importance,
        ratio: Some(ratio),
        layers: Some(LayerRange {
            start: layers.0,
            end: layers.1,
        }),
        calibration: CalibSource::Ids {
            windows: calib(name),
        },
        compensation,
        ..Recipe::default()
    }
}

fn probe_logits(model: &Llama<Cpu>) -> Vec<f32> {
    let probe = id_windows(&golden_json("tiny-gqa")["probe_input_ids"]);
    let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<Cpu>(&refs, &Default::default());
    block_on(to_vec(model.forward(ids))).unwrap()
}

/// The plan and scores `recipe` makes for `model` on `windows`.
fn plan_of(model: &Llama<Cpu>, recipe: &Recipe, windows: &[Vec<u32>]) -> (Plan, Vec<LayerScores>) {
    let ad: Llama<Ad> = Llama::from_inner(model.clone());
    let device = Default::default();
    let Planned { plan, scores, .. } = block_on(make_plan(
        &ad,
        recipe,
        windows,
        &device,
        &Silent,
        &mut vec![],
    ))
    .unwrap();
    (plan, scores)
}

/// Calibration activations entering layer `l` of `model`, `[windows, len, hidden]`.
fn input_of(model: &Llama<Cpu>, l: usize, windows: &[Vec<u32>]) -> Tensor<Cpu, 3> {
    let device = Default::default();
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    let pos = model.positions(refs[0].len(), &device);
    let mut h = model.embed(batch_tensor::<Cpu>(&refs, &device));
    for block in &model.layers[..l] {
        h = block.forward(h, &pos);
    }
    h
}

/// Rows of a `[.., n]` tensor as f64 vectors.
fn rows(t: Tensor<Cpu, 3>) -> Vec<Vec<f64>> {
    let n = t.dims()[2];
    let v = block_on(to_vec_f64(t)).unwrap();
    v.chunks(n).map(|c| c.to_vec()).collect()
}

#[test]
fn an_identity_layer_has_zero_block_influence_and_goes_without_changing_the_logits() {
    let device = Default::default();
    let mut model = load_fixture::<Cpu>("tiny-gqa", &device);
    // Layer 2 adds nothing to the residual stream: its attention and MLP outputs are zero.
    let block = &mut model.layers[2];
    for lin in [&mut block.self_attn.o_proj, &mut block.mlp.down_proj] {
        lin.weight = Param::from_tensor(lin.weight.val().zeros_like());
    }
    let original = probe_logits(&model);
    let recipe = depth_recipe(
        Importance::BlockInfluence,
        0.25,
        (1, 4),
        Compensation::Ls,
        "tiny-gqa",
    );
    let windows = calib("tiny-gqa");
    let (plan, scores) = plan_of(&model, &recipe, &windows);
    assert_eq!(pruned_count(3, 0.25), 1);
    assert_eq!(
        plan.removed_layers,
        vec![2],
        "the identity layer goes first"
    );
    let bi: Vec<f64> = scores.iter().map(|s| s.whole.unwrap()).collect();
    assert!(bi[1].abs() < 1e-6, "identity layer: BI {}", bi[1]);

    // Layer 1's block influence by its definition, in f64 on the host.
    let (h, out) = (input_of(&model, 1, &windows), input_of(&model, 2, &windows));
    let cos: Vec<f64> = rows(h)
        .iter()
        .zip(rows(out))
        .map(|(a, b)| {
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (na * nb)
        })
        .collect();
    let want = 1.0 - cos.iter().sum::<f64>() / cos.len() as f64;
    assert!(want > 1e-3, "layer 1 changes the stream: {want}");
    assert!(
        (bi[0] - want).abs() < 1e-5,
        "layer 1 block influence {} vs {want}",
        bi[0]
    );

    // Removed, repaired or not, the model computes what it computed.
    for compensation in [Compensation::None, Compensation::Ls, Compensation::LsBias] {
        let recipe = Recipe {
            compensation,
            ..recipe.clone()
        };
        let ad: Llama<Ad> = Llama::from_inner(model.clone());
        let out = block_on(prune(ad, &recipe, &windows, &device, &Silent)).unwrap();
        assert_eq!(out.model.config.num_layers(), 3);
        assert_eq!(out.model.layers.len(), 3);
        let diff = max_abs_diff(&probe_logits(&out.model), &original);
        assert!(diff < 1e-5, "{compensation:?}: logits moved by {diff:e}");
        let repairs = usize::from(compensation != Compensation::None);
        assert_eq!(out.reconstruction.len(), repairs, "{compensation:?}");
        for r in &out.reconstruction {
            assert_eq!((r.layer, r.module), (1, "down_proj+removed"));
            assert!(r.before < 1e-12 && r.after < 1e-12, "{r:?}");
        }
    }

    // Layer 0 has no layer before it: removed without a repair, refused with one.
    let plan = Plan::depth(&model.config, vec![0]);
    let first = Recipe {
        layers: Some(LayerRange { start: 0, end: 4 }),
        compensation: Compensation::None,
        ..recipe.clone()
    };
    let run = |recipe: &Recipe| {
        block_on(apply_plan(
            model.clone(),
            recipe,
            Some(plan.clone()),
            None,
            &windows,
            &device,
            &Silent,
            &mut vec![],
        ))
    };
    assert_eq!(run(&first).unwrap().model.layers.len(), 3);
    let repaired = Recipe {
        compensation: Compensation::Ls,
        ..first
    };
    let err = run(&repaired).err().unwrap().to_string();
    assert!(err.contains("layer 0 has no layer before it"), "{err}");
}

#[test]
fn the_perplexity_criterion_is_the_calibration_loss_with_the_layer_skipped() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    // 10 windows: a batch of 8 and one of 2.
    let windows = calib("tiny-gqa");
    let recipe = depth_recipe(
        Importance::Perplexity,
        0.25,
        (1, 4),
        Compensation::None,
        "tiny-gqa",
    );
    let (plan, scores) = plan_of(&model, &recipe, &windows);
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<Cpu>(&refs, &device);
    let mut want = vec![];
    for (s, l) in scores.iter().zip(1..4) {
        let without = apply(model.clone(), &Plan::depth(&model.config, vec![l])).unwrap();
        let ppl = block_on(scalar(without.loss(ids.clone()))).unwrap().exp();
        let got = s.whole.unwrap();
        assert_eq!(s.layer, l);
        assert!((got - ppl).abs() / ppl < 1e-5, "layer {l}: {got} vs {ppl}");
        want.push((ppl, l));
    }
    let lowest = want.iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap().1;
    assert_eq!(plan.removed_layers, vec![lowest]);
}

#[test]
fn whole_layer_taylor_scores_sum_the_golden_structure_scores() {
    for name in ["tiny-mha", "tiny-gqa"] {
        let golden = golden_json(name);
        let device = Default::default();
        let model = load_fixture::<Ad>(name, &device);
        let recipe = depth_recipe(
            Importance::TaylorFirst,
            0.5,
            (1, 3),
            Compensation::None,
            name,
        );
        let mut timings = vec![];
        let Planned { plan, scores, .. } = block_on(make_plan(
            &model,
            &recipe,
            &calib(name),
            &device,
            &Silent,
            &mut timings,
        ))
        .unwrap();
        let mut want = vec![];
        for (s, layer) in scores.iter().zip([1usize, 2]) {
            let sum = |v: &Value| -> f64 {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .sum()
            };
            let key = layer.to_string();
            let kv =
                sum(&golden["scores"]["param_first"]["gqa_query_head_h_in_group_h_div_nrep"][&key]);
            let mlp =
                sum(&golden["scores"]["param_first"]["llm_pruner_official"][&key]["mlp_channels"]);
            let got = s.whole.unwrap();
            assert_eq!(s.layer, layer);
            assert!(
                ((got - (kv + mlp)) / (kv + mlp)).abs() < 1e-3,
                "{name} layer {layer}: {got} vs {}",
                kv + mlp
            );
            assert!(s.kv_groups.is_empty() && s.mlp_channels.is_empty());
            want.push((kv + mlp, layer));
        }
        let lowest = want.iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap().1;
        assert_eq!(plan.removed_layers, vec![lowest], "{name}");
    }
}

#[test]
fn the_depth_repair_solves_its_normal_equations() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let windows = calib("tiny-gqa");
    // What layer 1 computes on the calibration windows, and what layer 2 adds after it.
    let h = input_of(&model, 1, &windows);
    let pos = model.positions(windows[0].len(), &device);
    let b1 = &model.layers[1];
    let h_mid = h.clone() + b1.self_attn.forward(b1.input_layernorm.forward(h), &pos);
    let x_t = b1
        .mlp
        .hidden(b1.post_attention_layernorm.forward(h_mid.clone()));
    let h_out = h_mid + b1.mlp.down_proj.forward(x_t.clone());
    let t_t = model.layers[2].forward(h_out.clone(), &pos) - h_out;
    let (x, t) = (rows(x_t), rows(t_t));
    let (n, d) = (x[0].len(), t[0].len());
    let w = block_on(to_vec_f64(b1.mlp.down_proj.weight.val())).unwrap();
    // G = Σ x xᵀ, C = Σ t xᵀ, λ = 0.01 · mean(diag G).
    let mut g = vec![0.0; n * n];
    let mut c = vec![0.0; d * n];
    for (xr, tr) in x.iter().zip(&t) {
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] += xr[i] * xr[j];
            }
            for k in 0..d {
                c[k * n + i] += tr[k] * xr[i];
            }
        }
    }
    let lambda = 0.01 * (0..n).map(|i| g[i * n + i]).sum::<f64>() / n as f64;
    let tokens = x.len() as f64;

    for compensation in [Compensation::Ls, Compensation::Bias, Compensation::LsBias] {
        let recipe = depth_recipe(Importance::L2, 0.5, (2, 3), compensation, "tiny-gqa");
        let ad: Llama<Ad> = Llama::from_inner(model.clone());
        let out = block_on(prune(ad, &recipe, &windows, &device, &Silent)).unwrap();
        assert_eq!(out.plan.removed_layers, vec![2]);
        let down = &out.model.layers[1].mlp.down_proj;
        let w2 = block_on(to_vec_f64(down.weight.val())).unwrap();
        let db = match &down.bias {
            Some(b) => block_on(to_vec_f64(b.val())).unwrap(),
            None => vec![0.0; d],
        };
        let dw: Vec<f64> = w2.iter().zip(&w).map(|(a, b)| a - b).collect();
        let s: Vec<f64> = (0..n).map(|i| x.iter().map(|r| r[i]).sum()).collect();
        let t_mean: Vec<f64> = (0..d)
            .map(|k| t.iter().map(|r| r[k]).sum::<f64>() / tokens)
            .collect();
        match compensation {
            // ΔW (G + λI) = C.
            Compensation::Ls => {
                let (mut num, mut den) = (0.0, 0.0);
                for k in 0..d {
                    for j in 0..n {
                        let lhs: f64 = (0..n).map(|i| dw[k * n + i] * g[i * n + j]).sum::<f64>()
                            + lambda * dw[k * n + j];
                        num += (lhs - c[k * n + j]).powi(2);
                        den += c[k * n + j].powi(2);
                    }
                }
                assert!(
                    (num / den).sqrt() < 1e-4,
                    "ls residual {:e}",
                    (num / den).sqrt()
                );
                assert!(db.iter().all(|&b| b == 0.0), "ls adds no bias");
            }
            // Δb = mean(T), W unchanged.
            Compensation::Bias => {
                assert!(dw.iter().all(|&x| x == 0.0));
                let diff = db
                    .iter()
                    .zip(&t_mean)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(diff < 1e-5, "bias vs mean(T): {diff:e}");
            }
            // ΔW (G + λI) + Δb sᵀ = C and ΔW s + N Δb = Σ t.
            _ => {
                let (mut num, mut den) = (0.0, 0.0);
                for k in 0..d {
                    for j in 0..n {
                        let lhs: f64 = (0..n).map(|i| dw[k * n + i] * g[i * n + j]).sum::<f64>()
                            + lambda * dw[k * n + j]
                            + db[k] * s[j];
                        num += (lhs - c[k * n + j]).powi(2);
                        den += c[k * n + j].powi(2);
                    }
                    let lhs: f64 =
                        (0..n).map(|i| dw[k * n + i] * s[i]).sum::<f64>() + tokens * db[k];
                    num += (lhs - tokens * t_mean[k]).powi(2);
                    den += (tokens * t_mean[k]).powi(2);
                }
                assert!(
                    (num / den).sqrt() < 1e-4,
                    "ls-bias residual {:e}",
                    (num / den).sqrt()
                );
            }
        }
        // The reported errors: ‖T‖² and ‖T − ΔW x − Δb‖² relative to ‖W x + T‖².
        let mut full = 0.0;
        let (mut before, mut after) = (0.0, 0.0);
        for (xr, tr) in x.iter().zip(&t) {
            for k in 0..d {
                let wx: f64 = (0..n).map(|i| w[k * n + i] * xr[i]).sum();
                let dwx: f64 = (0..n).map(|i| dw[k * n + i] * xr[i]).sum();
                full += (wx + tr[k]).powi(2);
                before += tr[k].powi(2);
                after += (tr[k] - dwx - db[k]).powi(2);
            }
        }
        let r = &out.reconstruction[0];
        assert!(
            ((r.before - before / full) / (before / full)).abs() < 1e-4,
            "{r:?}"
        );
        assert!(
            ((r.after - after / full) / (after / full)).abs() < 1e-3,
            "{r:?} vs {}",
            after / full
        );
        assert!(r.after < r.before, "{compensation:?} repairs: {r:?}");
    }
}

#[test]
fn parameter_targets_remove_the_fewest_layers_that_reach_them() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let total = count_params(&cfg).total as f64;
    let one = total - count_params(&Plan::depth(&cfg, vec![1]).pruned_config(&cfg)).total as f64;
    let scores: Vec<LayerScores> = [(1, 3.0), (2, 1.0), (3, 2.0)]
        .into_iter()
        .map(|(layer, s)| LayerScores::whole_layer(layer, s))
        .collect();
    let plan = |t: f64| depth_plan(&cfg, &scores, None, Some(t));
    assert_eq!(plan(one / total).unwrap().removed_layers, vec![2]);
    assert_eq!(
        plan((one + 1.0) / total).unwrap().removed_layers,
        vec![2, 3]
    );
    assert_eq!(
        plan((2.0 * one + 1.0) / total).unwrap().removed_layers,
        vec![1, 2, 3]
    );
    let err = plan((3.0 * one + 1.0) / total).unwrap_err().to_string();
    assert!(err.contains("out of reach"), "{err}");
    let ratio = |r: f64| {
        depth_plan(&cfg, &scores, Some(r), None)
            .unwrap()
            .removed_layers
    };
    assert_eq!(ratio(0.0), Vec::<usize>::new());
    assert_eq!(ratio(0.34), vec![2, 3]);
    assert_eq!(pruned_count(26, 0.25), 7, "26 − ⌊26 · 0.75⌋");
}

#[test]
fn bad_depth_recipes_and_plans_are_refused() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let base = depth_recipe(
        Importance::BlockInfluence,
        0.5,
        (1, 4),
        Compensation::Ls,
        "tiny-gqa",
    );
    let err = |r: Recipe| r.check(&cfg).unwrap_err().to_string();
    let cases = [
        (
            Recipe {
                structures: vec![StructureKind::Layers, StructureKind::Mlp],
                ..base.clone()
            },
            "in a run of their own",
        ),
        (
            Recipe {
                importance: Importance::Numerical,
                ..base.clone()
            },
            "numerical scores columns of o_proj / down_proj and cannot rank whole layers",
        ),
        (
            Recipe {
                structures: vec![StructureKind::Mlp],
                ..base.clone()
            },
            "block-influence ranks whole layers",
        ),
        (
            Recipe {
                ratio: Some(0.9),
                layers: Some(LayerRange { start: 0, end: 4 }),
                compensation: Compensation::None,
                ..base.clone()
            },
            "removes 4 of the model's 4 layers",
        ),
        (
            Recipe {
                layers: Some(LayerRange { start: 0, end: 4 }),
                ..base.clone()
            },
            "no layer before it",
        ),
        (
            Recipe {
                ratio: Some(0.0),
                ..base.clone()
            },
            "ratio 0 removes none of the 3 layers of the range 1..4",
        ),
        (
            Recipe {
                allocation: prunelab::prune::allocate::Allocation::AttnMlpRatio { gamma: 1.0 },
                ..base.clone()
            },
            "whole layers take uniform or global",
        ),
    ];
    for (recipe, want) in cases {
        let got = err(recipe);
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    base.check(&cfg).unwrap();

    let plan = |json: Value| Plan::from_json(json.to_string().as_bytes()).unwrap();
    let mut good = serde_json::to_value(Plan::depth(&cfg, vec![1, 2])).unwrap();
    assert_eq!(good["removed_layers"], serde_json::json!([1, 2]));
    plan(good.clone()).check(&cfg).unwrap();
    for (removed, want) in [
        (
            serde_json::json!([2, 2]),
            "[2, 2]: layer indices must be distinct and increasing",
        ),
        (
            serde_json::json!([3, 1]),
            "[3, 1]: layer indices must be distinct and increasing",
        ),
        (
            serde_json::json!([4]),
            "[4]: layer 4 is not below the model's 4 layers",
        ),
        (
            serde_json::json!([0, 1, 2, 3]),
            "removes all 4 layers; at least one must stay",
        ),
    ] {
        good["removed_layers"] = removed;
        let got = plan(good.clone()).check(&cfg).unwrap_err().to_string();
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    good["removed_layers"] = serde_json::json!([1]);
    good["layers"] = serde_json::json!([{"layer": 1, "kv_groups": [0], "mlp_channels": []}]);
    let got = plan(good.clone()).check(&cfg).unwrap_err().to_string();
    assert!(got.contains("removed whole and also loses"), "{got}");
    // Width and depth in one plan: repaired in two steps (tests/depth_then_width.rs), or sliced.
    good["layers"] = serde_json::json!([{"layer": 2, "kv_groups": [0], "mlp_channels": []}]);
    let mixed = plan(good);
    mixed.check(&cfg).unwrap();
    base.check_with_plan(&cfg, &mixed).unwrap();
    let sliced = Recipe {
        compensation: Compensation::None,
        ..base.clone()
    };
    sliced.check_with_plan(&cfg, &mixed).unwrap();
    let outside = Recipe {
        layers: Some(LayerRange { start: 2, end: 4 }),
        ..sliced
    };
    let got = outside
        .check_with_plan(&cfg, &mixed)
        .unwrap_err()
        .to_string();
    assert!(
        got.contains("from layer 1, outside the pruned layers 2..4"),
        "{got}"
    );
}

#[test]
fn the_cli_writes_depth_pruned_models_that_load_back_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let model = fixture("tiny-gqa");
    let (hf, gguf) = (dir.path().join("hf"), dir.path().join("m.gguf"));
    let args = |out: &std::path::Path| {
        vec![
            "prune".to_string(),
            model.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--structures".into(),
            "layers".into(),
            "--importance".into(),
            "block-influence".into(),
            "--ratio".into(),
            "0.5".into(),
            "--layers".into(),
            "1..4".into(),
            "--calib-ids".into(),
            ids.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let run = |a: Vec<String>| run_cli_json(&a);
    let report = run(args(&hf));
    let mut g = args(&gguf);
    g.extend(["--format".into(), "gguf".into()]);
    let report_gguf = run(g);
    let removed = report["plan"]["removed_layers"].clone();
    assert_eq!(removed.as_array().unwrap().len(), 2, "{removed}");
    assert_eq!(report_gguf["plan"], report["plan"]);
    assert_eq!(report["layers_after"].as_array().unwrap().len(), 2);
    assert_eq!(report["reconstruction"][0]["module"], "down_proj+removed");
    let cfg: Value = serde_json::from_slice(&read(&hf.join("config.json"))).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 2);

    // The library's run on the same recipe: the files hold that model.
    let device = Default::default();
    let recipe = Recipe::from_json(&read(&hf.join("recipe.json"))).unwrap();
    let ad = load_fixture::<Ad>("tiny-gqa", &device);
    let out = block_on(prune(ad, &recipe, &calib("tiny-gqa"), &device, &Silent)).unwrap();
    let want = probe_logits(&out.model);
    let loaded = |path: &std::path::Path| -> Llama<Cpu> {
        let out = Command::new(env!("CARGO_BIN_EXE_prunelab"))
            .args(["inspect", path.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        load_hf_folder::<Cpu>(path, &device)
    };
    assert_eq!(probe_logits(&loaded(&hf)), want, "HF folder");
    assert_eq!(
        probe_logits(&load_gguf::<Cpu>(&gguf, &device)),
        want,
        "GGUF"
    );

    // The saved plan with the run's recipe replays to the same model.
    let replay = dir.path().join("replay");
    replay_run(&model, &hf, &replay, &ids);
    assert_eq!(probe_logits(&loaded(&replay)), want, "replayed plan");
    // Streamed from disk to disk (scored in a first pass, then the plan streamed): the same model.
    let mut streamed = args(&dir.path().join("s"));
    streamed.push("--stream".into());
    let report_streamed = run(streamed);
    assert_eq!(report_streamed["plan"], report["plan"]);
    assert_eq!(report_streamed["scores"], report["scores"]);
    let diff = max_abs_diff(&probe_logits(&loaded(&dir.path().join("s"))), &want);
    assert!(diff < 1e-5, "streamed: {diff:e}");
    // The skipped-layer perplexity needs every later layer for each one: not streamed, and nothing written.
    let mut refused = args(&dir.path().join("r"));
    refused[7] = "perplexity".into();
    refused.push("--stream".into());
    let out = Command::new(env!("CARGO_BIN_EXE_prunelab"))
        .args(&refused)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped-layer perplexity need the whole model"),
        "{err}"
    );
    assert!(!dir.path().join("r").exists());
}
