//! Calibration windows run through each layer in batches (`--calib-batch`, by default as many as keep one batch's
//! MLP activations under 1 GiB): the batch size's closed form at LLaMA-7B's shapes, the footprint it implies, and
//! every layer-wise pass (activation scores before and during the sequential pass, repairs, block influence, the
//! depth repair, the skipped-layer perplexity, streamed runs) giving in batches of 3 of tiny-gqa's 10 golden
//! windows what it gives with all 10 at once; and gradient scores, whose backwards run in batches too (every
//! layer's MLP activations under 4 GiB by default), summing the golden gradients.

mod common;

use burn::backend::Autodiff;
use common::*;
use pollster::block_on;
use prunelab::backend::Precision::{Bf16, F32};
use prunelab::eval::perplexity::batch_tensor;
use prunelab::io::SafetensorsWeights;
use prunelab::model::footprint::Footprint;
use prunelab::model::shapes::known_shape;
use prunelab::model::tensors::tensor_specs;
use prunelab::model::{Llama, ModelConfig, WeightSource};
use prunelab::progress::Silent;
use prunelab::prune::activations::{windows_per_chunk, Activations, CHUNK_BYTES};
use prunelab::prune::adapruner::AdaprunerSettings;
use prunelab::prune::allocate::Allocation;
use prunelab::prune::calib::{calibration_footprint, CalibSource};
use prunelab::prune::compensate::Compensation;
use prunelab::prune::depth::remove_layers;
use prunelab::prune::fitness::{windows_per_fitness, Fitness};
use prunelab::prune::gradients::{
    backward_bytes_per_window, backward_peak_bytes, gradient_stats, windows_per_backward,
    BACKWARD_BYTES,
};
use prunelab::prune::importance::{LayerScores, Objective};
use prunelab::prune::pipeline::{prune, Pruned};
use prunelab::prune::plan::{LayerPlan, Plan};
use prunelab::prune::recipe::{DepthFirst, LayerRange, Recipe};
use prunelab::prune::streaming::Streamed;
use prunelab::prune::structure::StructureKind;
use prunelab::prune::Importance;
use prunelab::readback::to_vec;

type Cpu = prunelab::backend::Cpu;
type Ad = Autodiff<Cpu>;

fn llama_7b() -> ModelConfig {
    ModelConfig::from_json(&serde_json::to_vec(&known_shape("llama-7b").unwrap()).unwrap()).unwrap()
}

fn calib() -> Vec<Vec<u32>> {
    id_windows(&golden_json("tiny-gqa")["calibration_input_ids"])
}

fn batched(recipe: &Recipe, batch: Option<usize>) -> Recipe {
    Recipe {
        calib_batch: batch,
        calibration: CalibSource::Ids { windows: calib() },
        ..recipe.clone()
    }
}

#[test]
fn the_default_batch_keeps_one_batch_of_mlp_activations_under_a_gib() {
    let cfg = llama_7b();
    let plain = Recipe::default();
    // ⌊CHUNK_BYTES / (4 · len · 11008)⌋ windows, CHUNK_BYTES = 2^30.
    assert_eq!(CHUNK_BYTES, 1 << 30);
    assert_eq!(windows_per_chunk(&cfg, 2048, &plain), 11);
    assert_eq!(windows_per_chunk(&cfg, 128, &plain), 190);
    // A window whose MLP activations alone are over the bound still runs, alone.
    assert_eq!(windows_per_chunk(&cfg, 1 << 20, &plain), 1);
    assert_eq!(windows_per_chunk(&cfg, usize::MAX, &plain), 1);
    let three = Recipe {
        calib_batch: Some(3),
        ..plain
    };
    assert_eq!(windows_per_chunk(&cfg, 2048, &three), 3);
    assert_eq!(windows_per_backward(&cfg, 2048, 128, &three, F32), 3);
    let none = Recipe {
        calib_batch: Some(0),
        ratio: Some(0.25),
        ..Recipe::default()
    };
    let err = none.check(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("the calibration batch (--calib-batch) must be at least 1 window"),
        "{err}"
    );

    // Embedded in batches: 10 windows of 64 tokens as 3 + 3 + 3 + 1, the same rows as all at once.
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let windows = calib();
    let parts = Activations::embed(&model, &windows, 3, &device).unwrap();
    let sizes: Vec<[usize; 3]> = parts.chunks.iter().map(|c| c.dims()).collect();
    assert_eq!(sizes, [[3, 64, 96], [3, 64, 96], [3, 64, 96], [1, 64, 96]]);
    let whole = Activations::embed(&model, &windows, 10, &device).unwrap();
    assert_eq!(whole.chunks.len(), 1);
    let joined = block_on(to_vec(burn::tensor::Tensor::cat(parts.chunks, 0))).unwrap();
    let at_once = block_on(to_vec(whole.chunks[0].clone())).unwrap();
    assert_eq!(joined, at_once);
}

