//! Grouped pruning against the published LLM-Pruner code (`golden.json` of both fixtures): every importance
//! score per KV group and MLP channel, with the published GQA aggregation and with the correct one; the pruned
//! shapes, parameter count and logits of its `param_first` run; NIRVANA's NTK score, the gradient of the output
//! against finite differences; plans and bad recipes.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use common::*;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::params::count_params;
use prunelab::progress::Silent;
use prunelab::prune::calib::CalibSource;
use prunelab::prune::gradients::gradient_stats;
use prunelab::prune::importance::{score_layer, Importance, Objective};
use prunelab::prune::pipeline::prune;
use prunelab::prune::plan::{apply, LayerPlan, Plan};
use prunelab::prune::recipe::{LayerRange, Recipe};
use prunelab::prune::structure::Aggregation;
use prunelab::readback::{scalar, to_vec};

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let rel = (g - w).abs() / w.abs().max(1e-12);
        assert!(rel < 1e-3, "{what}[{i}]: {g} vs {w} (relative {rel:e})");
    }
}

/// `Σ |W|^p` of every member of each KV group (query heads `h / n_rep = g`: q rows, k and v rows, o columns) and
/// of each MLP channel (gate and up rows, down column), summed in f64 straight from the fixture's weights.
fn magnitudes_by_hand(name: &str, layer: usize, p: i32) -> (Vec<f32>, Vec<f32>) {
    let (cfg, bytes) = fixture_files(name);
    let st = prunelab::io::SafetensorsWeights::from_files(&[("m".into(), &bytes)], None).unwrap();
    let w = |suffix: &str| {
        use prunelab::model::WeightSource;
        st.read_f32(&format!("model.layers.{layer}.{suffix}"))
            .unwrap()
    };
    let (d, hd, s) = (cfg.hidden_size, cfg.head_dim, cfg.layers[layer]);
    let m = |x: f32| (x.abs() as f64).powi(p);
    // Rows [r0, r1) of a matrix `cols` wide, or columns [c0, c1) of one `cols` wide.
    let rows = |v: &[f32], r: std::ops::Range<usize>, cols: usize| -> f64 {
        v[r.start * cols..r.end * cols].iter().map(|&x| m(x)).sum()
    };
    let columns = |v: &[f32], c: std::ops::Range<usize>, cols: usize| -> f64 {
        v.chunks(cols)
            .map(|row| row[c.clone()].iter().map(|&x| m(x)).sum::<f64>())
            .sum()
    };
    let (q, k, v, o) = (
        w("self_attn.q_proj.weight"),
        w("self_attn.k_proj.weight"),
        w("self_attn.v_proj.weight"),
        w("self_attn.o_proj.weight"),
    );
    let kv = (0..s.num_kv_heads)
        .map(|g| {
            let heads = g * s.n_rep()..(g + 1) * s.n_rep();
            let query = heads.start * hd..heads.end * hd;
            let own = g * hd..(g + 1) * hd;
            (rows(&q, query.clone(), d)
                + rows(&k, own.clone(), d)
                + rows(&v, own, d)
                + columns(&o, query, s.num_heads * hd)) as f32
        })
        .collect();
    let (gate, up, down) = (
        w("mlp.gate_proj.weight"),
        w("mlp.up_proj.weight"),
        w("mlp.down_proj.weight"),
    );
    let n = s.intermediate_size;
    let mlp = (0..n)
        .map(|c| {
            (rows(&gate, c..c + 1, d) + rows(&up, c..c + 1, d) + columns(&down, c..c + 1, n)) as f32
        })
        .collect();
    (kv, mlp)
}

