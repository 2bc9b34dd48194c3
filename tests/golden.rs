//! Golden checks against HF transformers (`../shared/fixtures/*/golden.*`): logits, losses and the gradient of
//! every weight, for an MHA fixture (transformers 4.x config keys, untied head) and a GQA fixture (5.x keys,
//! tied embeddings), on the CPU backend and on wgpu (Vulkan; lavapipe in CI). Also every rotary scaling on the
//! GQA fixture (`tests/data/rope_golden.json`, made by `tests/rope_golden.py`), and attention computed in
//! blocks against the same attention whole.

mod common;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use common::*;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::io::SafetensorsWeights;
use prunelab::model::attention::score_block;
use prunelab::model::named::Weight;
use prunelab::model::rope::inv_freq;
use prunelab::model::{Llama, ModelConfig};
use prunelab::readback::{scalar, to_vec};

fn windows_of(v: &serde_json::Value) -> Vec<Vec<u32>> {
    id_windows(v)
}

fn check_forward<B: Backend>(name: &str, device: &B::Device) {
    let golden = golden_json(name);
    let tensors = golden_tensors(name);
    let model = load_fixture::<B>(name, device);

    let probe = windows_of(&golden["probe_input_ids"]);
    let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
    let ids = batch_tensor::<B>(&refs, device);
    let logits = pollster::block_on(to_vec(model.forward(ids.clone()))).unwrap();
    let (shape, expected) = &tensors["probe_logits"];
    assert_eq!(shape, &vec![2, 16, 128]);
    let diff = max_abs_diff(&logits, expected);
    let loss = pollster::block_on(scalar(model.loss(ids))).unwrap();
    let want = golden["probe_loss"].as_f64().unwrap();
    eprintln!(
        "{name}: probe logits max abs diff {diff:e}, probe loss relative error {:e}",
        ((loss - want) / want).abs()
    );
    assert!(
        diff < 1e-4,
        "{name}: probe logits differ by {diff:e} (max abs)"
    );
    assert!(
        ((loss - want) / want).abs() < 1e-5,
        "{name}: probe loss {loss} vs {want}"
    );
}

fn check_gradients<B: AutodiffBackend>(name: &str, device: &B::Device) {
    let golden = golden_json(name);
    let tensors = golden_tensors(name);
    let model = load_fixture::<B>(name, device);

    let calib = windows_of(&golden["calibration_input_ids"]);
    let refs: Vec<&[u32]> = calib.iter().map(|w| w.as_slice()).collect();
    let loss = model.loss(batch_tensor::<B>(&refs, device));
    let value = pollster::block_on(scalar(loss.clone())).unwrap();
    let want = golden["calibration_loss"].as_f64().unwrap();
    eprintln!(
        "{name}: calibration loss relative error {:e}",
        ((value - want) / want).abs()
    );

    let grads = loss.backward();
    let weights = model.named_weights();
    let mut checked = 0;
    let mut worst = 0f64;
    let mut errors = Vec::new();
    for (hf_name, weight) in &weights {
        let (shape, expected) = tensors
            .get(&format!("grad.{hf_name}"))
            .unwrap_or_else(|| panic!("{name}: golden has no gradient for {hf_name}"));
        assert_eq!(&weight.shape(), shape, "{name}: {hf_name} shape");
        let grad = weight
            .grad(&grads)
            .unwrap_or_else(|| panic!("{name}: no gradient reached {hf_name}"));
        let got = pollster::block_on(to_vec(grad.flatten())).unwrap();
        let err = rel_l2(&got, expected);
        worst = worst.max(err);
        errors.push((hf_name.clone(), err));
        checked += 1;
    }
    eprintln!("{name}: worst gradient relative L2 error {worst:e}");
    assert!(
        ((value - want) / want).abs() < 1e-5,
        "{name}: calibration loss {value} vs {want}"
    );
    for (hf_name, err) in errors {
        assert!(
            err < 1e-3,
            "{name}: gradient of {hf_name} off by {err:e} (relative L2)"
        );
    }
    let golden_grads = tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        checked, golden_grads,
        "{name}: every golden gradient is compared"
    );
}

/// `len` ids of the fixtures' vocabulary of 128, a different run for each `seed`.
fn ids(seed: u64, len: usize) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 57) as u32
        })
        .collect()
}