/// A backward keeps every layer's activations until it runs. At LLaMA-7B's shapes a window of 128 tokens adds
/// `4 · 128 · (32 · (10 · 4096 + 5 · 11008 + 3 · 32 · 128) + 3 · 32000)` bytes (1.82 GB), so 2 fit the 4 GiB of a
/// batch; batches hold the 32 layers' gradients once more (25.9 GB in f32), which pays from 17 windows on (the
/// GPU bench's 10 × 128 stays one backward). At 2048 tokens a window is 77.5 GB and runs alone from 2 windows on.
#[test]
fn a_backward_runs_all_windows_unless_batches_hold_less() {
    let cfg = llama_7b();
    let plain = Recipe::default();
    assert_eq!(BACKWARD_BYTES, 4 << 30);
    assert_eq!(backward_bytes_per_window(&cfg, 128, F32), 1_823_342_592);
    assert_eq!(backward_bytes_per_window(&cfg, 2048, F32), 77_491_863_552);
    assert_eq!(windows_per_backward(&cfg, 128, 10, &plain, F32), 10);
    assert_eq!(windows_per_backward(&cfg, 128, 16, &plain, F32), 16);
    assert_eq!(windows_per_backward(&cfg, 128, 17, &plain, F32), 2);
    assert_eq!(windows_per_backward(&cfg, 128, 128, &plain, F32), 2);
    assert_eq!(windows_per_backward(&cfg, 2048, 1, &plain, F32), 1);
    assert_eq!(windows_per_backward(&cfg, 2048, 2, &plain, F32), 1);
    assert_eq!(windows_per_backward(&cfg, usize::MAX, 2, &plain, F32), 1);
    let three = Recipe {
        calib_batch: Some(3),
        ..plain.clone()
    };
    assert_eq!(windows_per_backward(&cfg, 128, 10, &three, F32), 3);
    // In bf16 a window of 128 tokens counts `128 · (32 · (3 · (10 · 4096 + 5 · 11008) + 10 · 32 · 128) + 12 ·
    // 32000)` bytes (1.40 GB): 3 fit the 4 GiB, and the second set of gradients (12.95 GB) pays from 13 windows.
    assert_eq!(backward_bytes_per_window(&cfg, 128, Bf16), 1_396_572_160);
    assert_eq!(windows_per_backward(&cfg, 128, 12, &plain, Bf16), 12);
    assert_eq!(windows_per_backward(&cfg, 128, 13, &plain, Bf16), 3);
}

