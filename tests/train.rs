//! Training from scratch: the learning-rate schedule and the unigram baseline against their closed forms, a
//! trained BPE tokenizer that round-trips text, and a few AdamW steps on a tiny model that lower the loss.

mod common;

use burn::backend::{Autodiff, Flex};
use common::*;
use prunelab::model::random::RandomWeights;
use prunelab::model::{Llama, ModelConfig};
use prunelab::train::bpe::train_bpe;
use prunelab::train::unigram::unigram_perplexity;
use prunelab::train::{train, Schedule};

fn schedule(steps: usize, warmup: usize, lr: f64) -> Schedule {
    Schedule {
        steps,
        batch: 8,
        seq_len: 32,
        lr,
        warmup,
        min_lr_ratio: 0.1,
        weight_decay: 0.01,
        clip_norm: 1.0,
        seed: 3,
    }
}

#[test]
fn schedule_warms_up_then_decays_by_cosine() {
    let s = schedule(110, 10, 1e-3);
    assert!((s.lr_at(0) - 1e-4).abs() < 1e-15, "first warm-up step");
    assert!((s.lr_at(9) - 1e-3).abs() < 1e-15, "end of warm-up");
    assert!((s.lr_at(10) - 1e-3).abs() < 1e-15, "peak");
    // Halfway through the decay: floor + (peak − floor)/2.
    assert!((s.lr_at(60) - (1e-4 + 0.45e-3)).abs() < 1e-15);
    assert!((s.lr_at(110) - 1e-4).abs() < 1e-15, "floor");
    assert!((1..110).all(|i| i <= 10 || s.lr_at(i) <= s.lr_at(i - 1)));
    assert!(s.check(1000).is_ok());
    let err = s.check(20).unwrap_err().to_string();
    assert!(err.contains("fewer than one window"), "{err}");
}

#[test]
fn schedules_that_cannot_train_are_refused() {
    let ok = schedule(10, 2, 1e-3);
    assert!(ok.check(1000).is_ok());
    for (s, message) in [
        (
            Schedule {
                clip_norm: -1.0,
                ..ok.clone()
            },
            "clipping norm -1 > 0",
        ),
        (
            Schedule {
                weight_decay: f64::NAN,
                ..ok.clone()
            },
            "weight decay NaN must be ≥ 0",
        ),
        (
            Schedule {
                lr: 0.0,
                ..ok.clone()
            },
            "learning rate 0",
        ),
        (
            Schedule {
                steps: 0,
                ..ok.clone()
            },
            "training needs steps",
        ),
    ] {
        let err = s.check(1000).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    assert!(ok
        .check(32)
        .unwrap_err()
        .to_string()
        .contains("fewer than one window of 32"));
}

#[test]
fn unigram_baseline_is_the_add_one_closed_form() {
    // Counts with add-one over a vocabulary of 4: [3, 2, 2, 1] / 8; window [0, 1, 2, 3] predicts 1, 2, 3.
    let ppl = unigram_perplexity(&[0, 0, 1, 2], 4, &[&[0, 1, 2, 3]]);
    let want = (8.0f64 / 2.0 * 8.0 / 2.0 * 8.0 / 1.0).powf(1.0 / 3.0);
    assert!((ppl - want).abs() < 1e-12, "{ppl} vs {want}");
}

fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig::from_json(
        format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": {vocab}, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 128, "tie_word_embeddings": true, "hidden_act": "silu"}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn a_tiny_model_learns_from_a_trained_tokenizer() {
    let text =
        String::from_utf8(read(&shared_dir().join("data/calib-python-tutorial.txt"))).unwrap();
    let text = &text[..60_000];
    let tok = train_bpe(&[text], 512).unwrap();
    assert_eq!(tok.vocab_size(), 512);
    let ids = tok.encode(text).unwrap();
    assert_eq!(
        tok.decode(&ids).unwrap(),
        text,
        "byte-level BPE round-trips"
    );
    assert!(
        ids.len() < text.len() / 2,
        "merges compress: {} ids",
        ids.len()
    );
    assert!(train_bpe(&["  "], 512).is_err(), "empty text is refused");
    // More entries than the text has bytes to merge is refused before the trainer reserves room for them.
    let err = train_bpe(&["abcabc"], 1_000_000_000)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("a vocabulary of 1000000000 entries cannot be learned from 6 bytes of text"),
        "{err}"
    );

    let cfg = tiny_config(512);
    let device = Default::default();
    let model =
        Llama::<Autodiff<Flex>>::load(&cfg, &RandomWeights::new(&cfg, 1, 0.02), &device).unwrap();
    let s = schedule(120, 10, 1e-2);
    let progress = Recorder::default();
    let (_, log) = pollster::block_on(train(model, &ids, &s, &device, &progress)).unwrap();
    assert_eq!(log.len(), 120);
    // Each step reports its loss and learning rate as it goes.
    let reports = progress.of("train");
    assert_eq!(reports.len(), 120);
    for (i, (done, total, message)) in reports.iter().enumerate() {
        assert_eq!((*done, *total), (i + 1, 120));
        let want = format!("loss {:.3}  lr {:.2e}", log[i].loss, log[i].lr);
        assert_eq!(*message, want);
    }
    // Small initial weights: the first loss is that of a uniform guess, ln 512.
    assert!(
        (log[0].loss - 512f64.ln()).abs() < 0.1,
        "first loss {}",
        log[0].loss
    );
    let mean = |r: std::ops::Range<usize>| {
        log[r.clone()].iter().map(|l| l.loss).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (mean(0..5), mean(110..120));
    // It learns more than token frequencies: below the unigram model's cross-entropy on the same text.
    let windows: Vec<&[u32]> = ids.chunks_exact(32).collect();
    let unigram = unigram_perplexity(&ids, 512, &windows).ln();
    assert!(
        last < unigram,
        "loss {first:.3} → {last:.3}, unigram {unigram:.3}"
    );
    eprintln!("tiny model: loss {first:.3} → {last:.3} (unigram {unigram:.3})");
}
