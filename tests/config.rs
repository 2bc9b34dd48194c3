//! Config parsing: both transformers key styles, rotary scalings (linear, dynamic, LLaMA-3, YaRN), qwen2 biases, per-layer extension keys,
//! and a named error for everything unsupported; the footprint of a forward the config implies.

mod common;

use common::*;
use prunelab::eval::PerplexityOptions;
use prunelab::model::config::{LayerShape, RopeConfig, RopeScaling, YarnScaling, PER_LAYER_MLP};
use prunelab::model::footprint::{DeviceLimit, Footprint};
use prunelab::model::rope::inv_freq;
use prunelab::model::ModelConfig;
use prunelab::prune::allocate::Allocation;
use prunelab::prune::calib::calibration_footprint;
use prunelab::prune::recipe::DepthFirst;
use prunelab::prune::{Importance, Recipe};
use serde_json::json;

fn parse(v: serde_json::Value) -> prunelab::Result<ModelConfig> {
    ModelConfig::from_json(v.to_string().as_bytes())
}

fn base() -> serde_json::Value {
    json!({"model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})
}

#[test]
fn transformers_4x_keys_parse() {
    let cfg = ModelConfig::from_json(&read(&fixture("tiny-mha").join("config.json"))).unwrap();
    assert_eq!(cfg.rope.theta, 10000.0);
    assert_eq!(cfg.rope.scaling, None);
    assert_eq!(
        (cfg.hidden_size, cfg.head_dim, cfg.vocab_size),
        (64, 16, 128)
    );
    assert!(!cfg.tie_word_embeddings);
    assert_eq!(cfg.rms_norm_eps, 1e-6);
    assert_eq!(
        cfg.layers,
        vec![
            LayerShape {
                num_heads: 4,
                num_kv_heads: 4,
                intermediate_size: 160
            };
            4
        ]
    );
}

#[test]
fn transformers_5x_rope_parameters_parse() {
    let cfg = ModelConfig::from_json(&read(&fixture("tiny-gqa").join("config.json"))).unwrap();
    assert_eq!(cfg.rope.theta, 100000.0);
    assert!(cfg.tie_word_embeddings);
    assert_eq!(cfg.rms_norm_eps, 1e-5);
    assert_eq!(
        cfg.layers[0],
        LayerShape {
            num_heads: 6,
            num_kv_heads: 2,
            intermediate_size: 192
        }
    );
    assert_eq!(cfg.layers[0].n_rep(), 3);
}

#[test]
fn llama3_scaling_follows_transformers() {
    let mut v = base();
    v["rope_theta"] = json!(500000.0);
    v["head_dim"] = json!(128);
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let cfg = parse(v.clone()).unwrap();
    let s = cfg.rope.llama3().unwrap();
    assert_eq!((s.factor, s.original_max_position_embeddings), (8.0, 8192));
    let f = inv_freq(&cfg.rope, 128, 0);
    let plain = |i: usize| 1.0 / 500000f64.powf(2.0 * i as f64 / 128.0);
    // High frequencies (wavelength < 8192/4) are kept, low ones (> 8192/1) divided by the factor,
    // the band between interpolated.
    assert_eq!(f[0], plain(0));
    assert!((f[63] - plain(63) / 8.0).abs() < 1e-18);
    let mid = (0..64).find(|&i| {
        let w = 2.0 * std::f64::consts::PI / plain(i);
        w > 2048.0 && w < 8192.0
    });
    let i = mid.expect("a frequency in the smoothing band");
    let w = 2.0 * std::f64::consts::PI / plain(i);
    let smooth = (8192.0 / w - 1.0) / 3.0;
    assert!((f[i] - ((1.0 - smooth) * plain(i) / 8.0 + smooth * plain(i))).abs() < 1e-15);
    // The 5.x spelling gives the same result.
    let mut v5 = base();
    v5["head_dim"] = json!(128);
    v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    assert_eq!(parse(v5).unwrap().rope, cfg.rope);
}

#[test]
fn linear_scaling_divides_every_frequency() {
    // lmsys/vicuna-7b-v1.5-16k's spelling (transformers 4.x, "type").
    let mut v = base();
    v["head_dim"] = json!(128);
    v["rope_scaling"] = json!({"type": "linear", "factor": 4.0});
    let cfg = parse(v).unwrap();
    assert_eq!(cfg.rope.scaling, Some(RopeScaling::Linear { factor: 4.0 }));
    assert_eq!(cfg.rope.llama3(), None);
    let plain = inv_freq(&RopeConfig::plain(cfg.rope.theta), 128, 0);
    let scaled = inv_freq(&cfg.rope, 128, 0);
    for (s, p) in scaled.iter().zip(&plain) {
        assert_eq!(*s, p / 4.0);
    }
    // The 5.x spelling says the same, and the config we write reads back as it.
    let mut v5 = base();
    v5["head_dim"] = json!(128);
    v5["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0});
    assert_eq!(parse(v5).unwrap().rope, cfg.rope);
    let written = cfg.to_hf_json(None);
    assert_eq!(written["rope_scaling"]["rope_type"], "linear");
    assert_eq!(written["rope_parameters"]["factor"], 4.0);
    let back = ModelConfig::from_json(&serde_json::to_vec(&written).unwrap()).unwrap();
    assert_eq!(back.rope, cfg.rope);
}

/// transformers 5.x `_compute_yarn_parameters` defaults: beta 32/1, bounds truncated, the original length from
/// a top-level key first, then the rotary object, then `max_position_embeddings`; a `null` factor is the ratio
/// of the lengths; the attention factor `0.1·ln(factor) + 1`, or the mscale ratio. (The frequencies and the
/// forward are checked against transformers itself in tests/golden.rs.)
#[test]
fn yarn_resolves_as_transformers_does_and_round_trips() {
    let mut v = base();
    v["max_position_embeddings"] = json!(32768);
    v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
    let y = parse(v.clone()).unwrap().rope.yarn().unwrap();
    assert_eq!(
        (
            y.original_max_position_embeddings,
            y.beta_fast,
            y.beta_slow,
            y.truncate
        ),
        (32768, 32.0, 1.0, true)
    );
    assert_eq!(y.attention_factor, 0.1 * 4f64.ln() + 1.0);
    v["rope_scaling"]["original_max_position_embeddings"] = json!(8192);
    v["rope_scaling"]["beta_fast"] = json!(0); // 0 means the default, as transformers' `or 32`
    assert_eq!(
        parse(v.clone()).unwrap().rope.yarn().unwrap(),
        YarnScaling {
            original_max_position_embeddings: 8192,
            ..y
        }
    );
    v["original_max_position_embeddings"] = json!(4096.0);
    v["rope_scaling"]["factor"] = json!(null);
    v["rope_scaling"]["mscale"] = json!(0.5);
    v["rope_scaling"]["mscale_all_dim"] = json!(1.0);
    let cfg = parse(v).unwrap();
    let y = cfg.rope.yarn().unwrap();
    assert_eq!((y.original_max_position_embeddings, y.factor), (4096, 8.0));
    let ln8 = 8f64.ln();
    assert!((y.attention_factor - (0.05 * ln8 + 1.0) / (0.1 * ln8 + 1.0)).abs() < 1e-15);
    // Written with the resolved values, it reads back the same.
    let written = cfg.to_hf_json(None);
    assert_eq!(written["rope_parameters"]["factor"], 8.0);
    assert_eq!(
        written["rope_scaling"]["original_max_position_embeddings"],
        4096
    );
    assert_eq!(
        ModelConfig::from_json(&serde_json::to_vec(&written).unwrap()).unwrap(),
        cfg
    );
}

/// Dynamic NTK: plain frequencies up to `max_position_embeddings`, then the base grows with the length.
#[test]
fn dynamic_ntk_grows_the_base_past_max_positions() {
    let mut v = base();
    v["head_dim"] = json!(128);
    v["max_position_embeddings"] = json!(4096);
    v["rope_scaling"] = json!({"type": "dynamic", "factor": 2.0});
    let cfg = parse(v).unwrap();
    assert_eq!(
        cfg.rope.scaling,
        Some(RopeScaling::Dynamic {
            factor: 2.0,
            max_position_embeddings: 4096
        })
    );
    let plain = inv_freq(&RopeConfig::plain(10000.0), 128, 0);
    assert_eq!(inv_freq(&cfg.rope, 128, 4096), plain);
    // 8192 positions: base 10000 · (2·2 − 1)^(128/126).
    let grown = inv_freq(
        &RopeConfig::plain(10000.0 * 3f64.powf(128.0 / 126.0)),
        128,
        0,
    );
    assert_eq!(inv_freq(&cfg.rope, 128, 8192), grown);
    let back = ModelConfig::from_json(&serde_json::to_vec(&cfg.to_hf_json(None)).unwrap()).unwrap();
    assert_eq!(back, cfg);
    // The length it grows from is the model's.
    let mut other = cfg.clone();
    other.max_position_embeddings = 2048;
    assert_eq!(
        other.validate().unwrap_err().to_string(),
        "config: field rope_scaling: dynamic grows from 4096 positions but max_position_embeddings is 2048"
    );
}

#[test]
fn qwen2_has_qkv_biases_and_mistral_without_window_is_llama() {
    let mut v = base();
    v["model_type"] = json!("qwen2");
    v["sliding_window"] = json!(4096);
    v["use_sliding_window"] = json!(false);
    let cfg = parse(v).unwrap();
    assert!(cfg.qkv_bias && !cfg.o_bias && !cfg.mlp_bias);
    let mut m = base();
    m["model_type"] = json!("mistral");
    m["sliding_window"] = serde_json::Value::Null;
    assert!(!parse(m).unwrap().qkv_bias);
}

#[test]
fn unsupported_configs_name_field_and_value() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "model_type",
            json!("gpt2"),
            "unsupported model_type = \"gpt2\"",
        ),
        ("hidden_act", json!("gelu"), "unsupported hidden_act = gelu"),
        (
            "sliding_window",
            json!(4096),
            "unsupported sliding_window = 4096",
        ),
        (
            "num_local_experts",
            json!(8),
            "unsupported num_local_experts = 8",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "longrope", "factor": 4.0}),
            "unsupported rope_scaling.rope_type = longrope",
        ),
    ];
    for (field, value, message) in cases {
        let mut v = base();
        if field == "sliding_window" {
            v["model_type"] = json!("mistral");
        }
        v[field] = value;
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains(message), "{field}: {err}");
    }
    let mut v = base();
    v.as_object_mut().unwrap().remove("hidden_size");
    assert_eq!(
        parse(v).unwrap_err().to_string(),
        "config: field hidden_size: missing"
    );
    let mut v = base();
    v["num_key_value_heads"] = json!(3);
    assert!(parse(v)
        .unwrap_err()
        .to_string()
        .contains("4 query heads cannot be shared evenly by 3 KV heads"));
}