/// A run's backward batch follows the float type its model is held in: a model whose weights are bf16 counts
/// its windows as bf16 (tiny-gqa's weights cast, on the CPU), and the count at LLaMA-7B's shapes then differs.
#[test]
fn the_backward_batch_follows_the_models_float_type() {
    use burn::module::Param;
    use burn::tensor::DType;
    let mut model = load_fixture::<Cpu>("tiny-gqa", &Default::default());
    assert_eq!(model.precision(), F32);
    model.embed_tokens = Param::from_tensor(model.embed_tokens.val().cast(DType::BF16));
    assert_eq!(model.precision(), Bf16);
    let (cfg, plain) = (llama_7b(), Recipe::default());
    assert_eq!(windows_per_backward(&cfg, 128, 13, &plain, F32), 13);
    assert_eq!(
        windows_per_backward(&cfg, 128, 13, &plain, model.precision()),
        3
    );
}

/// What LLaMA-7B's backwards add beside its weights and gradients at their peak: one backward's windows
/// (1,823,342,592 bytes each in f32 at 128 tokens), its running sum when it takes several backwards (the Fisher
/// diagonal always) and the sums of the statistics before it, each a set of the layers' gradients
/// (`4 · 32 · 202,383,360` bytes in f32). The statistics run one after another, so the peak is the largest
/// phase's. No backward, nothing.
#[test]
fn a_backwards_peak_counts_its_windows_and_its_running_sums() {
    let cfg = llama_7b();
    let set = 4 * 32 * 202_383_360u128;
    let window = 1_823_342_592u128;
    let with = |importance| Recipe {
        importance,
        ..Recipe::default()
    };
    let peak = |recipe: &Recipe, n| backward_peak_bytes(&cfg, 128, n, recipe, F32);
    // The GPU bench's taylor-first: 10 windows, one backward, no sums.
    assert_eq!(peak(&with(Importance::TaylorFirst), 10), 10 * window);
    // 17 and 20 windows run in batches of 2, into one set of sums.
    assert_eq!(peak(&with(Importance::TaylorFirst), 17), 2 * window + set);
    assert_eq!(peak(&with(Importance::TaylorFirst), 20), 2 * window + set);
    // The Fisher diagonal: one window a backward, its squares a new set however many windows; after the loss's
    // gradient (taylor-mix), that gradient's set is held too, more than the gradient's 10 windows.
    assert_eq!(peak(&with(Importance::TaylorSecond), 10), window + set);
    assert_eq!(peak(&with(Importance::TaylorSecond), 1), window + set);
    assert_eq!(peak(&with(Importance::TaylorMix), 10), window + 2 * set);
    assert!(window + 2 * set > 10 * window);
    // AdaPruner draws from the pool its 4 held-out windows leave: of 20, at most 16 in one backward (less than
    // the batches of 2 and their sums that 20 would take).
    assert_eq!(peak(&with(Importance::Adapruner), 20), 16 * window);
    assert!(16 * window < 2 * window + set);
    // From 17 windows in the pool its trials take batches of 2 and their sums.
    assert_eq!(peak(&with(Importance::Adapruner), 30), 2 * window + set);
    // With NTK's output functional in its mix, the output's gradient runs after the loss's, which it holds.
    let two = Recipe {
        adapruner: Some(AdaprunerSettings {
            metrics: vec![
                Importance::TaylorFirst,
                Importance::Ntk,
                Importance::TaylorVector,
            ],
            ..Default::default()
        }),
        ..with(Importance::Adapruner)
    };
    assert_eq!(peak(&two, 10), 6 * window + set);
    // A depth step scored by taylor-first backwards before a training-free width step.
    let depth = Recipe {
        depth: Some(DepthFirst {
            ratio: 0.25,
            importance: Importance::TaylorFirst,
        }),
        ..with(Importance::Numerical)
    };
    assert_eq!(peak(&depth, 10), 10 * window);
    for none in [
        Importance::Numerical,
        Importance::L2,
        Importance::BlockInfluence,
    ] {
        assert_eq!(peak(&with(none), 10), 0, "{none:?}");
    }
    // In bf16, 3 windows a backward from 13 on, into a set of bf16 sums.
    let bf16 = backward_peak_bytes(&cfg, 128, 13, &with(Importance::TaylorFirst), Bf16);
    assert_eq!(bf16, 3 * 1_396_572_160 + set / 2);
}