/// Attention scores over `SCORE_BLOCK_BYTES` (128 MiB) are computed in blocks. On tiny-gqa (6 heads), 3 windows
/// of 1500 tokens run in blocks of 2 and 1 windows: each window's logits are those it gives alone. One window of
/// 2400 tokens runs in blocks of 5 and 1 heads: its first 64 positions' logits are those of the 64 tokens alone
/// (causality).
fn check_blocked_logits<B: Backend>(device: &B::Device) {
    assert_eq!(score_block(3, 6, 1500, 1500), (2, 6));
    assert_eq!(score_block(1, 6, 2400, 2400), (1, 5));
    assert_eq!(score_block(3, 6, 64, 64), (3, 6));
    let model = load_fixture::<B>("tiny-gqa", device);
    let logits = |windows: &[Vec<u32>]| {
        let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        pollster::block_on(to_vec(model.forward(batch_tensor::<B>(&refs, device)))).unwrap()
    };
    let batch = blocked_batch();
    let together = logits(&batch);
    for (i, window) in batch.iter().enumerate() {
        let alone = logits(std::slice::from_ref(window));
        let diff = max_abs_diff(&together[i * alone.len()..(i + 1) * alone.len()], &alone);
        eprintln!("window {i} of 3 × 1500: logits max abs diff {diff:e} from the window alone");
        assert!(diff < 1e-4, "window {i}: blocked logits differ by {diff:e}");
    }
    let long = ids(7, 2400);
    let (whole, prefix) = (
        logits(std::slice::from_ref(&long)),
        logits(&[long[..64].to_vec()]),
    );
    let diff = max_abs_diff(&whole[..prefix.len()], &prefix);
    eprintln!("1 × 2400 in head blocks: first 64 positions' logits max abs diff {diff:e}");
    assert!(diff < 1e-4, "head-blocked logits differ by {diff:e}");
}

/// The 3 windows of 1500 tokens [`check_blocked_logits`] runs in blocks of windows.
fn blocked_batch() -> Vec<Vec<u32>> {
    (0..3).map(|s| ids(s, 1500)).collect()
}

/// Under autodiff, the gradient of the loss of the 3 windows of 1500 tokens (attention in blocks of windows) is
/// the mean of the gradients of the windows' own losses (equal lengths, so the batch's mean NLL is the mean of
/// theirs).
fn check_blocked_gradients<B: AutodiffBackend>(device: &B::Device) {
    let model = load_fixture::<B>("tiny-gqa", device);
    let grads = |windows: &[Vec<u32>]| {
        let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        let grads = model.loss(batch_tensor::<B>(&refs, device)).backward();
        let flat = |w: &Weight<B>| pollster::block_on(to_vec(w.grad(&grads).unwrap().flatten()));
        (model.named_weights().iter())
            .map(|(_, w)| flat(w).unwrap())
            .collect::<Vec<_>>()
    };
    let batch = blocked_batch();
    let together = grads(&batch);
    let mut mean: Vec<Vec<f32>> = together.iter().map(|g| vec![0.0; g.len()]).collect();
    for window in &batch {
        for (m, g) in mean.iter_mut().zip(grads(std::slice::from_ref(window))) {
            m.iter_mut().zip(&g).for_each(|(m, g)| *m += g / 3.0);
        }
    }
    let worst = (together.iter().zip(&mean))
        .map(|(got, want)| rel_l2(got, want))
        .fold(0.0, f64::max);
    eprintln!("3 × 1500 in blocks of windows: worst gradient relative L2 error {worst:e}");
    assert!(worst < 1e-4, "blocked gradients off by {worst:e}");
}

type Cpu = prunelab::backend::Cpu;

#[test]
fn cpu_attention_in_blocks_equals_attention_whole() {
    check_blocked_logits::<Cpu>(&Default::default());
    check_blocked_gradients::<Autodiff<Cpu>>(&Default::default());
}