/// Values that would build a model computing NaN, or allocate without bound, are refused by name before any
/// tensor exists.
#[test]
fn impossible_values_are_refused_before_anything_is_built() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "num_hidden_layers",
            json!(4_611_686_018_427_387_904u64),
            "field num_hidden_layers: is 4611686018427387904, beyond any model (at most 65536)",
        ),
        (
            "num_hidden_layers",
            json!(0),
            "field num_hidden_layers: is 0",
        ),
        (
            "rope_theta",
            json!(-1.0),
            "field rope_theta: -1 is not a finite number > 0",
        ),
        (
            "rms_norm_eps",
            json!(-1e-6),
            "field rms_norm_eps: -0.000001 is not a finite number ≥ 0",
        ),
        (
            "head_dim",
            json!(1u64 << 62),
            "parameters, beyond any model",
        ),
        ("head_dim", json!(7), "unsupported head_dim = 7"),
        (
            "intermediate_size",
            json!(0),
            "field layer 0 intermediate_size: is 0: an MLP needs at least one channel",
        ),
        (
            "head_dim",
            json!(1u64 << 20),
            "field head_dim: is 1048576, beyond any model (at most 65536)",
        ),
        (
            "vocab_size",
            json!(1u64 << 40),
            "beyond any model (at most 100000000000000)",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 0.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
            "field rope_scaling: llama3 needs factor > 0",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
            "0 < low_freq_factor < high_freq_factor",
        ),
        (
            "rope_scaling",
            json!({"type": "linear", "factor": 0.0}),
            "field rope_scaling: linear needs a finite factor > 0 (got 0)",
        ),
        (
            "rope_scaling",
            json!({"type": "linear"}),
            "field rope_scaling.factor: missing or not a number",
        ),
        (
            "rope_scaling",
            json!({"type": "dynamic", "factor": -2.0}),
            "field rope_scaling: dynamic needs a finite factor > 0",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "beta_fast": 1.0, "beta_slow": 32.0}),
            "yarn needs beta_fast ≥ beta_slow",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "attention_factor": -1.0}),
            "yarn needs a finite attention factor > 0",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0}),
            "yarn needs a finite factor > 0 and original_max_position_embeddings > 0",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "truncate": "yes"}),
            "field rope_scaling.truncate: \"yes\" is not true or false",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64.5}),
            "field rope_scaling.original_max_position_embeddings: 64.5 is not a whole number",
        ),
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": "4"}),
            "field rope_scaling.factor: \"4\" is not a number",
        ),
        (
            "rope_scaling",
            json!({"rope_type": 3, "factor": 4.0}),
            "field rope_scaling.rope_type: 3 is not a string",
        ),
        (
            "rope_scaling",
            json!({"rope_type": null, "type": "yarn", "factor": 4.0}),
            "field rope_scaling.rope_type: null is not a string",
        ),
        (
            "rope_parameters",
            json!({"rope_type": "default", "rope_theta": "1e4"}),
            "field rope_parameters.rope_theta: \"1e4\" is not a number",
        ),
        // Finite in f64, not in the f32 tables: every angle would be NaN.
        (
            "rope_scaling",
            json!({"type": "yarn", "factor": 4.0, "attention_factor": 1e39}),
            "field rope_theta/rope_scaling: give rotary frequencies up to 1e0 and an attention factor of 1e39, beyond f32",
        ),
        (
            "rope_scaling",
            json!({"type": "linear", "factor": 1e-300}),
            "field rope_theta/rope_scaling: give rotary frequencies up to 9.999999999999999e299 and an \
             attention factor of 1e0, beyond f32",
        ),
        (
            "rope_theta",
            json!(1e-300),
            "field rope_theta/rope_scaling: give rotary frequencies up to",
        ),
    ];
    for (field, value, message) in cases {
        let mut v = base();
        v[field] = value;
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains(message), "{field}: {err}");
    }
    // Both rotary keys: the 4.x one may not say something the 5.x one does not.
    let mut v = base();
    v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 10000.0});
    v["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0});
    assert!(parse(v.clone())
        .unwrap_err()
        .to_string()
        .contains("unsupported rope_scaling.rope_type = longrope"));
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    assert!(parse(v.clone())
        .unwrap_err()
        .to_string()
        .contains("disagrees with rope_parameters"));
    v["rope_scaling"] = json!({"rope_type": "default"});
    assert!(parse(v).is_ok());
}

