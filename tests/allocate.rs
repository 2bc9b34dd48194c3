//! Allocation (methods.md §3) on a SmolLM2-shaped config: `attn-mlp-ratio` keeps MLP widths a multiple of 8 with
//! MLP fraction = γ × attention fraction and hits the parameter target; `global` cuts z-normalised scores at a
//! running parameter count, stops as soon as the target is reached, and keeps a KV group and a channel per
//! layer. `search` (on `tiny-gqa`) meets the target, starts from uniform's loss, measured here, never ends
//! above it, reports the loss its plan gives, repeats itself for a seed; the CLI's report holds the losses of
//! the models it writes; a recipe names it with its settings; the CLI refuses what it cannot do.

mod common;

use common::*;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::model::params::count_params;
use prunelab::model::ModelConfig;
use prunelab::progress::{Progress, Silent};
use prunelab::prune::allocate::{
    counted_plan, global_plan, ratio_for_target, shapes_at, Allocation,
};
use prunelab::prune::importance::{score_layer, GradStats, Importance, LayerScores};
use prunelab::prune::plan::{apply, Plan};
use prunelab::prune::search::{search_plan, SearchSettings};
use prunelab::prune::structure::{Aggregation, StructureKind};
use prunelab::readback::scalar;
use rand::{Rng, SeedableRng};

type Cpu = prunelab::backend::Cpu;

const KINDS: [StructureKind; 2] = [StructureKind::KvGroups, StructureKind::Mlp];

/// SmolLM2-135M's shapes.
fn smollm2_shape() -> ModelConfig {
    ModelConfig::from_json(
        br#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": true, "hidden_act": "silu"}"#,
    )
    .unwrap()
}

#[test]
fn attn_mlp_ratio_keeps_multiples_of_8_and_meets_the_target() {
    let cfg = smollm2_shape();
    let layers = 4..28;
    let total = count_params(&cfg).total as f64;
    for gamma in [0.5, 1.0, 2.0] {
        let alloc = Allocation::AttnMlpRatio { gamma };
        let r = ratio_for_target(&cfg, &layers, 0.2, &KINDS, alloc).unwrap();
        let out = shapes_at(&cfg, &layers, r, &KINDS, alloc);
        let removed = 1.0 - count_params(&out).total as f64 / total;
        assert!(removed >= 0.2, "γ = {gamma}: removed {removed}");
        // The smallest such fraction: a step back misses the target.
        let under = shapes_at(&cfg, &layers, r - 2e-4, &KINDS, alloc);
        assert!(1.0 - (count_params(&under).total as f64) / total < 0.2);
        for l in 0..30 {
            let (before, after) = (&cfg.layers[l], &out.layers[l]);
            if !layers.contains(&l) {
                assert_eq!(before, after, "layer {l} is outside the range");
                continue;
            }
            assert_eq!(after.intermediate_size % 8, 0, "γ = {gamma}, layer {l}");
            let mlp_frac = 1.0 - after.intermediate_size as f64 / 1536.0;
            // Kept width = ⌈1536·(1 − γr)/8⌉·8: within 8 channels of the exact fraction.
            assert!(
                (mlp_frac - (gamma * r).min(1.0)).abs() <= 8.0 / 1536.0,
                "γ = {gamma}: MLP fraction {mlp_frac} vs γ·r = {}",
                gamma * r
            );
            // KV groups as uniform: ⌊(192 − ⌊192·(1 − r)⌋) / 64⌋ of the 3 groups (64 channels each).
            let kv_removed = 3 - after.num_kv_heads;
            assert_eq!(
                kv_removed,
                ((192 - (192.0 * (1.0 - r)).floor() as usize) / 64).min(2)
            );
            assert_eq!(after.num_heads, 3 * (3 - kv_removed));
        }
    }
}

fn random_scores(cfg: &ModelConfig, layers: std::ops::Range<usize>, seed: u64) -> Vec<LayerScores> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    layers
        .map(|l| {
            // Layer-dependent scale and offset: only z-normalisation makes them comparable.
            let (scale, offset) = (10f32.powi(l as i32 % 5), l as f32);
            LayerScores {
                layer: l,
                kv_groups: (0..cfg.layers[l].num_kv_heads)
                    .map(|_| offset + scale * rng.random::<f32>())
                    .collect(),
                query_heads: vec![],
                mlp_channels: (0..cfg.layers[l].intermediate_size)
                    .map(|_| offset + scale * rng.random::<f32>())
                    .collect(),
                whole: None,
            }
        })
        .collect()
}

