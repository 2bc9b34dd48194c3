//! Query heads pruned inside their KV groups (`--structures query-heads`): per-head Taylor scores against the
//! golden gradients, the even choice (every group loses its lowest heads), slicing against zeroing the heads'
//! `o_proj` columns, heads that write nothing removed without changing the logits under every repair, global
//! allocation by head ranks, the CLI's HF and GGUF outputs, plan replay and streamed runs, and bad recipes and
//! plans (uneven groups first).

mod common;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Param};
use burn::tensor::Tensor;
use common::*;
use pollster::block_on;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::params::count_params;
use prunelab::model::Llama;
use prunelab::progress::Silent;
use prunelab::prune::allocate::Allocation;
use prunelab::prune::calib::CalibSource;
use prunelab::prune::compensate::Compensation;
use prunelab::prune::importance::{Importance, LayerScores};
use prunelab::prune::pipeline::{make_plan, prune, Planned};
use prunelab::prune::plan::{apply, LayerPlan, Plan};
use prunelab::prune::recipe::{LayerRange, Recipe};
use prunelab::prune::structure::{even_query_heads, StructureKind};
use prunelab::readback::to_vec;
use serde_json::Value;

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

/// tiny-gqa: 6 query heads of 16 channels in 2 KV groups (heads 0–2 read group 0, heads 3–5 group 1).
const HD: usize = 16;

fn calib() -> Vec<Vec<u32>> {
    id_windows(&golden_json("tiny-gqa")["calibration_input_ids"])
}

fn recipe(
    structures: Vec<StructureKind>,
    importance: Importance,
    layers: (usize, usize),
) -> Recipe {
    Recipe {
        structures,
        importance,
        ratio: Some(0.5),
        layers: Some(LayerRange {
            start: layers.0,
            end: layers.1,
        }),
        calibration: CalibSource::Ids { windows: calib() },
        ..Recipe::default()
    }
}

/// The plan and scores `recipe` makes for `model` on the golden calibration windows.
fn plan_of(model: &Llama<Ad>, recipe: &Recipe) -> (Plan, Vec<LayerScores>) {
    let device = Default::default();
    let Planned { plan, scores, .. } = block_on(make_plan(
        model,
        recipe,
        &calib(),
        &device,
        &Silent,
        &mut vec![],
    ))
    .unwrap();
    (plan, scores)
}

fn probe_logits(model: &Llama<Cpu>) -> Vec<f32> {
    let probe = id_windows(&golden_json("tiny-gqa")["probe_input_ids"]);
    let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<Cpu>(&refs, &Default::default());
    block_on(to_vec(model.forward(ids))).unwrap()
}

fn values(t: Tensor<Cpu, 2>) -> Vec<f32> {
    block_on(to_vec(t)).unwrap()
}

/// `model` with the `o_proj` columns of `heads` in layer `l` set to zero: the heads write nothing.
fn silence(model: &mut Llama<Cpu>, l: usize, heads: &[usize]) {
    let o = &mut model.layers[l].self_attn.o_proj;
    let [rows, cols] = o.weight.dims();
    let mut w = values(o.weight.val());
    for r in 0..rows {
        for &h in heads {
            w[r * cols + h * HD..r * cols + (h + 1) * HD].fill(0.0);
        }
    }
    let data = burn::tensor::TensorData::new(w, [rows, cols]);
    o.weight = Param::from_tensor(Tensor::from_data(data, &Default::default()));
}

fn query_plan(l: usize, kv_groups: Vec<usize>, query_heads: Vec<usize>) -> LayerPlan {
    LayerPlan {
        layer: l,
        kv_groups,
        query_heads,
        mlp_channels: vec![],
    }
}