#[test]
fn per_layer_widths_round_trip_through_config_json() {
    let mut cfg = parse(base()).unwrap();
    assert!(cfg.is_uniform());
    let uniform = cfg.to_hf_json(None);
    assert!(
        uniform.get(PER_LAYER_MLP).is_none(),
        "a uniform model is a plain LlamaConfig"
    );
    cfg.layers[1] = LayerShape {
        num_heads: 2,
        num_kv_heads: 1,
        intermediate_size: 40,
    };
    let written = cfg.to_hf_json(Some(&base()));
    assert_eq!(written[PER_LAYER_MLP], json!([128, 40]));
    assert_eq!(parse(written.clone()).unwrap(), cfg);

    // Every layer pruned: the standard fields keep the original sizes (methods.md §6), through a second prune
    // too; without an original document they hold the largest widths; an original without
    // `num_key_value_heads` has one per query head.
    let standard = |v: &serde_json::Value| {
        let f = |k: &str| v[k].as_u64().unwrap();
        (
            f("num_attention_heads"),
            f("num_key_value_heads"),
            f("intermediate_size"),
        )
    };
    cfg.layers[0] = LayerShape {
        num_heads: 2,
        num_kv_heads: 2,
        intermediate_size: 96,
    };
    let both = cfg.to_hf_json(Some(&base()));
    assert_eq!(standard(&both), (4, 2, 128));
    assert_eq!(parse(both.clone()).unwrap(), cfg);
    cfg.layers[0].intermediate_size = 64;
    let again = cfg.to_hf_json(Some(&both));
    assert_eq!(standard(&again), (4, 2, 128));
    assert_eq!(again[PER_LAYER_MLP], json!([64, 40]));
    assert_eq!(standard(&cfg.to_hf_json(None)), (2, 2, 64));
    let mut mha = base();
    mha.as_object_mut().unwrap().remove("num_key_value_heads");
    assert_eq!(standard(&cfg.to_hf_json(Some(&mha))), (4, 4, 128));

    let mut bad = base();
    bad[PER_LAYER_MLP] = json!([1, 2, 3]);
    assert!(parse(bad)
        .unwrap_err()
        .to_string()
        .contains("has 3 entries but num_hidden_layers is 2"));
}