/// Each rotary scaling of `tests/data/rope_golden.json` on the GQA fixture, 300 tokens (past its 256
/// `max_position_embeddings`): our frequencies and attention factor against transformers' (f32), and the
/// forward's loss and logits.
#[test]
fn cpu_rotary_scalings_match_transformers() {
    let golden: serde_json::Value = serde_json::from_slice(&read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rope_golden.json"),
    ))
    .unwrap();
    let (_, bytes) = fixture_files("tiny-gqa");
    let mut hf: serde_json::Value =
        serde_json::from_slice(&read(&fixture("tiny-gqa").join("config.json"))).unwrap();
    hf.as_object_mut().unwrap().remove("rope_parameters");
    hf["rope_theta"] = serde_json::json!(100000.0);
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let ids: Vec<u32> = serde_json::from_value(golden["input_ids"].clone()).unwrap();
    let positions: Vec<usize> = serde_json::from_value(golden["positions"].clone()).unwrap();
    let device = Default::default();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut doc = hf.clone();
        for (k, v) in case["config"].as_object().unwrap() {
            doc[k] = v.clone();
        }
        let cfg = ModelConfig::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let want: Vec<f64> = serde_json::from_value(case["inv_freq"].clone()).unwrap();
        let got = inv_freq(&cfg.rope, cfg.head_dim, ids.len());
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                ((g - w) / w).abs() < 1e-6,
                "{name}: inv_freq[{i}] {g} vs {w}"
            );
        }
        let scale = case["attention_scaling"].as_f64().unwrap();
        assert!(
            (cfg.rope.attention_factor() - scale).abs() < 1e-12,
            "{name}"
        );

        let model = Llama::<Cpu>::load(&cfg, &st, &device).unwrap();
        let batch = batch_tensor::<Cpu>(&[ids.as_slice()], &device);
        let logits = pollster::block_on(to_vec(model.forward(batch.clone()))).unwrap();
        let vocab = cfg.vocab_size;
        let mut diff = 0f32;
        for (row, &p) in positions.iter().enumerate() {
            let w: Vec<f32> = serde_json::from_value(case["logits"][row].clone()).unwrap();
            diff = diff.max(max_abs_diff(&logits[p * vocab..(p + 1) * vocab], &w));
        }
        let loss = pollster::block_on(scalar(model.loss(batch))).unwrap();
        let want = case["loss"].as_f64().unwrap();
        let rel = ((loss - want) / want).abs();
        eprintln!("{name}: logits max abs diff {diff:e}, loss relative error {rel:e}");
        assert!(diff < 3e-5, "{name}: logits differ by {diff:e}");
        assert!(rel < 1e-6, "{name}: loss {loss} vs {want}");
    }
}

#[test]
fn cpu_tiny_mha_matches_transformers() {
    check_forward::<Cpu>("tiny-mha", &Default::default());
    check_gradients::<Autodiff<Cpu>>("tiny-mha", &Default::default());
}

#[test]
fn cpu_tiny_gqa_matches_transformers() {
    check_forward::<Cpu>("tiny-gqa", &Default::default());
    check_gradients::<Autodiff<Cpu>>("tiny-gqa", &Default::default());
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    type Wgpu = prunelab::backend::Wgpu;

    #[test]
    fn wgpu_tiny_mha_matches_transformers() {
        check_forward::<Wgpu>("tiny-mha", &Default::default());
        check_gradients::<Autodiff<Wgpu>>("tiny-mha", &Default::default());
    }

    #[test]
    fn wgpu_tiny_gqa_matches_transformers() {
        check_forward::<Wgpu>("tiny-gqa", &Default::default());
        check_gradients::<Autodiff<Wgpu>>("tiny-gqa", &Default::default());
    }

    #[test]
    fn wgpu_attention_in_blocks_equals_attention_whole() {
        check_blocked_logits::<Wgpu>(&Default::default());
    }
}

/// Runs on a lent GPU (`benches/gpu/run.sh`, with `--ignored`); CI builds it but has no GPU to run it on.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    type Cuda = prunelab::backend::Cuda;

    #[test]
    #[ignore = "needs an NVIDIA GPU: benches/gpu/run.sh runs it"]
    fn cuda_tiny_mha_matches_transformers() {
        check_gradients::<Autodiff<Cuda>>("tiny-mha", &Default::default());
        check_forward::<Cuda>("tiny-mha", &Default::default());
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU: benches/gpu/run.sh runs it"]
    fn cuda_tiny_gqa_matches_transformers() {
        check_gradients::<Autodiff<Cuda>>("tiny-gqa", &Default::default());
        check_forward::<Cuda>("tiny-gqa", &Default::default());
    }
}