/// LLaMA-7B calibrated on 128 windows of 2048 tokens: the activation scores and repairs run 11 windows at a time,
/// so the largest tensor is one batch's MLP activations (990 MB), not every window's (10.75 GiB); gradient scores
/// run one window a backward (a repair after them its chunk), the Fisher diagonal one window, and the search's
/// and AdaPruner's losses their held-out windows, at most 4 at a time (logits under 1 GiB) or the recipe's batch.
#[test]
fn the_calibration_footprint_counts_one_batch_through_the_layers() {
    let cfg = llama_7b();
    let windows = vec![vec![1u32; 2048]; 128];
    let shape = |f: &Footprint, name: &str| {
        f.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
    };
    let wanda = Recipe {
        importance: Importance::WandaSp,
        ..Recipe::default()
    };
    let f = calibration_footprint(&cfg, &windows, &wanda, F32);
    assert_eq!((f.batch, f.seq), (128, 2048));
    assert_eq!(shape(&f, "attention scores"), Some(vec![1, 8, 2048, 2048]));
    assert_eq!(shape(&f, "logits"), None);
    let largest = f.largest();
    assert_eq!(largest.name, "MLP activations");
    assert_eq!(largest.shape, [11, 2048, 11008]);
    assert_eq!(largest.bytes, 4 * 11 * 2048 * 11008);

    let small = Recipe {
        calib_batch: Some(2),
        ..wanda.clone()
    };
    let f = calibration_footprint(&cfg, &windows, &small, F32);
    assert_eq!(shape(&f, "MLP activations"), Some(vec![2, 2048, 11008]));
    // The skipped-layer perplexity takes its loss on at most 8 windows at a time; its repair runs the batch.
    let by_perplexity = |batch| Recipe {
        structures: vec![StructureKind::Layers],
        importance: Importance::Perplexity,
        calib_batch: Some(batch),
        ..wanda.clone()
    };
    let f = calibration_footprint(&cfg, &windows, &by_perplexity(2), F32);
    assert_eq!(shape(&f, "logits"), Some(vec![2, 2048, 32000]));
    let f = calibration_footprint(&cfg, &windows, &by_perplexity(20), F32);
    assert_eq!(shape(&f, "logits"), Some(vec![8, 2048, 32000]));
    assert_eq!(shape(&f, "MLP activations"), Some(vec![20, 2048, 11008]));

    // The windows `recipe` runs through the layers and the head at once: MLP activations `[a, 2048, 11008]`,
    // logits `[b, 2048, 32000]` (0 for none).
    let counted = |recipe: &Recipe| {
        let f = calibration_footprint(&cfg, &windows, recipe, F32);
        let batch = |name, width| {
            shape(&f, name).map_or(0, |s| {
                assert_eq!(s[1..], [2048, width], "{name}");
                s[0]
            })
        };
        (batch("MLP activations", 11008), batch("logits", 32000))
    };
    let taylor = Recipe {
        importance: Importance::TaylorFirst,
        calib_batch: Some(2),
        ..Recipe::default()
    };
    assert_eq!(counted(&taylor), (2, 2));
    // Without a repair only the backward runs: one window; a repair after it runs its chunk of 11.
    let taylor = Recipe {
        calib_batch: None,
        compensation: Compensation::None,
        ..taylor
    };
    assert_eq!(counted(&taylor), (1, 1));
    let repaired = Recipe {
        compensation: Compensation::Ls,
        ..taylor.clone()
    };
    assert_eq!(counted(&repaired), (11, 1));
    let fisher = Recipe {
        importance: Importance::TaylorSecond,
        calib_batch: Some(20),
        ..taylor.clone()
    };
    assert_eq!(counted(&fisher), (1, 1));
    let searched = Recipe {
        allocation: Allocation::Search(Default::default()),
        ..taylor.clone()
    };
    assert_eq!(counted(&searched), (4, 4));
    let two_at_a_time = Recipe {
        calib_batch: Some(2),
        ..searched
    };
    assert_eq!(counted(&two_at_a_time), (2, 2));
    // Held-out windows run as many at a time as keep their logits under 1 GiB: 4 of 2048 tokens (1,000 MiB).
    assert_eq!(windows_per_fitness(&cfg, 2048, &taylor), 4);
    let adapruner = Recipe {
        importance: Importance::Adapruner,
        adapruner: Some(AdaprunerSettings {
            fitness_windows: 6,
            ..Default::default()
        }),
        ..taylor
    };
    assert_eq!(counted(&adapruner), (4, 4));
}

