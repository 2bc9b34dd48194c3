//! Allocation (methods.md §3) on a SmolLM2-shaped config: `attn-mlp-ratio` keeps MLP widths a multiple of 8 with
//! MLP fraction = γ × attention fraction and hits the parameter target; `global` cuts z-normalised scores at a
//! running parameter count, stops as soon as the target is reached, and keeps a KV group and a channel per
//! layer.

use prunelab::model::params::count_params;
use prunelab::model::ModelConfig;
use prunelab::prune::allocate::{global_plan, ratio_for_target, shapes_at, Allocation};
use prunelab::prune::importance::LayerScores;
use prunelab::prune::structure::StructureKind;
use rand::{Rng, SeedableRng};

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