#[test]
fn taylor_query_head_scores_follow_the_golden_gradients_and_each_group_loses_its_lowest() {
    let device = Default::default();
    let model = load_fixture::<Ad>("tiny-gqa", &device);
    let inner = load_fixture::<Cpu>("tiny-gqa", &device);
    let golden = golden_tensors("tiny-gqa");
    let r = recipe(
        vec![StructureKind::QueryHeads, StructureKind::Mlp],
        Importance::TaylorFirst,
        (1, 3),
    );
    let (plan, scores) = plan_of(&model, &r);
    for (s, lp) in scores.iter().zip(&plan.layers) {
        let l = s.layer;
        let a = &inner.layers[l].self_attn;
        let salience = |name: &str, w: Tensor<Cpu, 2>| -> Vec<f64> {
            let g = &golden[&format!("grad.model.layers.{l}.self_attn.{name}.weight")].1;
            values(w)
                .iter()
                .zip(g)
                .map(|(w, g)| (*w as f64 * *g as f64).abs())
                .collect()
        };
        let (q, o) = (
            salience("q_proj", a.q_proj.weight.val()),
            salience("o_proj", a.o_proj.weight.val()),
        );
        let (d_in, d_out) = (a.q_proj.weight.dims()[1], a.o_proj.weight.dims()[0]);
        let cols = 6 * HD;
        // Σ|W·∂L/∂W| over the head's q rows and its o_proj columns.
        let want: Vec<f64> = (0..6)
            .map(|h| {
                let rows: f64 = q[h * HD * d_in..(h + 1) * HD * d_in].iter().sum();
                let o_cols: f64 = (0..d_out)
                    .map(|r| {
                        o[r * cols + h * HD..r * cols + (h + 1) * HD]
                            .iter()
                            .sum::<f64>()
                    })
                    .sum();
                rows + o_cols
            })
            .collect();
        assert_eq!(s.query_heads.len(), 6);
        for (got, want) in s.query_heads.iter().zip(&want) {
            assert!(
                ((*got as f64) - want).abs() <= 1e-3 * want.abs(),
                "layer {l}: {got} vs {want}"
            );
        }
        // Ratio 0.5 of a group's 3 · 16 query channels is one head: each group's lowest goes.
        let lowest = |g: usize| {
            (3 * g..3 * g + 3)
                .min_by(|&x, &y| want[x].total_cmp(&want[y]))
                .unwrap()
        };
        assert_eq!(lp.query_heads, vec![lowest(0), lowest(1)], "layer {l}");
        assert!(lp.kv_groups.is_empty());
    }
}