fn weights(model: &Llama<Cpu>) -> Vec<(String, Vec<f32>)> {
    model
        .named_weights()
        .into_iter()
        .map(|(n, w)| (n, block_on(to_vec(w.flatten())).unwrap()))
        .collect()
}

/// The logits of `model` on the calibration windows.
fn logits(model: &Llama<Cpu>) -> Vec<f32> {
    let windows = calib();
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<Cpu>(&refs, &Default::default());
    block_on(to_vec(model.forward(ids))).unwrap()
}

/// Weights equal up to the rounding the least-squares solve amplifies along the Gram matrix's weak directions
/// (the logits they give are compared more tightly); zero tensors (added biases) exactly.
fn assert_weights_close(what: &str, got: &[(String, Vec<f32>)], want: &[(String, Vec<f32>)]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for ((name, a), (other, b)) in got.iter().zip(want) {
        assert_eq!(name, other, "{what}");
        let diff = match b.iter().all(|&x| x == 0.0) {
            true => max_abs_diff(a, b) as f64,
            false => rel_l2(a, b),
        };
        assert!(diff < 1e-4, "{what}: {name} differs by {diff}");
    }
}

/// `streamed`, read in a writer's order (the output's tensors as its config lists them), has `model`'s config
/// and weights.
fn assert_streams_as(what: &str, streamed: &Streamed<Cpu>, model: &Llama<Cpu>) {
    assert_eq!(streamed.config(), &model.config, "{what}");
    let expected = weights(model);
    let got: Vec<(String, Vec<f32>)> = tensor_specs(streamed.config())
        .into_iter()
        .map(|spec| (spec.name.clone(), streamed.read_f32(&spec.name).unwrap()))
        .collect();
    let want: Vec<(String, Vec<f32>)> = got
        .iter()
        .map(|(name, _)| expected.iter().find(|(n, _)| n == name).unwrap().clone())
        .collect();
    assert_weights_close(what, &got, &want);
}

/// `check` of `tiny-gqa` streamed from its safetensors under `recipe` (a width `ratio` or a depth `plan`).
fn streamed(
    recipe: &Recipe,
    ratio: Option<f64>,
    plan: Option<&Plan>,
    check: impl FnOnce(Streamed<Cpu>),
) {
    let (cfg, bytes) = fixture_files("tiny-gqa");
    let weights_in =
        SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let windows = calib();
    let streamed = Streamed::<Cpu>::new(
        &weights_in,
        &cfg,
        recipe,
        ratio,
        plan,
        &windows,
        Default::default(),
        &Silent,
    )
    .unwrap();
    check(streamed);
}

fn pruned(recipe: &Recipe) -> Pruned<Ad> {
    let device = Default::default();
    let model = load_fixture::<Ad>("tiny-gqa", &device);
    block_on(prune(model, recipe, &calib(), &device, &Silent)).unwrap()
}