fn check_scores(name: &str) {
    let golden = golden_json(name);
    let calib = id_windows(&golden["calibration_input_ids"]);
    let device = Default::default();
    let model = load_fixture::<Ad>(name, &device);
    let stats = gradient_stats(
        &model,
        &calib,
        1..3,
        Some(Objective::Loss),
        true,
        calib.len(),
        &device,
        &Silent,
    )
    .unwrap();
    let inner = model.valid();
    let kinds = [
        ("vectorize", Importance::TaylorVector),
        ("param_first", Importance::TaylorFirst),
        ("param_second", Importance::TaylorSecond),
        ("param_mix", Importance::TaylorMix),
        ("l1", Importance::L1),
        ("l2", Importance::L2),
    ];
    for (key, kind) in kinds {
        for layer in [1usize, 2] {
            let shape = &inner.config.layers[layer];
            let official = &golden["scores"][key]["llm_pruner_official"][layer.to_string()];
            let score = |agg| {
                pollster::block_on(score_layer(
                    layer,
                    &inner.layers[layer],
                    shape,
                    &stats,
                    kind,
                    agg,
                    0,
                ))
                .unwrap()
            };
            let s = score(Aggregation::LlmPruner);
            assert_close(
                &s.kv_groups,
                &floats(&official["attn_kv_groups"]),
                &format!("{name} {key} layer {layer} kv (compat)"),
            );
            assert_close(
                &s.mlp_channels,
                &floats(&official["mlp_channels"]),
                &format!("{name} {key} layer {layer} mlp (compat)"),
            );
            // The correct aggregation: Taylor scores from the golden file, magnitudes summed by hand.
            let (kv, mlp) = match kind {
                Importance::L1 => magnitudes_by_hand(name, layer, 1),
                Importance::L2 => magnitudes_by_hand(name, layer, 2),
                _ => (
                    floats(
                        &golden["scores"][key]["gqa_query_head_h_in_group_h_div_nrep"]
                            [layer.to_string()],
                    ),
                    floats(&official["mlp_channels"]),
                ),
            };
            let s = score(Aggregation::Correct);
            assert_close(
                &s.kv_groups,
                &kv,
                &format!("{name} {key} layer {layer} kv (correct)"),
            );
            assert_close(
                &s.mlp_channels,
                &mlp,
                &format!("{name} {key} layer {layer} mlp (correct)"),
            );
        }
    }
}

#[test]
fn scores_match_llm_pruner_tiny_mha() {
    check_scores("tiny-mha");
}

#[test]
fn scores_match_llm_pruner_tiny_gqa() {
    check_scores("tiny-gqa");
}

fn compat_recipe(golden: &serde_json::Value) -> Recipe {
    Recipe {
        importance: Importance::TaylorFirst,
        aggregation: Aggregation::LlmPruner,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 1, end: 3 }),
        calibration: CalibSource::Ids {
            windows: id_windows(&golden["calibration_input_ids"]),
        },
        compensation: prunelab::prune::compensate::Compensation::None,
        ..Recipe::default()
    }
}

/// A fixture's weights with one tensor scaled.
struct Scaled<'a> {
    inner: &'a prunelab::io::SafetensorsWeights<'a>,
    tensor: &'a str,
    factor: f32,
}

impl prunelab::model::WeightSource for Scaled<'_> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.inner.inventory()
    }
    fn read(&self, name: &str) -> prunelab::Result<burn::tensor::TensorData> {
        let data = self.inner.read(name)?;
        Ok(match name == self.tensor {
            true => {
                let shape = data.shape.clone();
                let v: Vec<f32> = data.convert::<f32>().into_vec().unwrap();
                burn::tensor::TensorData::new(v.iter().map(|x| x * self.factor).collect(), shape)
            }
            false => data,
        })
    }
}