#[test]
fn global_cuts_z_scores_at_the_parameter_target() {
    let cfg = smollm2_shape();
    let scores = random_scores(&cfg, 2..30, 11);
    let total = count_params(&cfg).total;
    let target = 1.0 - 105_747_264.0 / total as f64;
    let plan = global_plan(&cfg, &scores, target, &KINDS).unwrap();
    let out = plan.pruned_config(&cfg);
    let after = count_params(&out).total;
    assert!(after <= 105_747_264, "{after} parameters left");
    // Stops at the first structure that reaches the target: less than one KV group's parameters beyond it.
    // One KV group: q and o of its 3 query heads and its k and v, 64 wide, hidden 576.
    let kv_cost = (3 + 3 + 2) * 64 * 576;
    assert!(
        105_747_264 - after < kv_cost,
        "overshoot {}",
        105_747_264 - after
    );
    // Every removed structure has a z-score no higher than every kept one of the same layers (one threshold).
    let z = |v: &[f32], i: usize| {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sd = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
        (v[i] as f64 - m) / sd
    };
    let (mut max_removed, mut min_kept) = (f64::NEG_INFINITY, f64::INFINITY);
    for (s, lp) in scores.iter().zip(&plan.layers) {
        assert_eq!(s.layer, lp.layer);
        assert!(lp.kv_groups.len() < 3 && lp.mlp_channels.len() < 1536);
        for (i, _) in s.mlp_channels.iter().enumerate() {
            let zi = z(&s.mlp_channels, i);
            match lp.mlp_channels.binary_search(&i) {
                Ok(_) => max_removed = max_removed.max(zi),
                Err(_) => min_kept = min_kept.min(zi),
            }
        }
    }
    assert!(max_removed <= min_kept, "{max_removed} > {min_kept}");
    // Layers differ: a global cut is not a uniform one.
    let widths: std::collections::BTreeSet<usize> = out.layers[2..30]
        .iter()
        .map(|s| s.intermediate_size)
        .collect();
    assert!(widths.len() > 5, "per-layer widths {widths:?}");
    // An unreachable target is refused with the reachable fraction.
    let err = global_plan(&cfg, &scores, 0.95, &KINDS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of reach"), "{err}");
}

/// `search` on `tiny-gqa` (l2 scores of layers 0..4, 20% of the parameters, the golden calibration windows): the
/// winner meets the target; the first generation's best is no worse than the uniform start, whose loss is that
/// of uniform's plan measured here; the best loss never rises over the generations and is the loss of the
/// plan returned, measured here; the same seed gives the same plan, also with the losses run one window at a
/// time.
#[test]
fn search_meets_the_target_and_ends_no_worse_than_uniform() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let cfg = model.config.clone();
    let calib = id_windows(&golden_json("tiny-gqa")["calibration_input_ids"]);
    let scores: Vec<LayerScores> = (0..4)
        .map(|l| {
            pollster::block_on(score_layer(
                l,
                &model.layers[l],
                &cfg.layers[l],
                &GradStats::default(),
                Importance::L2,
                Aggregation::Correct,
                0,
            ))
            .unwrap()
        })
        .collect();
    let settings = SearchSettings {
        population: 8,
        generations: 4,
        fitness_windows: 3,
    };
    let fraction = 0.2;
    // Candidates' losses on the 3 fitness windows `per_batch` at a time.
    let search_in = |seed, per_batch, progress: &dyn Progress| {
        pollster::block_on(search_plan(
            &model, &scores, fraction, &KINDS, settings, seed, &calib, per_batch, progress,
        ))
        .unwrap()
    };
    let search = |seed, progress: &dyn Progress| search_in(seed, 3, progress);
    let windows: Vec<&[u32]> = calib[..3].iter().map(|w| w.as_slice()).collect();
    let loss = |plan: &Plan| {
        let pruned = apply(model.clone(), plan).unwrap();
        pollster::block_on(scalar(pruned.loss(batch_tensor::<Cpu>(&windows, &device)))).unwrap()
    };
    let found = search(7, &Silent);
    let total = count_params(&cfg).total;
    let left = count_params(&found.plan.pruned_config(&cfg)).total;
    let need = (fraction * total as f64).ceil() as usize;
    assert!(total - left >= need, "removed {} of {total}", total - left);
    let r = ratio_for_target(&cfg, &(0..4), fraction, &KINDS, Allocation::Uniform).unwrap();
    let uniform = counted_plan(&cfg, &scores, r, &KINDS, Allocation::Uniform);
    assert_eq!(found.record.uniform_loss, loss(&uniform));
    assert_eq!(found.record.best_loss.len(), 5);
    assert!(found.record.best_loss[0] <= found.record.uniform_loss);
    assert!(
        found.record.best_loss.windows(2).all(|w| w[1] <= w[0]),
        "{:?}",
        found.record.best_loss
    );
    assert_eq!(*found.record.best_loss.last().unwrap(), loss(&found.plan));
    eprintln!(
        "search: uniform {} → best {:?}",
        found.record.uniform_loss, found.record.best_loss
    );
    // Again, telling its progress: the best loss so far after each generation, as `best_loss` records it.
    let progress = Recorder::default();
    assert_eq!(search(7, &progress).plan, found.plan);
    let said: Vec<(usize, usize, String)> = (0..=5)
        .map(|g| match g {
            0 => (0, 5, String::new()),
            g => (
                g,
                5,
                format!("best loss {:.4}", found.record.best_loss[g - 1]),
            ),
        })
        .collect();
    assert_eq!(progress.of("search"), said);
    // Each distinct candidate is measured once, after a checkpoint: as many checkpoints as candidates counted,
    // between the first population and that plus each bred generation's newcomers (at most half of 8).
    let turns = Turns::default();
    assert_eq!(search(7, &turns).plan, found.plan);
    assert_eq!(turns.0.get(), found.record.candidates);
    assert!(
        (8..=8 + 4 * 4).contains(&found.record.candidates),
        "{} candidates",
        found.record.candidates
    );
    // One window a forward: the losses of the same candidates to rounding, so the same search.
    let one_by_one = search_in(7, 1, &Silent);
    assert_eq!(one_by_one.plan, found.plan);
    for (a, b) in one_by_one
        .record
        .best_loss
        .iter()
        .zip(&found.record.best_loss)
    {
        assert!(
            (a - b).abs() <= 1e-6 * b,
            "one window a forward: {a} vs {b}"
        );
    }
    // Fitness windows holding an id the embedding lacks, and a population beyond any use, are refused by name.
    let refused = |calib: &[Vec<u32>], settings: SearchSettings| {
        pollster::block_on(search_plan(
            &model, &scores, fraction, &KINDS, settings, 7, calib, 3, &Silent,
        ))
        .expect_err("refused")
        .to_string()
    };
    let mut outside = calib.clone();
    outside[1][2] = cfg.vocab_size as u32;
    let err = refused(&outside, settings);
    assert!(
        err.contains(&format!("token id {} is outside", cfg.vocab_size)),
        "{err}"
    );
    let crowd = SearchSettings {
        population: 1 << 40,
        ..settings
    };
    assert_eq!(
        refused(&calib, crowd),
        "invalid argument: search breeds at most 1024 candidates per generation (got a population of \
         1099511627776)"
    );
}