fn assert_scores_close(what: &str, a: &[LayerScores], b: &[LayerScores]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (a, b) in a.iter().zip(b) {
        let (x, y): (Vec<f32>, Vec<f32>) = (
            [&a.kv_groups[..], &a.query_heads, &a.mlp_channels].concat(),
            [&b.kv_groups[..], &b.query_heads, &b.mlp_channels].concat(),
        );
        assert_eq!(x.len(), y.len(), "{what}");
        let diff = if x.is_empty() { 0.0 } else { rel_l2(&x, &y) };
        assert!(diff < 1e-5, "{what}: layer {} scores {diff}", a.layer);
        let (p, q) = (a.whole.unwrap_or(0.0), b.whole.unwrap_or(0.0));
        assert!(
            (p - q).abs() <= 1e-6 * p.abs().max(1.0),
            "{what}: layer {} {p} vs {q}",
            a.layer
        );
    }
}

/// Pruned in batches of 3 windows and all at once: the same plan, scores, reconstruction errors and weights.
fn assert_batches_change_nothing(what: &str, recipe: &Recipe) {
    let (one, three) = (
        pruned(&batched(recipe, None)),
        pruned(&batched(recipe, Some(3))),
    );
    assert_eq!(one.plan, three.plan, "{what}");
    assert_scores_close(what, &one.scores, &three.scores);
    assert_eq!(one.reconstruction.len(), three.reconstruction.len());
    for (a, b) in one.reconstruction.iter().zip(&three.reconstruction) {
        assert_eq!((a.layer, a.module), (b.layer, b.module));
        assert!(
            (a.before - b.before).abs() < 1e-6 && (a.after - b.after).abs() < 1e-6,
            "{what}: {a:?} vs {b:?}"
        );
    }
    let diff = rel_l2(&logits(&three.model), &logits(&one.model));
    assert!(diff < 1e-5, "{what}: logits differ by {diff}");
    assert_weights_close(what, &weights(&three.model), &weights(&one.model));
}

#[test]
fn width_pruning_in_batches_equals_all_windows_at_once() {
    let width = |importance, compensation, after| Recipe {
        importance,
        compensation,
        mlp_stats_after_attention: after,
        ratio: Some(0.5),
        ..Recipe::default()
    };
    let cases = [
        (
            "numerical + ls",
            width(Importance::Numerical, Compensation::Ls, false),
        ),
        (
            "flap + ls-bias, MLP after attention",
            width(Importance::Flap, Compensation::LsBias, true),
        ),
        (
            "wanda-sp + bias",
            width(Importance::WandaSp, Compensation::Bias, false),
        ),
        (
            "magnitude + ls, MLP after attention",
            width(Importance::L2, Compensation::Ls, true),
        ),
        (
            "query heads, numerical + ls",
            Recipe {
                structures: vec![StructureKind::QueryHeads, StructureKind::Mlp],
                ..width(Importance::Numerical, Compensation::Ls, false)
            },
        ),
    ];
    for (what, recipe) in cases {
        assert_batches_change_nothing(what, &recipe);
    }
    // Scores of every layer before anything is removed (a global allocation).
    let global = Recipe {
        allocation: Allocation::Global,
        ratio: None,
        target_params: Some(0.2),
        ..width(Importance::Obs, Compensation::Ls, false)
    };
    assert_batches_change_nothing("obs, global", &global);
}