/// NIRVANA's NTK score differentiates the output, not the loss. For every matrix of layers 1 and 2 of both
/// fixtures, `Σ W ⊙ ∂f/∂W` is the derivative of `f` along `W` itself: a central difference of `f` computed here
/// from the logits of models whose matrix is scaled by 1 ± h (each logit's largest value over the positions,
/// averaged over windows and vocabulary in f64). A pipeline run with `ntk` scores structures by taylor-first's
/// formula applied to that gradient.
#[test]
fn ntk_scores_differentiate_the_output_functional() {
    use prunelab::model::WeightSource;
    for name in ["tiny-mha", "tiny-gqa"] {
        let golden = golden_json(name);
        let calib = id_windows(&golden["calibration_input_ids"]);
        let refs: Vec<&[u32]> = calib.iter().map(|w| w.as_slice()).collect();
        let device = Default::default();
        let model = load_fixture::<Ad>(name, &device);
        let output = Some(Objective::Output);
        let stats = gradient_stats(
            &model,
            &calib,
            1..3,
            output,
            false,
            calib.len(),
            &device,
            &Silent,
        )
        .unwrap();
        let loss = Some(Objective::Loss);
        let loss_stats = gradient_stats(
            &model,
            &calib,
            1..3,
            loss,
            false,
            calib.len(),
            &device,
            &Silent,
        )
        .unwrap();
        let (cfg, bytes) = fixture_files(name);
        let st =
            prunelab::io::SafetensorsWeights::from_files(&[("m".into(), &bytes)], None).unwrap();
        let vocab = cfg.vocab_size;
        let f = |tensor: &str, factor: f32| -> f64 {
            let src = Scaled {
                inner: &st,
                tensor,
                factor,
            };
            let model = prunelab::model::Llama::<Cpu>::load(&cfg, &src, &device).unwrap();
            let logits =
                pollster::block_on(to_vec(model.forward(batch_tensor::<Cpu>(&refs, &device))))
                    .unwrap();
            let per_window = logits.len() / refs.len();
            let maxima: f64 = logits
                .chunks(per_window)
                .flat_map(|w| {
                    (0..vocab).map(move |v| {
                        w.iter()
                            .skip(v)
                            .step_by(vocab)
                            .fold(f32::MIN, |a, &b| a.max(b)) as f64
                    })
                })
                .sum();
            maxima / (refs.len() * vocab) as f64
        };
        assert_eq!(
            stats.grad.len(),
            14,
            "{name}: 7 matrices in each of 2 layers"
        );
        let h = 3e-4;
        for (tensor, g) in &stats.grad {
            let w = st.read_f32(tensor).unwrap();
            let g = pollster::block_on(to_vec(g.clone())).unwrap();
            let along =
                |g: &[f32]| -> f64 { w.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum() };
            let analytic = along(&g);
            let numeric = (f(tensor, 1.0 + h) - f(tensor, 1.0 - h)) / (2.0 * h as f64);
            let rel = (analytic - numeric).abs() / numeric.abs();
            assert!(
                rel < 1e-2,
                "{name} {tensor}: Σ W·∂f/∂W {analytic:e} vs finite difference {numeric:e}"
            );
            // The loss gradient fails the same check (the max over positions has kinks: with h = 1e-2 the
            // difference quotients stray by up to 3%; at 3e-4 by 4.4e-3 at most, the loss's by 5.7% at least).
            let l = pollster::block_on(to_vec(loss_stats.grad[tensor].clone())).unwrap();
            assert!(
                (along(&l) - numeric).abs() > 1e-2 * numeric.abs(),
                "{name} {tensor}: the loss gradient would pass too"
            );
        }
        let recipe = Recipe {
            importance: Importance::Ntk,
            ..compat_recipe(&golden)
        };
        let out =
            pollster::block_on(prune(model.clone(), &recipe, &calib, &device, &Silent)).unwrap();
        let inner = model.valid();
        for s in &out.scores {
            let want = pollster::block_on(score_layer(
                s.layer,
                &inner.layers[s.layer],
                &inner.config.layers[s.layer],
                &stats,
                Importance::TaylorFirst,
                recipe.aggregation,
                0,
            ))
            .unwrap();
            assert_eq!(s, &want, "{name} layer {}", s.layer);
        }
        assert_eq!(out.scores.len(), 2);
    }
}

#[test]
fn param_first_prune_reproduces_llm_pruner() {
    for name in ["tiny-mha", "tiny-gqa"] {
        let golden = golden_json(name);
        let tensors = golden_tensors(name);
        let device = Default::default();
        let model = load_fixture::<Ad>(name, &device);
        let calib = id_windows(&golden["calibration_input_ids"]);
        let out = pollster::block_on(prune(
            model,
            &compat_recipe(&golden),
            &calib,
            &device,
            &Silent,
        ))
        .unwrap();
        let want = &golden["pruned_param_first"];
        let cfg = &out.model.config;
        let col = |f: fn(&prunelab::model::LayerShape) -> usize| {
            serde_json::json!(cfg.layers.iter().map(f).collect::<Vec<_>>())
        };
        assert_eq!(col(|l| l.num_heads), want["q_heads"], "{name} query heads");
        assert_eq!(col(|l| l.num_kv_heads), want["kv_heads"], "{name} kv heads");
        assert_eq!(
            col(|l| l.intermediate_size),
            want["intermediate"],
            "{name} mlp widths"
        );
        assert_eq!(
            serde_json::json!(count_params(cfg).total),
            want["params"],
            "{name} parameters"
        );
        let probe = id_windows(&golden["probe_input_ids"]);
        let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
        let ids = batch_tensor::<Cpu>(&refs, &device);
        let logits = pollster::block_on(to_vec(out.model.forward(ids.clone()))).unwrap();
        let diff = max_abs_diff(&logits, &tensors["pruned_param_first.probe_logits"].1);
        assert!(
            diff < 1e-4,
            "{name}: pruned probe logits differ by {diff:e}"
        );
        let loss = pollster::block_on(scalar(out.model.loss(ids))).unwrap();
        let want_loss = want["probe_loss"].as_f64().unwrap();
        assert!(
            (loss - want_loss).abs() / want_loss < 1e-5,
            "{name}: pruned probe loss {loss} vs {want_loss}"
        );
    }
}