/// A forward's footprint is the closed form of its shapes in f32. On tiny-gqa (6 query heads, MLP 192, vocab
/// 128), 3 × 50 tokens make attention scores [3, 6, 50, 50] the largest tensor; 3 × 10 make the MLP's. The check
/// passes at exactly the largest tensor's bytes and refuses one byte fewer, naming it; absurd lengths saturate.
/// Attention scores are counted in the blocks the forward computes them in, logits only where a run makes them.
#[test]
fn a_forward_footprint_is_its_shapes_in_f32_and_the_check_bounds_the_largest() {
    let (cfg, _) = fixture_files("tiny-gqa");
    let f = Footprint::forward(&cfg, "evaluation", 3, 50);
    let tensor = |n: &str| f.tensors.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(tensor("attention scores").shape, [3, 6, 50, 50]);
    assert_eq!(tensor("attention scores").bytes, 4 * 3 * 6 * 50 * 50);
    assert_eq!(tensor("MLP activations").bytes, 4 * 3 * 50 * 192);
    assert_eq!(tensor("logits").bytes, 4 * 3 * 50 * 128);
    assert_eq!(tensor("causal mask").bytes, 4 * 50 * 50);
    assert_eq!(f.largest().name, "attention scores");
    let short = Footprint::forward(&cfg, "evaluation", 3, 10);
    assert_eq!(short.largest().name, "MLP activations");

    let limit = |bytes: u64| DeviceLimit {
        bytes,
        source: "a test bound".into(),
    };
    f.check(&limit(4 * 3 * 6 * 50 * 50)).unwrap();
    let err = f
        .check(&limit(4 * 3 * 6 * 50 * 50 - 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("evaluation of 3 × 50 tokens needs attention scores [3, 6, 50, 50]")
            && err.contains("(a test bound)"),
        "{err}"
    );
    let absurd = Footprint::forward(&cfg, "evaluation", usize::MAX, usize::MAX);
    assert_eq!(absurd.largest().bytes, u128::MAX);
    assert!(absurd.check(&limit(u64::MAX)).is_err());

    // Evaluation runs min(batch, windows) windows at once (calibration: below).
    let opts = |max_windows| PerplexityOptions {
        seq_len: 64,
        max_windows,
        batch: 8,
    };
    assert_eq!(opts(None).footprint(&cfg, 200).batch, 3);
    assert_eq!(opts(Some(2)).footprint(&cfg, 200).batch, 2);
    assert_eq!(opts(None).footprint(&cfg, 10_000).batch, 8);

    // Scores over 128 MiB run in blocks: of whole windows (one head of 2048² is 16 MiB, so one window's 6 heads
    // at a time), else of heads (one head of 4096² is 64 MiB: 2 at a time).
    let scores = |batch, seq| {
        let f = Footprint::forward(&cfg, "calibration", batch, seq);
        f.tensors
            .iter()
            .find(|t| t.name == "attention scores")
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(scores(128, 1024), [5, 6, 1024, 1024]);
    assert_eq!(scores(128, 2048), [1, 6, 2048, 2048]);
    assert_eq!(scores(1, 4096), [1, 2, 4096, 4096]);
    assert_eq!(scores(1, 1 << 20), [1, 1, 1 << 20, 1 << 20]);

    // Calibration runs its windows through the layers in batches (all 20 fit one here: tests/calib_batches.rs
    // has LLaMA-7B's), and the head only where the recipe takes a loss:
    // over a backward's batch for gradients (all 20), over the 4 held-out windows for the search and
    // AdaPruner's losses, over 8 for the skipped-layer perplexity (also as a depth step), never for activation
    // scores.
    let windows = vec![vec![1u32; 64]; 20];
    let logits = |recipe: Recipe| {
        let f = calibration_footprint(&cfg, &windows, &recipe, prunelab::backend::Precision::F32);
        assert_eq!((f.what, f.batch, f.seq), ("calibration", 20, 64));
        let logits = f.tensors.iter().find(|t| t.name == "logits");
        logits.map(|t| t.shape.clone())
    };
    let with = |importance| Recipe {
        importance,
        ..Recipe::default()
    };
    assert_eq!(
        logits(with(Importance::TaylorFirst)),
        Some(vec![20, 64, 128])
    );
    assert_eq!(logits(with(Importance::Perplexity)), Some(vec![8, 64, 128]));
    assert_eq!(logits(with(Importance::Flap)), None);
    assert_eq!(logits(with(Importance::BlockInfluence)), None);
    let searched = Recipe {
        allocation: Allocation::Search(Default::default()),
        ..with(Importance::Flap)
    };
    assert_eq!(logits(searched), Some(vec![4, 64, 128]));
    assert_eq!(logits(with(Importance::Adapruner)), Some(vec![20, 64, 128]));
    let depth_by_perplexity = Recipe {
        depth: Some(DepthFirst {
            ratio: 0.25,
            importance: Importance::Perplexity,
        }),
        ..with(Importance::Flap)
    };
    assert_eq!(logits(depth_by_perplexity), Some(vec![8, 64, 128]));
}

/// What a run holds for its whole length, from the config alone: LLaMA-7B's 6,738,415,616 parameters are
/// 26.95 GB in f32 and 13.48 GB in bf16, with as much again of gradients when the run takes them (its score or
/// its depth step's runs backward passes) and what the backward adds. Over a device's memory it is refused,
/// naming them.
#[test]
fn the_resident_weights_and_gradients_are_counted_from_the_config() {
    use prunelab::backend::Precision;
    use prunelab::model::resident::Resident;
    use prunelab::prune::gradients::backward_peak_bytes;
    let cfg = ModelConfig::from_json(
        &serde_json::to_vec(&prunelab::model::shapes::known_shape("llama-7b").unwrap()).unwrap(),
    )
    .unwrap();
    let with = |importance| Recipe {
        importance,
        ..Recipe::default()
    };
    for (recipe, backward) in [
        (with(Importance::Numerical), false),
        (with(Importance::Flap), false),
        (with(Importance::TaylorFirst), true),
        (with(Importance::TaylorSecond), true),
        (with(Importance::Ntk), true),
        (with(Importance::Adapruner), true),
        (
            Recipe {
                depth: Some(DepthFirst {
                    ratio: 0.25,
                    importance: Importance::TaylorFirst,
                }),
                ..with(Importance::Numerical)
            },
            true,
        ),
        (
            Recipe {
                depth: Some(DepthFirst {
                    ratio: 0.25,
                    importance: Importance::BlockInfluence,
                }),
                ..with(Importance::Numerical)
            },
            false,
        ),
    ] {
        assert_eq!(recipe.runs_backward(), backward, "{:?}", recipe.importance);
    }
    let f32_taylor = Resident::of(&cfg, "prune", Precision::F32, true, "use --precision bf16");
    assert_eq!(f32_taylor.weights, 4 * 6_738_415_616);
    assert_eq!(f32_taylor.bytes(), 8 * 6_738_415_616);
    let bf16 = Resident::of(&cfg, "prune", Precision::Bf16, false, "");
    assert_eq!((bf16.weights, bf16.gradients), (2 * 6_738_415_616, 0));
    let card = DeviceLimit {
        bytes: 40 << 30,
        source: "a 40 GiB card".into(),
    };
    assert_eq!(
        f32_taylor.check(&card).unwrap_err().to_string(),
        "invalid argument: prune needs 50.21 GiB for its weights in f32 (25.10 GiB) and their gradients \
         (25.10 GiB), over 40.00 GiB (a 40 GiB card): use --precision bf16"
    );
    let bf16_taylor = Resident::of(&cfg, "prune", Precision::Bf16, true, "");
    assert!(bf16_taylor.check(&card).is_ok());
    // The GPU bench's taylor-first backward over 10 windows of 128 tokens adds their activations (1,823,342,592
    // bytes each in f32, 1,396,572,160 in bf16): 67.19 GiB in f32, over a 64 GiB card; 38.11 GiB in bf16.
    let bench = |p| {
        let taylor = with(Importance::TaylorFirst);
        Resident::of(&cfg, "prune", p, true, "use --precision bf16")
            .with_backward(backward_peak_bytes(&cfg, 128, 10, &taylor, p))
    };
    assert_eq!(
        bench(Precision::F32).bytes(),
        8 * 6_738_415_616 + 10 * 1_823_342_592
    );
    assert_eq!(
        bench(Precision::Bf16).bytes(),
        4 * 6_738_415_616 + 10 * 1_396_572_160
    );
    let card = DeviceLimit {
        bytes: 64 << 30,
        source: "a 64 GiB card".into(),
    };
    assert_eq!(
        bench(Precision::F32).check(&card).unwrap_err().to_string(),
        "invalid argument: prune needs 67.19 GiB for its weights in f32 (25.10 GiB), their gradients \
         (25.10 GiB) and a backward's activations and running sums (16.98 GiB), over 64.00 GiB (a 64 GiB \
         card): use --precision bf16"
    );
    assert!(bench(Precision::Bf16).check(&card).is_ok());
}

/// A search measures the uniform candidate first, and its pruned copy of the layers it changes sits beside the
/// weights while it does: for LLaMA-7B at a 20% target over layers 4..30 (KV groups and MLP channels), each of
/// the 26 layers loses both, so the copy is `4·h·128·4096 + 3·m·4096` per layer for its kept heads `h` and
/// channels `m`, and with what the candidate removes and the two norms it is the range's parameters. Gradients
/// are freed before a candidate is measured, so a run holds the larger of the two beside its weights.
#[test]
fn a_search_holds_the_uniform_candidates_copy_beside_the_weights() {
    use prunelab::backend::Precision;
    use prunelab::model::params::count_params;
    use prunelab::model::resident::Resident;
    use prunelab::prune::allocate::{ratio_for_target, shapes_at};
    use prunelab::prune::search::uniform_candidate_params;
    use prunelab::prune::structure::StructureKind;
    let cfg = ModelConfig::from_json(
        &serde_json::to_vec(&prunelab::model::shapes::known_shape("llama-7b").unwrap()).unwrap(),
    )
    .unwrap();
    let (range, kinds) = (4..30, [StructureKind::KvGroups, StructureKind::Mlp]);
    assert_eq!(Recipe::default().layer_range(&cfg), range);
    let copy = uniform_candidate_params(&cfg, &range, 0.2, &kinds).unwrap();
    let r = ratio_for_target(&cfg, &range, 0.2, &kinds, Allocation::Uniform).unwrap();
    let small = shapes_at(&cfg, &range, r, &kinds, Allocation::Uniform);
    let by_hand: usize = range
        .clone()
        .map(|l| {
            let (h, m) = (small.layers[l].num_heads, small.layers[l].intermediate_size);
            assert!(
                h < 32 && m < 11008,
                "layer {l} keeps {h} heads and {m} channels"
            );
            4 * h * 128 * 4096 + 3 * m * 4096
        })
        .sum();
    assert_eq!(copy, by_hand);
    let (before, after) = (count_params(&cfg), count_params(&small));
    let removed = before.total - after.total;
    assert!(removed as f64 >= 0.2 * before.total as f64);
    let range_params: usize = before.per_layer[range.clone()].iter().sum();
    assert_eq!(copy + removed + 2 * 4096 * range.len(), range_params);
    let search = |p| {
        Resident::of(&cfg, "prune", p, false, "use --stream")
            .with_copy(copy, "use --precision bf16")
    };
    let f32_search = search(Precision::F32);
    assert_eq!(f32_search.copy, 4 * copy as u128);
    assert_eq!(f32_search.bytes(), 4 * (6_738_415_616 + copy as u128));
    let card = DeviceLimit {
        bytes: 32 << 30,
        source: "a 32 GiB card".into(),
    };
    let gib = |b: u128| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    assert_eq!(
        f32_search.check(&card).unwrap_err().to_string(),
        format!(
            "invalid argument: prune needs {} for its weights in f32 (25.10 GiB) and a search candidate's \
             pruned copy of the layers it changes ({}), over 32.00 GiB (a 32 GiB card): use --precision bf16",
            gib(f32_search.bytes()),
            gib(f32_search.copy)
        )
    );
    assert!(f32_search.bytes() > 32 << 30 && search(Precision::Bf16).check(&card).is_ok());
    // With gradients (AdaPruner), the copy is the smaller peak: the bytes and the advice stay the gradients'.
    let taylor = Resident::of(
        &cfg,
        "prune",
        Precision::F32,
        true,
        "use --precision bf16 (half)",
    )
    .with_copy(copy, "unused");
    assert_eq!(
        (taylor.bytes(), taylor.remedy),
        (8 * 6_738_415_616, "use --precision bf16 (half)")
    );
}

/// The layer-wise calibration passes hold every window's activations entering a layer (`[windows, len, hidden]`
/// in the model's float type) and, in a width step, the f32 Gram matrices of o_proj's and down_proj's inputs:
/// for LLaMA-7B, `(4096² + 11008²)·4` = 551,813,120 bytes. With 1024 windows of 2048 tokens the default recipe
/// (numerical + ls) holds 32 GiB of f32 activations beside 25.10 GiB of weights: refused on a 48 GiB card,
/// naming them; in bf16 it fits. Streamed, one decoder layer's weights replace the model's, beside the same
/// windows. A run with no layer-wise pass (taylor-first without compensation, or a saved plan without
/// compensation) holds none; a depth step's block influence holds the activations alone, its repair the Gram of
/// down_proj's input beside the removed run's contribution. A saved plan's steps follow the plan, not the
/// recipe's structures.
#[test]
fn the_layer_wise_passes_hold_every_windows_activations_and_a_layers_statistics() {
    use prunelab::backend::Precision;
    use prunelab::model::resident::Resident;
    use prunelab::prune::activations::{pass_bytes, PassBytes};
    use prunelab::prune::compensate::Compensation;
    use prunelab::prune::plan::{LayerPlan, Plan};
    use prunelab::prune::structure::StructureKind;
    let cfg = ModelConfig::from_json(
        &serde_json::to_vec(&prunelab::model::shapes::known_shape("llama-7b").unwrap()).unwrap(),
    )
    .unwrap();
    let grams: u128 = (4096 * 4096 + 11008 * 11008) * 4;
    assert_eq!(grams, 551_813_120);
    let default = Recipe::default();
    assert_eq!(
        (default.importance, default.compensation),
        (Importance::Numerical, Compensation::Ls)
    );
    let pass = |r: &Recipe, plan, p| pass_bytes(&cfg, r, plan, 1024, 2048, p).in_memory;
    let f32_acts: u128 = 1024 * 2048 * 4096 * 4;
    // One chunk of 11 windows (its MLP activations under 1 GiB in f32) computes gate_proj's and up_proj's
    // outputs beside their input and the residual stream: 11 · 2048 · 2 · (11008 + 4096) values.
    let chunk: u128 = 11 * 2048 * 2 * (11008 + 4096) * 4;
    assert_eq!(chunk, 2_722_103_296);
    assert_eq!(
        pass(&default, None, Precision::F32),
        f32_acts + chunk + grams
    );
    assert_eq!(
        pass(&default, None, Precision::Bf16),
        (f32_acts + chunk) / 2 + grams
    );
    // A saved plan that narrows layers still repairs them with ls: the same pass.
    let narrow = |l| LayerPlan {
        mlp_channels: vec![0, 1],
        ..LayerPlan::keep_all(l)
    };
    let width_plan = Plan::new(&cfg, vec![narrow(5)]);
    assert_eq!(
        pass(&default, Some(&width_plan), Precision::F32),
        f32_acts + chunk + grams
    );
    // Fewer windows than a chunk holds are one chunk; `--calib-batch` sets the chunk.
    assert_eq!(
        pass_bytes(&cfg, &default, None, 4, 2048, Precision::F32).in_memory,
        f32_acts / 256 + 4 * chunk / 11 + grams
    );
    let one = Recipe {
        calib_batch: Some(1),
        ..Recipe::default()
    };
    assert_eq!(
        pass(&one, None, Precision::F32),
        f32_acts + chunk / 11 + grams
    );
    let taylor = Recipe {
        importance: Importance::TaylorFirst,
        compensation: Compensation::None,
        ..Recipe::default()
    };
    assert_eq!(pass(&taylor, None, Precision::F32), 0);
    let flap = Recipe {
        importance: Importance::Flap,
        compensation: Compensation::None,
        ..Recipe::default()
    };
    assert_eq!(pass(&flap, None, Precision::F32), f32_acts + chunk + grams);
    assert_eq!(pass(&flap, Some(&width_plan), Precision::F32), 0);
    let depth = Recipe {
        structures: vec![StructureKind::Layers],
        importance: Importance::BlockInfluence,
        compensation: Compensation::None,
        ratio: Some(0.25),
        ..Recipe::default()
    };
    assert_eq!(pass(&depth, None, Precision::F32), f32_acts + chunk);
    // Repaired with ls, a depth step holds two streams for every window (after the attention of the layer
    // that absorbs a removed run, and through the run) and gathers that down_proj's statistics: its input
    // beside the run's contribution, `(11008 + 4096)²·4` bytes.
    let depth_gram: u128 = (11008 + 4096) * (11008 + 4096) * 4;
    assert_eq!(depth_gram, 912_523_264);
    let repaired = Recipe {
        compensation: Compensation::Ls,
        ..depth.clone()
    };
    let f32_pass = f32_acts + chunk;
    let f32_repair = f32_acts + f32_pass + depth_gram;
    assert_eq!(pass(&repaired, None, Precision::F32), f32_repair);
    // Whole layers (block influence, repaired with ls) then width: in memory the steps run one after the
    // other, the larger counts; streamed they run chained, each pass with its own windows, so both count.
    let both = Recipe {
        depth: Some(DepthFirst {
            ratio: 0.25,
            importance: Importance::BlockInfluence,
        }),
        ..Recipe::default()
    };
    let (windows, len) = (1024, 2048);
    let p = Precision::F32;
    let run = |r: &Recipe, plan| pass_bytes(&cfg, r, plan, windows, len, p);
    assert_eq!(pass(&both, None, p), f32_repair);
    assert_eq!(run(&both, None).streamed, f32_repair + f32_pass + grams);
    assert_eq!(run(&default, None).streamed, pass(&default, None, p));
    // A saved plan's steps are its own, whatever the recipe's structures: removing layers only, the default
    // recipe's pass holds a depth repair's statistics and no width step's; removing and narrowing, both steps
    // run (chained when streamed). Without a repair, a saved plan runs no pass.
    let depth_plan = Plan::depth(&cfg, vec![20, 21]);
    assert_eq!(
        run(&default, Some(&depth_plan)),
        PassBytes {
            in_memory: f32_repair,
            streamed: f32_repair,
        }
    );
    let both_plan = Plan {
        removed_layers: vec![20, 21],
        ..width_plan.clone()
    };
    assert_eq!(
        run(&default, Some(&both_plan)),
        PassBytes {
            in_memory: f32_repair,
            streamed: f32_repair + f32_pass + grams,
        }
    );
    for plan in [&width_plan, &depth_plan, &both_plan] {
        assert_eq!(run(&flap, Some(plan)).streamed, 0);
    }
    // The statistics are the widest of the step's layers': a depth repair's of the layers before removed runs, a
    // width step's of its range less the layers removed before it. Layer 19 made wider (20000 channels) counts
    // when it absorbs layers 20 and 21, not when layer 25 goes, and not in a width step after it went, whose
    // chunks are again 11 windows of the model that step runs on.
    let mut wide = cfg.clone();
    wide.layers[19].intermediate_size = 20000;
    let wide_run = |plan: &Plan| pass_bytes(&wide, &default, Some(plan), windows, len, p);
    // Its MLP activations take 6 windows a chunk under 1 GiB.
    let wide_chunk = 6 * 2048 * 2 * (20000 + 4096) * 4;
    let wide_pass = f32_acts + wide_chunk;
    let wide_depth: u128 = (20000 + 4096) * (20000 + 4096) * 4;
    assert_eq!(
        wide_run(&depth_plan).in_memory,
        f32_acts + wide_pass + wide_depth
    );
    assert_eq!(
        wide_run(&Plan::depth(&wide, vec![25])).in_memory,
        f32_acts + wide_pass + depth_gram
    );
    let wide_width: u128 = (4096 * 4096 + 20000 * 20000) * 4;
    assert_eq!(wide_run(&width_plan).in_memory, wide_pass + wide_width);
    let without_19 = Plan {
        removed_layers: vec![19],
        ..width_plan.clone()
    };
    assert_eq!(
        wide_run(&without_19).streamed,
        (f32_acts + wide_pass + depth_gram) + (f32_pass + grams)
    );

    let resident = |p| {
        Resident::of(&cfg, "prune", p, false, "use --stream")
            .with_calibration(pass(&default, None, p), "use fewer calibration windows")
    };
    let f32_run = resident(Precision::F32);
    assert_eq!(
        f32_run.bytes(),
        4 * 6_738_415_616 + f32_acts + chunk + grams
    );
    let card = DeviceLimit {
        bytes: 48 << 30,
        source: "a 48 GiB card".into(),
    };
    assert_eq!(
        f32_run.check(&card).unwrap_err().to_string(),
        "invalid argument: prune needs 60.15 GiB for its weights in f32 (25.10 GiB) and, through each layer, \
         every calibration window's activations, what a chunk of them computes there and the layer's statistics \
         (35.05 GiB), over 48.00 GiB (a 48 GiB card): use fewer calibration windows"
    );
    assert!(resident(Precision::Bf16).check(&card).is_ok());
    // Streamed (`--stream`), one decoder layer is on the device: 4·4096² + 3·4096·11008 + 2·4096 parameters.
    // The windows are the same, so on a 24 GiB card f32 is refused and bf16 (18.16 GiB) fits.
    let layer: u128 = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096;
    let streamed = |p| {
        Resident::streamed(&cfg, "prune", p, 1, "use --precision bf16")
            .with_calibration(pass(&default, None, p), "use fewer calibration windows")
    };
    let f32_streamed = streamed(Precision::F32);
    assert_eq!(f32_streamed.bytes(), 4 * layer + f32_acts + chunk + grams);
    let card = DeviceLimit {
        bytes: 24 << 30,
        source: "a 24 GiB card".into(),
    };
    assert_eq!(
        f32_streamed.check(&card).unwrap_err().to_string(),
        "invalid argument: prune needs 35.80 GiB for one decoder layer's weights in f32 (0.75 GiB) and, through \
         each layer, every calibration window's activations, what a chunk of them computes there and the layer's \
         statistics (35.05 GiB), over 24.00 GiB (a 24 GiB card): use fewer calibration windows"
    );
    let bf16_streamed = streamed(Precision::Bf16);
    assert_eq!(
        bf16_streamed.bytes(),
        2 * layer + (f32_acts + chunk) / 2 + grams
    );
    assert!(bf16_streamed.check(&card).is_ok());
    // A depth repair keeps the layer before a removed run beside the layer passing through.
    let two = Resident::streamed(&cfg, "prune", Precision::Bf16, 2, "a larger device");
    assert_eq!(two.weights, 4 * layer);
    assert_eq!(
        two.check(&DeviceLimit {
            bytes: 1 << 29,
            source: "half a GiB".into()
        })
        .unwrap_err()
        .to_string(),
        "invalid argument: prune needs 0.75 GiB for two decoder layers' weights in bf16 alone, over 0.50 GiB \
         (half a GiB): a larger device"
    );
    // Beside a larger backward the passes change neither the bytes nor the advice.
    let taylor_ls = Resident::of(&cfg, "prune", Precision::F32, true, "use --precision bf16")
        .with_calibration(f32_acts / 64, "unused");
    assert_eq!(
        (taylor_ls.bytes(), taylor_ls.remedy),
        (8 * 6_738_415_616, "use --precision bf16")
    );
}

/// A streamed evaluation (`eval --stream`, `prune --stream --eval`) holds one decoder layer with the embeddings,
/// final norm and head, every window's activations between layers, and what one batch computes at a layer's
/// MLP. LLaMA-7B (untied head): 131,072,000 parameters each for the embeddings and head, 4,096 for the norm,
/// 202,383,360 for a layer; 512 windows of 2,048 tokens hold `512 · 2048 · 4096` values, and a batch of 8 of
/// them `8 · 2048 · 2 · (11008 + 4096)` at the MLP.
#[test]
fn a_streamed_evaluation_holds_a_layer_the_embeddings_and_head_and_every_windows_activations() {
    use prunelab::backend::Precision;
    use prunelab::eval::streamed::streamed_resident;
    let shape = |name| {
        let json = prunelab::model::shapes::known_shape(name).unwrap();
        ModelConfig::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
    };
    let cfg = shape("llama-7b");
    let held: u128 = 2 * 131_072_000 + 4_096 + 202_383_360;
    let opts = PerplexityOptions {
        seq_len: 2048,
        max_windows: None,
        batch: 8,
    };
    let tokens = 512 * 2048 + 2047;
    let remedies = [
        "evaluate on a machine with more memory",
        "evaluate fewer windows (--max-windows), or on a machine with more memory",
    ];
    let f32 = streamed_resident(&cfg, &opts, tokens, Precision::F32, remedies);
    let acts: u128 = 512 * 2048 * 4096 * 4;
    let batch: u128 = 8 * 2048 * 2 * (11008 + 4096) * 4;
    assert_eq!((f32.weights, f32.evaluation), (4 * held, acts + batch));
    assert_eq!(f32.bytes(), 21_017_706_496);
    let card = DeviceLimit {
        bytes: 16 << 30,
        source: "a 16 GiB card".into(),
    };
    assert_eq!(
        f32.check(&card).unwrap_err().to_string(),
        "invalid argument: streamed evaluation needs 19.57 GiB for one decoder layer's weights with the \
         embeddings and head in f32 (1.73 GiB) and every evaluation window's activations with what a batch of \
         them computes in a layer (17.84 GiB), over 16.00 GiB (a 16 GiB card): evaluate fewer windows \
         (--max-windows), or on a machine with more memory"
    );
    let bf16 = streamed_resident(&cfg, &opts, tokens, Precision::Bf16, remedies);
    assert_eq!(bf16.bytes(), 2 * held + (acts + batch) / 2);
    assert!(bf16.check(&card).is_ok());
    // The windows the text gives, at most `max_windows`; a batch is at most all of them.
    let first_4 = PerplexityOptions {
        max_windows: Some(4),
        ..opts
    };
    let capped = streamed_resident(&cfg, &first_4, tokens, Precision::F32, remedies);
    assert_eq!(capped.evaluation, acts / 128 + batch / 2);
    // Without windows (weights alone), fewer windows cannot help: the first advice alone.
    let small = DeviceLimit {
        bytes: 1 << 30,
        source: "a 1 GiB card".into(),
    };
    let none = streamed_resident(&cfg, &opts, 0, Precision::F32, remedies);
    assert_eq!(
        none.check(&small).unwrap_err().to_string(),
        "invalid argument: streamed evaluation needs 1.73 GiB for one decoder layer's weights with the \
         embeddings and head in f32 alone, over 1.00 GiB (a 1 GiB card): evaluate on a machine with more memory"
    );
    // A tied head is the embedding: SmolLM2-135M's weights held are its embeddings (49,152 × 576), the final
    // norm and one layer (3,540,096 parameters).
    let smol = parse(json!({"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "tie_word_embeddings": true}))
    .unwrap();
    let tied = streamed_resident(&smol, &opts, 0, Precision::F32, remedies);
    assert_eq!(
        (tied.weights, tied.evaluation),
        (4 * (49_152 * 576 + 576 + 3_540_096), 0)
    );
    assert!(tied.check(&card).is_ok());
}