#[test]
fn depth_pruning_in_batches_equals_all_windows_at_once() {
    let depth = |importance, compensation| Recipe {
        structures: vec![StructureKind::Layers],
        importance,
        compensation,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 1, end: 4 }),
        ..Recipe::default()
    };
    let cases = [
        (
            "block influence + ls",
            depth(Importance::BlockInfluence, Compensation::Ls),
        ),
        (
            "block influence + ls-bias",
            depth(Importance::BlockInfluence, Compensation::LsBias),
        ),
        (
            "perplexity, no repair",
            depth(Importance::Perplexity, Compensation::None),
        ),
        (
            "perplexity + ls",
            depth(Importance::Perplexity, Compensation::Ls),
        ),
    ];
    for (what, recipe) in cases {
        assert_batches_change_nothing(what, &recipe);
    }
    // Two runs (layers 1 and 3): the second repair calibrates on the stream after the first.
    let recipe = depth(Importance::BlockInfluence, Compensation::Ls);
    let removed = |batch| {
        let device = Default::default();
        let model = load_fixture::<Cpu>("tiny-gqa", &device);
        let plan = Plan::depth(&model.config, vec![1, 3]);
        let r = batched(&recipe, batch);
        block_on(remove_layers(model, &r, plan, &calib(), &device, &Silent)).unwrap()
    };
    let (one, three) = (removed(None), removed(Some(3)));
    assert_eq!(one.reconstruction.len(), 2);
    for (a, b) in one.reconstruction.iter().zip(&three.reconstruction) {
        assert!((a.after - b.after).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    let diff = rel_l2(&logits(&three.model), &logits(&one.model));
    assert!(diff < 1e-5, "two runs: logits differ by {diff}");
    assert_weights_close("two runs", &weights(&three.model), &weights(&one.model));
}

#[test]
fn a_streamed_run_in_batches_writes_what_the_in_memory_run_does_at_once() {
    let recipe = Recipe {
        importance: Importance::Obs,
        compensation: Compensation::Ls,
        ratio: Some(0.5),
        ..Recipe::default()
    };
    let at_once = pruned(&batched(&recipe, None));
    let in_threes = batched(&recipe, Some(3));
    streamed(&in_threes, in_threes.ratio, None, |streamed| {
        assert_streams_as("streamed", &streamed, &at_once.model);
        let (plan, _, _) = streamed.take_results();
        assert_eq!(plan, at_once.plan);
    });
}

#[test]
fn a_streamed_depth_repair_in_batches_writes_what_the_in_memory_one_does_at_once() {
    let recipe = Recipe {
        structures: vec![StructureKind::Layers],
        importance: Importance::BlockInfluence,
        compensation: Compensation::Ls,
        ratio: Some(0.5),
        layers: Some(LayerRange { start: 1, end: 4 }),
        ..Recipe::default()
    };
    // Two runs: layers 1 and 3 go, absorbed by layers 0 and 2.
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let plan = Plan::depth(&model.config, vec![1, 3]);
    let at_once = batched(&recipe, None);
    let whole = block_on(remove_layers(
        model,
        &at_once,
        plan.clone(),
        &calib(),
        &device,
        &Silent,
    ))
    .unwrap();
    streamed(&batched(&recipe, Some(3)), None, Some(&plan), |streamed| {
        assert_streams_as("streamed depth", &streamed, &whole.model);
        let (got_plan, _, recon) = streamed.take_results();
        assert_eq!(got_plan, plan);
        assert_eq!(recon.len(), 2);
        for (a, b) in recon.iter().zip(&whole.reconstruction) {
            assert!((a.after - b.after).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    });
}

/// The loss gradient summed over batches of 3, 3, 3 and 1 windows (each batch's loss scaled by its share of the
/// windows) is the gradient of the 10 windows' loss: HF transformers' golden gradients within their tolerance
/// (1e-3 relative L2), and one backward's within 1e-5.
#[test]
fn gradients_summed_over_batches_are_the_golden_gradients() {
    let device = Default::default();
    let model = load_fixture::<Ad>("tiny-gqa", &device);
    let golden = golden_tensors("tiny-gqa");
    let windows = calib();
    let layers = 0..model.config.layers.len();
    let grads = |per_batch| {
        let stats = gradient_stats(
            &model,
            &windows,
            layers.clone(),
            Some(Objective::Loss),
            false,
            per_batch,
            &device,
            &Silent,
        )
        .unwrap();
        let mut grads: Vec<(String, Vec<f32>)> = stats
            .grad
            .into_iter()
            .map(|(name, g)| (name, block_on(to_vec(g.flatten::<1>(0, 1))).unwrap()))
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        grads
    };
    let (at_once, in_threes) = (grads(10), grads(3));
    // Seven matrices a layer.
    assert_eq!(in_threes.len(), 7 * layers.len());
    assert_eq!(at_once.len(), in_threes.len());
    let (mut to_golden, mut to_one) = (0f64, 0f64);
    for ((name, got), (other, one)) in in_threes.iter().zip(&at_once) {
        assert_eq!(name, other);
        let (_, want) = &golden[&format!("grad.{name}")];
        let err = rel_l2(got, want);
        assert!(err < 1e-3, "{name}: {err:e} from the golden gradient");
        to_golden = to_golden.max(err);
        let err = rel_l2(got, one);
        assert!(err < 1e-5, "{name}: {err:e} from one backward's");
        to_one = to_one.max(err);
    }
    eprintln!("in batches of 3: worst {to_golden:e} from the golden gradients, {to_one:e} from one backward's");
}

/// The fitness of the unpruned model on the 10 golden windows, one at a time, 3 at a time and all at once: HF
/// transformers' calibration loss (within 1e-5 relative), and for a plan that removes half of every layer's MLP
/// the same loss to rounding (1e-6) whatever the batch.
#[test]
fn held_out_losses_in_batches_are_the_mean_over_every_window() {
    let device = Default::default();
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let cfg = model.config.clone();
    let windows = calib();
    let want = golden_json("tiny-gqa")["calibration_loss"]
        .as_f64()
        .unwrap();
    let half_mlp = Plan::new(
        &cfg,
        (0..cfg.layers.len())
            .map(|l| LayerPlan {
                layer: l,
                kv_groups: vec![],
                query_heads: vec![],
                mlp_channels: (0..cfg.layers[l].intermediate_size / 2).collect(),
            })
            .collect(),
    );
    let loss = |per_batch, plan: &Plan| {
        block_on(Fitness::new(&model, &windows, per_batch).loss(plan)).unwrap()
    };
    let pruned_at_once = loss(10, &half_mlp);
    for per_batch in [1, 3, 10] {
        let dense = loss(per_batch, &Plan::new(&cfg, vec![]));
        assert!(
            (dense - want).abs() <= 1e-5 * want,
            "{per_batch} a forward: {dense} vs HF's {want}"
        );
        let pruned = loss(per_batch, &half_mlp);
        assert!(
            (pruned - pruned_at_once).abs() <= 1e-6 * pruned_at_once,
            "{per_batch} a forward: {pruned} vs {pruned_at_once}"
        );
        assert!(
            pruned > dense + 1e-3,
            "half the MLP gone: {pruned} vs {dense}"
        );
    }
}

/// Gradient scores (the loss's, the output functional's, with the Fisher diagonal, whole layers, AdaPruner's
/// trials) in backwards of 3 windows plan what one backward of all 10 plans.
#[test]
fn gradient_scores_in_batches_equal_one_backward() {
    let width = |importance| Recipe {
        importance,
        ratio: Some(0.5),
        ..Recipe::default()
    };
    assert_batches_change_nothing("taylor-first", &width(Importance::TaylorFirst));
    assert_batches_change_nothing("ntk", &width(Importance::Ntk));
    assert_batches_change_nothing("taylor-mix", &width(Importance::TaylorMix));
    let depth = Recipe {
        structures: vec![StructureKind::Layers],
        layers: Some(LayerRange { start: 1, end: 4 }),
        ..width(Importance::TaylorFirst)
    };
    assert_batches_change_nothing("taylor-first, whole layers", &depth);
    let adapruner = Recipe {
        adapruner: Some(AdaprunerSettings {
            trials: 3,
            ..Default::default()
        }),
        ..width(Importance::Adapruner)
    };
    assert_batches_change_nothing("adapruner", &adapruner);
}