/// Counts the checkpoints a run passes.
#[derive(Default)]
struct Turns(std::cell::Cell<usize>);

impl Progress for Turns {
    fn report(&self, _: prunelab::progress::ProgressEvent<'_>) {}
    fn cancelled(&self) -> bool {
        self.0.set(self.0.get() + 1);
        false
    }
}

/// `prune --allocation search` from the CLI on `tiny-gqa` (l2, no repair, the golden calibration windows): the
/// report's `search` holds the losses of the models it leaves. The written model's NLL on the 3 fitness windows
/// (`eval --ids`) is the last best loss, and the model `--allocation uniform` writes at the same target has the
/// uniform loss; the summary names the search.
#[test]
fn the_cli_reports_the_search_with_the_losses_of_the_models_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-gqa");
    let ids = calib_ids_file(dir.path(), "tiny-gqa");
    let fitness = dir.path().join("fitness.json");
    let windows = &golden_json("tiny-gqa")["calibration_input_ids"];
    let first3 = serde_json::Value::Array(windows.as_array().unwrap()[..3].to_vec());
    std::fs::write(&fitness, first3.to_string()).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let prune = |out: &str, allocation: &[&str], json: bool| {
        let fixed = [
            "prune",
            &path(&model),
            "--out",
            &path(&dir.path().join(out)),
            "--calib-ids",
            &path(&ids),
            "--importance",
            "l2",
            "--compensation",
            "none",
            "--layers",
            "0..4",
            "--target-params",
            "0.2",
        ];
        let json: &[&str] = if json { &["--json"] } else { &[] };
        run_cli(&[&fixed[..], allocation, json].concat())
    };
    let searched = [
        "--allocation",
        "search",
        "--population",
        "8",
        "--generations",
        "4",
        "--fitness-windows",
        "3",
    ];
    let report: serde_json::Value =
        serde_json::from_str(&prune("searched", &searched, true)).unwrap();
    prune("uniform", &["--allocation", "uniform"], true);
    let nll = |out: &str| {
        let args = [
            "eval",
            &path(&dir.path().join(out)),
            "--ids",
            &path(&fitness),
            "--seq-len",
            "64",
            "--json",
        ];
        run_cli_json(&args.map(String::from))["mean_nll"]
            .as_f64()
            .unwrap()
    };
    let record = &report["search"];
    let best: Vec<f64> = record["best_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let uniform = record["uniform_loss"].as_f64().unwrap();
    assert_eq!(best.len(), 5, "{record}");
    assert!(
        best.windows(2).all(|w| w[1] <= w[0]) && best[0] <= uniform,
        "{record}"
    );
    let near =
        |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-5 * b, "{what}: {a} vs {b}");
    near(
        *best.last().unwrap(),
        nll("searched"),
        "the searched model's NLL",
    );
    near(uniform, nll("uniform"), "the uniform model's NLL");
    let total = |k: &str| report[k]["total"].as_f64().unwrap();
    let removed = total("params_before") - total("params_after");
    assert!(
        removed >= (0.2 * total("params_before")).ceil(),
        "removed {removed}"
    );
    let candidates = record["candidates"].as_u64().unwrap();
    let summary = prune("again", &searched, false);
    let want = format!(
        "search       {candidates} candidates: loss {:.4} (uniform: {uniform:.4})",
        best.last().unwrap()
    );
    assert!(
        summary.contains(&want) && summary.contains("searched allocation"),
        "{summary}"
    );
}