#[test]
fn plans_round_trip_and_refuse_other_models() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let plan = Plan::new(
        &model.config,
        vec![LayerPlan {
            layer: 2,
            kv_groups: vec![1],
            query_heads: vec![],
            mlp_channels: vec![0, 5, 7],
        }],
    );
    let json = serde_json::to_vec(&plan).unwrap();
    assert_eq!(Plan::from_json(&json).unwrap(), plan);
    let pruned = apply(model, &plan).unwrap();
    assert_eq!(pruned.config.layers[2].num_heads, 3);
    assert_eq!(pruned.config.layers[2].intermediate_size, 189);
    let other = load_fixture::<Cpu>("tiny-mha", &device);
    let err = apply(other, &plan).err().unwrap().to_string();
    assert!(
        err.contains("the plan was made for another model: hidden_size 96, this model's 64"),
        "{err}"
    );
    // Same sizes, other widths: the layer is named.
    let on_pruned = Plan::new(&pruned.config, vec![]);
    let err = apply(load_fixture::<Cpu>("tiny-gqa", &device), &on_pruned)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(
            "layer 2 has 3 query heads, 1 KV heads and MLP width 189 there, 6 / 2 / 192 here"
        ),
        "{err}"
    );
    let bad = Plan::new(&pruned.config, vec![LayerPlan::keep_all(9)]);
    assert!(apply(pruned, &bad)
        .err()
        .unwrap()
        .to_string()
        .contains("plan names layer 9 but the model has 4"));
}

#[test]
fn bad_recipes_are_refused_before_any_work() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let base = Recipe {
        ratio: Some(0.2),
        ..Recipe::default()
    };
    let cases: Vec<(Recipe, &str)> = vec![
        (
            Recipe {
                ratio: Some(1.0),
                ..base.clone()
            },
            "ratio 1 is outside [0, 1)",
        ),
        (
            Recipe {
                ratio: Some(-0.1),
                ..base.clone()
            },
            "ratio -0.1 is outside [0, 1)",
        ),
        (
            Recipe {
                layers: Some(LayerRange { start: 2, end: 9 }),
                ..base.clone()
            },
            "layer range 2..9 is outside the model's 4 layers",
        ),
        (
            Recipe {
                ratio: None,
                ..base.clone()
            },
            "give a ratio (--ratio) or a parameter target",
        ),
        (
            Recipe {
                target_params: Some(0.2),
                ..base.clone()
            },
            "either a ratio or a parameter target, not both",
        ),
        (
            Recipe {
                structures: vec![],
                ..base.clone()
            },
            "no structures to prune",
        ),
        (
            Recipe {
                allocation: prunelab::prune::allocate::Allocation::AttnMlpRatio { gamma: 5.0 },
                ..base.clone()
            },
            "γ = 5 at ratio 0.2 would remove the whole MLP (γ × ratio must be < 1)",
        ),
        (
            Recipe {
                layers: Some(LayerRange { start: 3, end: 2 }),
                ..base.clone()
            },
            "layer range 3..2 is empty",
        ),
        (
            Recipe {
                calibration: CalibSource::Ids {
                    windows: vec![vec![1, 2, 3], vec![4, 5]],
                },
                ..base.clone()
            },
            "all of one length ≥ 2 (got 2 windows of lengths 2..=3)",
        ),
        (
            Recipe {
                calibration: CalibSource::Ids {
                    windows: vec![vec![1, 2], vec![4, 500]],
                },
                ..base.clone()
            },
            "token id 500 is outside the model's vocabulary of 128",
        ),
    ];
    for (recipe, msg) in cases {
        let err = recipe.check(&cfg).unwrap_err().to_string();
        assert!(err.contains(msg), "{err} (expected {msg})");
    }
    let mut mqa = cfg.clone();
    for l in &mut mqa.layers {
        l.num_kv_heads = 1;
    }
    assert!(base
        .check(&mqa)
        .unwrap_err()
        .to_string()
        .contains("there is no KV group to remove"));
    assert!(Recipe::from_json(br#"{"ratio": 0.2, "colour": "red"}"#)
        .unwrap_err()
        .to_string()
        .contains("unknown field `colour`"));
    // Nested objects are as strict: a misspelt field is named, not ignored.
    let typo = br#"{"ratio": 0.2, "calibration": {"kind": "sampled", "samples": 8, "lenght": 64}}"#;
    assert!(Recipe::from_json(typo)
        .unwrap_err()
        .to_string()
        .contains("unknown field `lenght`"));
    let plan = serde_json::to_value(Plan::new(&cfg, vec![])).unwrap();
    let mut typo = plan.clone();
    typo["layers"] = serde_json::json!([{"layer": 1, "kv_group": [0], "mlp_channels": []}]);
    let err = Plan::from_json(typo.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `kv_group`"), "{err}");
    // Sampling more windows than the text has only repeats them.
    let ids: Vec<u32> = (0..200).collect();
    let err = prunelab::prune::calib::sample_windows(&ids, 100, 128, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("200 tokens has 73 distinct windows of 128, fewer than the 100 samples asked"),
        "{err}"
    );
}