#[test]
fn removing_query_heads_equals_silencing_their_o_proj_columns() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let cfg = model.config.clone();
    // Layer 1 loses heads 1 and 4 (one per group); layer 2 loses KV group 0 whole and head 5 of group 1.
    let plan = Plan::new(
        &cfg,
        vec![
            query_plan(1, vec![], vec![1, 4]),
            query_plan(2, vec![0], vec![5]),
        ],
    );
    let mut silenced = model.clone();
    silence(&mut silenced, 1, &[1, 4]);
    silence(&mut silenced, 2, &[0, 1, 2, 5]);
    let pruned = apply(model, &plan).unwrap();
    let shapes: Vec<(usize, usize)> = pruned
        .config
        .layers
        .iter()
        .map(|s| (s.num_heads, s.num_kv_heads))
        .collect();
    assert_eq!(shapes, vec![(6, 2), (4, 2), (2, 1), (6, 2)]);
    let diff = max_abs_diff(&probe_logits(&pruned), &probe_logits(&silenced));
    assert!(diff < 1e-5, "{diff:e}");
    // The plan's heads are its own: written and read back unchanged, and absent from plans without any.
    let back = Plan::from_json(&serde_json::to_vec(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
    let none = serde_json::to_value(Plan::new(&cfg, vec![query_plan(1, vec![0], vec![])])).unwrap();
    assert!(none["layers"][0].get("query_heads").is_none(), "{none}");
}

#[test]
fn heads_that_write_nothing_go_first_and_every_repair_leaves_the_logits() {
    let device = Default::default();
    let mut model = load_fixture::<Cpu>("tiny-gqa", &device);
    silence(&mut model, 2, &[0, 4]);
    let original = probe_logits(&model);
    for compensation in [
        Compensation::None,
        Compensation::Bias,
        Compensation::Ls,
        Compensation::LsBias,
    ] {
        let r = Recipe {
            compensation,
            ..recipe(vec![StructureKind::QueryHeads], Importance::Flap, (2, 3))
        };
        let ad: Llama<Ad> = Llama::from_inner(model.clone());
        let out = block_on(prune(ad, &r, &calib(), &device, &Silent)).unwrap();
        assert_eq!(
            out.plan.layers[0].query_heads,
            vec![0, 4],
            "{compensation:?}"
        );
        assert_eq!(out.model.config.layers[2].num_heads, 4);
        assert_eq!(out.model.config.layers[2].num_kv_heads, 2);
        let diff = max_abs_diff(&probe_logits(&out.model), &original);
        assert!(diff < 1e-4, "{compensation:?}: {diff:e}");
        let o = out
            .reconstruction
            .iter()
            .find(|r| r.module == "o_proj")
            .unwrap();
        assert!(o.before < 1e-12 && o.after < 1e-12, "{o:?}");
    }
}

#[test]
fn global_allocation_removes_query_heads_rank_by_rank() {
    let device = Default::default();
    let model = load_fixture::<Ad>("tiny-gqa", &device);
    let cfg = model.config.clone();
    let r = Recipe {
        allocation: Allocation::Global,
        ratio: None,
        target_params: Some(0.15),
        compensation: Compensation::None,
        ..recipe(
            vec![StructureKind::QueryHeads, StructureKind::Mlp],
            Importance::L2,
            (0, 4),
        )
    };
    let (plan, scores) = plan_of(&model, &r);
    plan.check(&cfg).unwrap();
    let mut heads = 0;
    for (s, lp) in scores.iter().zip(&plan.layers) {
        // Whatever the global threshold took, each group lost its lowest heads, and as many as the other.
        let per_group = lp.query_heads.len() / 2;
        let lowest = even_query_heads(&s.query_heads, &cfg.layers[s.layer], per_group, &[]);
        assert_eq!(lp.query_heads, lowest, "layer {}", s.layer);
        heads += lp.query_heads.len();
    }
    assert!(heads > 0, "the threshold took no query head: {plan:?}");
    // The running count stops at the first structure that reaches the target: it overshoots by less than the
    // largest one, a head rank (a head in each of 2 groups: 16 q rows and 16 o_proj columns of width 96).
    let total = count_params(&cfg).total as f64;
    let removed = total - count_params(&plan.pruned_config(&cfg)).total as f64;
    let rank = (2 * HD * 2 * cfg.hidden_size) as f64;
    assert!(
        removed >= 0.15 * total && removed < 0.15 * total + rank,
        "{removed} of {total}"
    );
}

#[test]
fn bad_query_head_recipes_and_plans_are_refused() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let base = recipe(
        vec![StructureKind::QueryHeads, StructureKind::Mlp],
        Importance::Numerical,
        (1, 3),
    );
    base.check(&cfg).unwrap();
    let both = Recipe {
        structures: vec![StructureKind::KvGroups, StructureKind::QueryHeads],
        ..base.clone()
    };
    let got = both.check(&cfg).unwrap_err().to_string();
    assert!(got.contains("choose one per run"), "{got}");
    let (mha, _) = fixture_files("tiny-mha");
    let got = base.check(&mha).unwrap_err().to_string();
    assert!(
        got.contains("single query head (multi-head attention)"),
        "{got}"
    );

    for (lp, want) in [
        (
            query_plan(1, vec![], vec![1]),
            "KV group 0 loses 1 query heads and group 1 loses 0: every group must keep the same number",
        ),
        (
            query_plan(1, vec![1], vec![3]),
            "query head 3 belongs to KV group 1, which is removed whole",
        ),
        (
            query_plan(1, vec![], vec![0, 1, 2, 3, 4]),
            "removes all 3 query heads of KV group 0",
        ),
        (
            query_plan(1, vec![], vec![1, 1]),
            "query heads [1, 1] must be distinct indices below 6",
        ),
        (
            query_plan(1, vec![], vec![2, 6]),
            "query heads [2, 6] must be distinct indices below 6",
        ),
    ] {
        let got = Plan::new(&cfg, vec![lp]).check(&cfg).unwrap_err().to_string();
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
}

#[test]
fn the_cli_writes_query_head_pruned_models_that_load_back_replay_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let model = fixture("tiny-gqa");
    let args = |out: &std::path::Path, extra: &[&str]| -> Value {
        let mut a = vec![
            "prune",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--structures",
            "query-heads,mlp",
            "--ratio",
            "0.5",
            "--layers",
            "1..4",
            "--calib-ids",
            ids.to_str().unwrap(),
            "--json",
        ];
        a.extend(extra);
        serde_json::from_str(&run_cli(&a)).unwrap()
    };
    let (hf, gguf) = (dir.path().join("hf"), dir.path().join("m.gguf"));
    let report = args(&hf, &[]);
    let report_gguf = args(&gguf, &["--format", "gguf"]);
    assert_eq!(report_gguf["plan"], report["plan"]);
    for l in 1..4 {
        assert_eq!(report["layers_after"][l]["num_heads"], 4, "{report}");
        assert_eq!(report["layers_after"][l]["num_kv_heads"], 2);
        assert_eq!(
            report["scores"][l - 1]["query_heads"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
    }
    assert_eq!(report["layers_after"][0]["num_heads"], 6);

    let device = Default::default();
    let recipe = Recipe::from_json(&read(&hf.join("recipe.json"))).unwrap();
    let ad = load_fixture::<Ad>("tiny-gqa", &device);
    let out = block_on(prune(ad, &recipe, &calib(), &device, &Silent)).unwrap();
    let want = probe_logits(&out.model);
    let loaded = |path: &std::path::Path| load_hf_folder::<Cpu>(path, &device);
    assert_eq!(probe_logits(&loaded(&hf)), want, "HF folder");
    assert_eq!(
        probe_logits(&load_gguf::<Cpu>(&gguf, &device)),
        want,
        "GGUF"
    );

    let replay = dir.path().join("replay");
    replay_run(&model, &hf, &replay, &ids);
    let diff = max_abs_diff(&probe_logits(&loaded(&replay)), &want);
    assert!(diff < 1e-5, "replayed plan: {diff:e}");
    let streamed = dir.path().join("s");
    let report_streamed = args(&streamed, &["--stream"]);
    assert_eq!(report_streamed["plan"], report["plan"]);
    let diff = max_abs_diff(&probe_logits(&loaded(&streamed)), &want);
    assert!(diff < 1e-5, "streamed: {diff:e}");
}