/// What the search allocation cannot do is refused by name, writing nothing.
#[test]
fn search_is_refused_where_it_cannot_run() {
    let demo = demo_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let calib = demo.join("../../web/data/calib-python-tutorial.txt");
    let refused_with = |calibrated: bool, extra: &[&str], want: &str| {
        let calib: &[&str] = match calibrated {
            true => &["--calib", calib.to_str().unwrap()],
            false => &[],
        };
        let fixed = ["--importance", "l2", "--compensation", "none"];
        refused_prune(&demo, &out, &[&fixed[..], calib, extra].concat(), want);
    };
    let refused = |extra: &[&str], want: &str| refused_with(true, extra, want);
    refused_with(
        false,
        &["--allocation", "search", "--target-params", "0.2"],
        "the search allocation measures candidates on calibration text: pass --calib FILE or --calib-ids FILE.json",
    );
    refused(
        &[
            "--allocation",
            "search",
            "--target-params",
            "0.2",
            "--calib-samples",
            "2",
        ],
        "search measures candidates on 4 calibration windows, but only 2 were given \
         (lower --fitness-windows or raise --calib-samples)",
    );
    refused(
        &["--allocation", "search", "--ratio", "0.2"],
        "search allocation needs a parameter target (--target-params), not a ratio",
    );
    refused(
        &["--allocation", "search", "--target-params", "0.2", "--population", "1"],
        "search needs a population of at least 2, at least 1 generation and 1 fitness window (got 1, 6 and 4)",
    );
    refused(
        &["--target-params", "0.2", "--generations", "3"],
        "--population, --generations and --fitness-windows apply to --allocation search",
    );
    refused(
        &[
            "--allocation",
            "search",
            "--target-params",
            "0.2",
            "--stream",
        ],
        "the search allocation measures every candidate on the whole model (drop --stream)",
    );
    refused(
        &[
            "--allocation",
            "search",
            "--target-params",
            "0.2",
            "--structures",
            "layers",
        ],
        "whole layers take uniform or global",
    );
}

/// A recipe names the search by `{"kind": "search"}`, its settings beside the kind, each with its default;
/// a misspelt setting is refused.
#[test]
fn search_settings_read_from_a_recipe() {
    let read = |s: &str| serde_json::from_str::<Allocation>(s);
    assert_eq!(
        read(r#"{"kind": "search"}"#).unwrap(),
        Allocation::Search(SearchSettings::default())
    );
    let some = Allocation::Search(SearchSettings {
        population: 4,
        generations: 2,
        fitness_windows: 1,
    });
    let json = serde_json::to_string(&some).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"search","population":4,"generations":2,"fitness_windows":1}"#
    );
    assert_eq!(read(&json).unwrap(), some);
    assert_eq!(
        read(r#"{"kind": "search", "generations": 9}"#).unwrap(),
        Allocation::Search(SearchSettings {
            generations: 9,
            ..SearchSettings::default()
        })
    );
    let err = read(r#"{"kind": "search", "populaton": 4}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `populaton`"),
        "{err}"
    );
}
