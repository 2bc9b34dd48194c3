//! GGUF without the real model: dequantisation of every supported type against the `gguf` package's reference
//! dequantiser, the rotary permutation, LLaMA-3 rotary scaling as `rope_freqs`, writing and reading back uniform
//! (`llama`) and per-layer (`deci`) models, and malformed files.

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use common::*;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::io::gguf::llama::permute_rotary;
use prunelab::io::gguf::quant::{dequantize, quantize, GgmlType};
use prunelab::io::gguf::reader::Value;
use prunelab::io::gguf::{rope_freqs, GgufDtype, GgufModel, GgufWriter};
use prunelab::io::SafetensorsWeights;
use prunelab::model::config::{LayerShape, Llama3Scaling, RopeConfig, RopeScaling, YarnScaling};
use prunelab::model::{Llama, ModelConfig, WeightSource};
use prunelab::readback::to_vec;

type Cpu = prunelab::backend::Cpu;

fn data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gguf")
}

#[test]
fn dequantisation_matches_the_gguf_package() {
    let bytes = read(&data_dir().join("dequant_golden.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let types = [
        ("F32", GgmlType::F32),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q2_K", GgmlType::Q2_K),
        ("Q3_K", GgmlType::Q3_K),
        ("Q4_K", GgmlType::Q4_K),
        ("Q5_K", GgmlType::Q5_K),
        ("Q6_K", GgmlType::Q6_K),
        ("IQ4_NL", GgmlType::IQ4_NL),
    ];
    for (name, t) in types {
        let raw = st.tensor(&format!("{name}.raw")).unwrap();
        let want: Vec<f32> = st
            .tensor(&format!("{name}.f32"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let got = dequantize(t, raw.data());
        assert_eq!(got.len(), want.len(), "{name}");
        let diff = max_abs_diff(&got, &want);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= scale * 1e-6,
            "{name}: off by {diff} (values up to {scale})"
        );
    }
}

#[test]
fn q8_0_quantisation_error_is_bounded() {
    let values: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let back = dequantize(GgmlType::Q8_0, &quantize(GgmlType::Q8_0, &values));
    for (block, orig) in back.chunks(32).zip(values.chunks(32)) {
        let step = orig.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        // Half a step of rounding, plus the f16 rounding of the scale (relative 2⁻¹¹) times |q| ≤ 127.
        let bound = step * (0.5 + 127.0 / 2048.0);
        assert!(
            max_abs_diff(block, orig) <= bound,
            "Q8_0 error beyond half a step"
        );
    }
}

#[test]
fn rotary_permutation_interleaves_halves_and_inverts() {
    // One head of dim 4, two columns: HF rows [a0, a1, b0, b1] → GGUF rows [a0, b0, a1, b1].
    let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
    let gguf = permute_rotary(&hf, 2, 4, true);
    assert_eq!(gguf, vec![0., 1., 4., 5., 2., 3., 6., 7.]);
    assert_eq!(permute_rotary(&gguf, 2, 4, false), hf);
}

/// Writes `cfg` with the weights of `src` as a GGUF file in memory.
fn write_gguf(cfg: &ModelConfig, src: &dyn WeightSource, extra: &[(String, Value)]) -> Vec<u8> {
    let w = GgufWriter::new(cfg, extra, GgufDtype::F32).unwrap();
    let mut out = w.header().to_vec();
    for i in 0..w.tensors.len() {
        out.extend(w.tensor(i, src).unwrap());
    }
    out
}

fn logits<B: Backend>(model: &Llama<B>) -> Vec<f32> {
    let golden = golden_json("tiny-gqa");
    let probe = id_windows(&golden["probe_input_ids"]);
    let refs: Vec<&[u32]> = probe.iter().map(|w| w.as_slice()).collect();
    pollster::block_on(to_vec(
        model.forward(batch_tensor::<B>(&refs, &Default::default())),
    ))
    .unwrap()
}

#[test]
fn uniform_model_round_trips_as_llama_with_identical_logits() {
    for name in ["tiny-mha", "tiny-gqa"] {
        let (cfg, bytes) = fixture_files(name);
        let st =
            SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
        let gguf = write_gguf(&cfg, &st, &[]);
        let back = GgufModel::parse(&gguf).unwrap();
        assert_eq!(back.architecture, "llama");
        assert_eq!(back.config.layers, cfg.layers);
        assert_eq!(back.config.tie_word_embeddings, cfg.tie_word_embeddings);
        assert_eq!(back.config.rope, cfg.rope);
        for (n, _) in st.inventory() {
            assert_eq!(
                back.read_f32(&n).unwrap(),
                st.read_f32(&n).unwrap(),
                "{name}: {n}"
            );
        }
        let a = Llama::<Cpu>::load(&cfg, &st, &Default::default()).unwrap();
        let b = Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap();
        assert_eq!(logits(&a), logits(&b), "{name}");
    }
}

#[test]
fn llama3_rotary_scaling_travels_as_rope_freqs() {
    // The factors llama.cpp's converter writes for two LLaMA-3.x releases (tests/data/gguf/
    // make_rope_freqs_golden.py), and the scalings read back from them.
    let golden: serde_json::Value =
        serde_json::from_slice(&read(&data_dir().join("rope_freqs_golden.json"))).unwrap();
    for (release, case) in golden.as_object().unwrap() {
        let p = &case["params"];
        let f = |k: &str| p[k].as_f64().unwrap();
        let rope = RopeConfig {
            theta: f("base"),
            scaling: Some(RopeScaling::Llama3(Llama3Scaling {
                factor: f("factor"),
                low_freq_factor: f("low_freq_factor"),
                high_freq_factor: f("high_freq_factor"),
                original_max_position_embeddings: f("old_context_len") as usize,
            })),
        };
        let dim = f("dim") as usize;
        let want: Vec<f32> = serde_json::from_value(case["rope_freqs"].clone()).unwrap();
        let ours = rope_freqs::factors(&rope, dim);
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 2.5e-7 * b,
                "{release} factor {i}: {a} vs {b}"
            );
        }
        assert_eq!(
            rope_freqs::scaling_from_factors(&want, rope.theta, dim).unwrap(),
            rope.llama3(),
            "{release}"
        );
    }

    // A fixture with LLaMA-3 scaling (three of its eight frequencies, wavelengths 112, 471 and 1987,
    // interpolated) goes to GGUF and back with the same scaling and the same logits, which the scaling changes.
    let (plain, bytes) = fixture_files("tiny-gqa");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let mut cfg = plain.clone();
    cfg.rope.scaling = Some(RopeScaling::Llama3(llama3(8.0, 32.0, 2048)));
    let gguf = write_gguf(&cfg, &st, &[]);
    let back = GgufModel::parse(&gguf).unwrap();
    assert_eq!(back.config.rope, cfg.rope);
    let stored = back.file.tensor(rope_freqs::NAME).unwrap();
    assert_eq!(stored.shape(), vec![8]);
    assert_eq!(
        back.file.read_f32(stored).unwrap(),
        rope_freqs::factors(&cfg.rope, 16)
    );
    assert!(back.inventory().iter().all(|(n, _)| n != rope_freqs::NAME));
    let scaled = logits(&Llama::<Cpu>::load(&cfg, &st, &Default::default()).unwrap());
    let unscaled = logits(&Llama::<Cpu>::load(&plain, &st, &Default::default()).unwrap());
    let read = logits(&Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap());
    assert_eq!(read, scaled);
    assert!(max_abs_diff(&scaled, &unscaled) > 1e-3);
    // Its HF config says the same.
    let hf = serde_json::to_vec(&back.config.to_hf_json(None)).unwrap();
    assert_eq!(ModelConfig::from_json(&hf).unwrap().rope, cfg.rope);

    // A scaling whose factors would not read back (wavelengths 2% apart leave no band 1% wide between kept
    // and scaled ones) is refused before anything is written.
    let mut crowded = cfg.clone();
    crowded.head_dim = 64;
    crowded.rope = RopeConfig {
        theta: 2.0,
        scaling: Some(RopeScaling::Llama3(llama3(8.0, 1.01, 7))),
    };
    let err = GgufWriter::new(&crowded, &[], GgufDtype::F32)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("rope_scaling") && err.contains("its GGUF factors would not read back"),
        "{err}"
    );

    // Garbled: factors no LLaMA-3 scaling gives (the tensor's data comes first), or a shape other than
    // [head_dim / 2] (its one dimension follows its name and dimension count).
    let header = GgufWriter::new(&cfg, &[], GgufDtype::F32)
        .unwrap()
        .header()
        .len();
    let mut shuffled = gguf.clone();
    shuffled[header..header + 4].copy_from_slice(&8f32.to_le_bytes());
    let err = parse_err(&shuffled);
    assert!(
        err.starts_with("GGUF: rope_freqs.weight: the factors [8.0, 1.0, 1.628")
            && err.contains("follow no LLaMA-3 rotary scaling"),
        "{err}"
    );
    let mut short = gguf.clone();
    let dim = type_field_offset(&gguf, rope_freqs::NAME) - 8;
    short[dim..dim + 8].copy_from_slice(&4u64.to_le_bytes());
    let err = parse_err(&short);
    assert_eq!(
        err,
        "GGUF: rope_freqs.weight has shape [4], expected [8] (head_dim / 2)"
    );
}

#[test]
fn linear_rotary_scaling_travels_as_metadata() {
    let (plain, bytes) = fixture_files("tiny-gqa");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let mut cfg = plain.clone();
    cfg.rope.scaling = Some(RopeScaling::Linear { factor: 4.0 });
    // Linear scaling divides every frequency: LLaMA-3 scaling whose band lies below the shortest wavelength
    // (2π > L / low = 1) does the same, through its own code path.
    let mut every = plain.clone();
    every.rope.scaling = Some(RopeScaling::Llama3(llama3(4.0, 2.0, 1)));
    let scaled = logits(&Llama::<Cpu>::load(&cfg, &st, &Default::default()).unwrap());
    let unscaled = logits(&Llama::<Cpu>::load(&plain, &st, &Default::default()).unwrap());
    let same = logits(&Llama::<Cpu>::load(&every, &st, &Default::default()).unwrap());
    assert_eq!(scaled, same);
    assert!(max_abs_diff(&scaled, &unscaled) > 1e-3);

    // To GGUF as llama.cpp's converter writes it, and back with the same scaling and logits.
    let gguf = write_gguf(&cfg, &st, &[]);
    let back = GgufModel::parse(&gguf).unwrap();
    assert_eq!(back.config.rope, cfg.rope);
    assert_eq!(
        back.file.get("llama.rope.scaling.type"),
        Some(&Value::String("linear".into()))
    );
    assert_eq!(
        back.file.get("llama.rope.scaling.factor"),
        Some(&Value::F32(4.0))
    );
    assert!(back.file.tensor(rope_freqs::NAME).is_none());
    let read = logits(&Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap());
    assert_eq!(read, scaled);
    let hf = serde_json::to_vec(&back.config.to_hf_json(None)).unwrap();
    assert_eq!(ModelConfig::from_json(&hf).unwrap().rope, cfg.rope);
    // A factor f32 cannot hold comes back as the decimal it was (1.3, not 1.2999999523).
    let mut odd = cfg.clone();
    odd.rope.scaling = Some(RopeScaling::Linear { factor: 1.3 });
    let odd_gguf = write_gguf(&odd, &st, &[]);
    assert_eq!(GgufModel::parse(&odd_gguf).unwrap().config.rope, odd.rope);
    // A factor f32 cannot hold would be written as 0 (none) or infinity: refused before anything is written.
    for factor in [1e-50, 1e40] {
        odd.rope.scaling = Some(RopeScaling::Linear { factor });
        let err = GgufWriter::new(&odd, &[], GgufDtype::F32)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&format!("rope_scaling = linear factor {factor}"))
                && err.contains("GGUF stores the factor as an f32, which cannot hold it"),
            "{err}"
        );
    }

    // llama.cpp's older key, llama.cpp's reading of a factor under type "none", and refusals.
    const PLACEHOLDER: &str = "general.xxxxxxxxxxxxxxx";
    let plain_gguf = |key: &str, value: Value| {
        renamed(
            write_gguf(&plain, &st, &[(PLACEHOLDER.into(), value)]),
            PLACEHOLDER,
            key,
        )
    };
    let old = plain_gguf("llama.rope.scale_linear", Value::F32(4.0));
    assert_eq!(GgufModel::parse(&old).unwrap().config.rope, cfg.rope);
    let one = plain_gguf("llama.rope.scale_linear", Value::F32(1.0));
    assert_eq!(GgufModel::parse(&one).unwrap().config.rope, plain.rope);
    let err = parse_err(&plain_gguf("llama.rope.scale_linear", Value::F32(-2.0)));
    assert_eq!(
        err,
        "GGUF: llama.rope.scale_linear is F32(-2.0), not a finite number ≥ 0"
    );
    let err = parse_err(&plain_gguf(
        "llama.rope.scaling.type",
        Value::String("longrope".into()),
    ));
    assert!(
        err.contains("unsupported llama.rope.scaling.type = longrope"),
        "{err}"
    );
    // Type "none": llama.cpp ignores the factor.
    let (kind, factor) = ("llama.rope.scaling.type", "llama.rope.scaling.factor");
    let none = write_gguf(
        &plain,
        &st,
        &[
            (placeholder(kind, 'a'), Value::String("none".into())),
            (placeholder(factor, 'b'), Value::F32(4.0)),
        ],
    );
    let none = renamed(
        renamed(none, &placeholder(kind, 'a'), kind),
        &placeholder(factor, 'b'),
        factor,
    );
    assert_eq!(GgufModel::parse(&none).unwrap().config.rope, plain.rope);
    // Both kinds at once (llama.cpp would apply both) are refused.
    let mut l3 = plain.clone();
    l3.rope.scaling = every.rope.scaling;
    let both = renamed(
        write_gguf(&l3, &st, &[(PLACEHOLDER.into(), Value::F32(2.0))]),
        PLACEHOLDER,
        "llama.rope.scale_linear",
    );
    let err = parse_err(&both);
    assert!(
        err.contains("unsupported llama.rope.scale_linear = linear scaling, factor 2 beside rope_freqs.weight")
            && err.contains("scaling on top of per-frequency factors is not supported"),
        "{err}"
    );
}

/// YaRN travels as llama.cpp reads it for llama: type, factor, original length, and the attention factor
/// beyond the default `mscale(factor)` as `attn_factor`. What llama.cpp cannot compute (other betas, untruncated
/// bounds, dynamic NTK) is refused before anything is written.
#[test]
fn yarn_rotary_scaling_travels_as_metadata() {
    let (plain, bytes) = fixture_files("tiny-gqa");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let yarn = YarnScaling {
        factor: 4.0,
        original_max_position_embeddings: 64,
        beta_fast: 32.0,
        beta_slow: 1.0,
        truncate: true,
        attention_factor: YarnScaling::mscale(4.0, 1.0),
    };
    let mut cfg = plain.clone();
    cfg.rope.scaling = Some(RopeScaling::Yarn(yarn));
    let scaled = logits(&Llama::<Cpu>::load(&cfg, &st, &Default::default()).unwrap());
    let unscaled = logits(&Llama::<Cpu>::load(&plain, &st, &Default::default()).unwrap());
    assert!(max_abs_diff(&scaled, &unscaled) > 1e-3);

    let gguf = write_gguf(&cfg, &st, &[]);
    let back = GgufModel::parse(&gguf).unwrap();
    let key = |k: &str| back.file.get(&format!("llama.rope.scaling.{k}")).cloned();
    assert_eq!(key("type"), Some(Value::String("yarn".into())));
    assert_eq!(key("factor"), Some(Value::F32(4.0)));
    assert_eq!(key("original_context_length"), Some(Value::U32(64)));
    assert_eq!(key("attn_factor"), None);
    assert_eq!(back.config.rope, cfg.rope);
    let read = logits(&Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap());
    assert_eq!(read, scaled);

    // An attention factor of its own: the part beyond mscale(factor), as an f32.
    let mut own = cfg.clone();
    own.rope.scaling = Some(RopeScaling::Yarn(YarnScaling {
        attention_factor: 1.25,
        ..yarn
    }));
    let own_gguf = write_gguf(&own, &st, &[]);
    let back = GgufModel::parse(&own_gguf).unwrap();
    let stored = back.file.get("llama.rope.scaling.attn_factor").cloned();
    assert_eq!(
        stored,
        Some(Value::F32((1.25 / yarn.attention_factor) as f32))
    );
    let got = back.config.rope.yarn().unwrap();
    assert!((got.attention_factor - 1.25).abs() < 1e-7, "{got:?}");
    assert_eq!(
        YarnScaling {
            attention_factor: 1.25,
            ..got
        },
        YarnScaling {
            attention_factor: 1.25,
            ..yarn
        }
    );

    // Without original_context_length llama.cpp uses context_length.
    let original = "llama.rope.scaling.original_context_length";
    let no_original = renamed(
        write_gguf(&cfg, &st, &[]),
        original,
        &placeholder(original, 'o'),
    );
    let got = GgufModel::parse(&no_original)
        .unwrap()
        .config
        .rope
        .yarn()
        .unwrap();
    assert_eq!(
        got.original_max_position_embeddings,
        plain.max_position_embeddings
    );

    // YaRN with factor 1 and the default attention factor computes the plain frequencies; it still comes back.
    let mut one = cfg.clone();
    one.rope.scaling = Some(RopeScaling::Yarn(YarnScaling {
        factor: 1.0,
        attention_factor: 1.0,
        ..yarn
    }));
    let one_gguf = write_gguf(&one, &st, &[]);
    assert_eq!(GgufModel::parse(&one_gguf).unwrap().config.rope, one.rope);

    // Refused by the writer, naming what llama.cpp lacks.
    let refusals = [
        (
            RopeScaling::Yarn(YarnScaling {
                beta_fast: 16.0,
                ..yarn
            }),
            "llama.cpp's YaRN for llama models fixes beta_fast 32, beta_slow 1 and truncate true",
        ),
        (
            RopeScaling::Yarn(YarnScaling {
                truncate: false,
                ..yarn
            }),
            "fixes beta_fast 32, beta_slow 1 and truncate true",
        ),
        (
            // One position: the bounds cross (low 0, high −1), where transformers' ramp runs backwards.
            RopeScaling::Yarn(YarnScaling {
                original_max_position_embeddings: 1,
                ..yarn
            }),
            "its correction bounds cross (0 > -1",
        ),
        (
            RopeScaling::Dynamic {
                factor: 2.0,
                max_position_embeddings: 256,
            },
            "unsupported rope_scaling = dynamic NTK scaling, factor 2: llama.cpp has no dynamic-NTK scaling",
        ),
    ];
    for (scaling, message) in refusals {
        let mut c = plain.clone();
        c.rope.scaling = Some(scaling);
        let err = GgufWriter::new(&c, &[], GgufDtype::F32)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(message), "{err}");
    }

    // Refused by the reader: an attention factor without YaRN, YaRN on top of rope_freqs.
    let attn_key = "llama.rope.scaling.attn_factor";
    let attn = write_gguf(
        &plain,
        &st,
        &[(placeholder(attn_key, 'x'), Value::F32(1.5))],
    );
    let attn = renamed(attn, &placeholder(attn_key, 'x'), attn_key);
    let err = parse_err(&attn);
    assert!(
        err.contains("unsupported llama.rope.scaling.attn_factor = 1.5: an attention factor is read with YaRN scaling only"),
        "{err}"
    );
    let mut l3 = plain.clone();
    l3.rope.scaling = Some(RopeScaling::Llama3(llama3(4.0, 2.0, 1)));
    let (kind, factor) = ("llama.rope.scaling.type", "llama.rope.scaling.factor");
    let extra = [
        (placeholder(kind, 'a'), Value::String("yarn".into())),
        (placeholder(factor, 'b'), Value::F32(2.0)),
    ];
    let both = write_gguf(&l3, &st, &extra);
    let both = renamed(
        renamed(both, &placeholder(kind, 'a'), kind),
        &placeholder(factor, 'b'),
        factor,
    );
    let err = parse_err(&both);
    assert!(
        err.contains("llama.rope.scaling.factor = yarn scaling, factor 2, from 256 positions")
            && err.contains("beside rope_freqs.weight"),
        "{err}"
    );
}

/// Tensors held in memory: (HF name, shape, values).
struct Held(Vec<(String, Vec<usize>, Vec<f32>)>);

impl WeightSource for Held {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        self.0
            .iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect()
    }
    fn read(&self, name: &str) -> prunelab::Result<TensorData> {
        let (_, shape, v) = self.0.iter().find(|(n, _, _)| n == name).unwrap();
        Ok(TensorData::new(v.clone(), shape.clone()))
    }
}

/// llama.cpp writes `qwen2` files with q/k rows as HF has them (it rotates halves, as HF does); they are read
/// without undoing a permutation, as a model with q/k/v biases. The file here is ours with the architecture
/// renamed and q/k rows pre-permuted so that the writer's permutation cancels.
#[test]
fn qwen2_files_are_read_without_the_rotary_permutation() {
    let (fixture_cfg, bytes) = fixture_files("tiny-gqa");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let mut cfg = fixture_cfg.clone();
    (cfg.model_type, cfg.qkv_bias) = ("qwen2".into(), true);
    let mut tensors: Vec<_> = st
        .inventory()
        .into_iter()
        .map(|(n, shape)| (n.clone(), shape, st.read_f32(&n).unwrap()))
        .collect();
    let hd = cfg.head_dim;
    for (l, shape) in cfg.layers.iter().enumerate() {
        for (proj, rows) in [
            ("q", shape.num_heads * hd),
            ("k", shape.num_kv_heads * hd),
            ("v", shape.num_kv_heads * hd),
        ] {
            let bias = (0..rows)
                .map(|i| ((i * 7 + l * 3) % 11) as f32 * 0.05 - 0.25)
                .collect();
            tensors.push((
                format!("model.layers.{l}.self_attn.{proj}_proj.bias"),
                vec![rows],
                bias,
            ));
        }
    }
    let hf = Held(tensors);
    let with_biases = logits(&Llama::<Cpu>::load(&cfg, &hf, &Default::default()).unwrap());
    let without = logits(&Llama::<Cpu>::load(&fixture_cfg, &st, &Default::default()).unwrap());
    assert!(max_abs_diff(&with_biases, &without) > 1e-3);

    let qwen2_file = |cfg: &ModelConfig, src: &Held| {
        let unpermuted = Held(
            src.0
                .iter()
                .map(|(n, shape, v)| {
                    let rotary = n.contains("self_attn.q_proj") || n.contains("self_attn.k_proj");
                    let cols = if shape.len() == 2 { shape[1] } else { 1 };
                    let v = if rotary {
                        permute_rotary(v, cols, hd, false)
                    } else {
                        v.clone()
                    };
                    (n.clone(), shape.clone(), v)
                })
                .collect(),
        );
        let mut file = write_gguf(cfg, &unpermuted, &[]);
        let header = GgufWriter::new(cfg, &[], GgufDtype::F32)
            .unwrap()
            .header()
            .len();
        let value = b"general.architecture".len() + 4 + 8; // the key, its type, the string's length
        let mut at = 0;
        while let Some(i) = file[at..header].windows(6).position(|w| w == b"llama.") {
            file[at + i..at + i + 6].copy_from_slice(b"qwen2.");
            at += i + 6;
        }
        let arch = file
            .windows(20)
            .position(|w| w == b"general.architecture")
            .unwrap()
            + value;
        assert_eq!(&file[arch..arch + 5], b"llama");
        file[arch..arch + 5].copy_from_slice(b"qwen2");
        file
    };
    let file = qwen2_file(&cfg, &hf);
    let back = GgufModel::parse(&file).unwrap();
    assert_eq!(back.architecture, "qwen2");
    assert_eq!(
        (
            back.config.model_type.as_str(),
            back.config.qkv_bias,
            back.config.o_bias,
            &back.config.layers
        ),
        ("qwen2", true, false, &cfg.layers)
    );
    for (n, _) in hf.inventory() {
        assert_eq!(back.read_f32(&n).unwrap(), hf.read_f32(&n).unwrap(), "{n}");
    }
    let read = logits(&Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap());
    assert_eq!(read, with_biases);

    // Written back, it is a `llama` file (q/k permuted again, biases too) with the same logits.
    let again = write_gguf(&back.config, &back, &[]);
    let again = GgufModel::parse(&again).unwrap();
    assert_eq!(again.architecture, "llama");
    let read = logits(&Llama::<Cpu>::load(&again.config, &again, &Default::default()).unwrap());
    assert_eq!(read, with_biases);

    // A qwen2 file without biases is not Qwen2.
    let plain = Held(
        hf.0.into_iter()
            .filter(|(n, _, _)| !n.ends_with("proj.bias"))
            .collect(),
    );
    let err = parse_err(&qwen2_file(&fixture_cfg, &plain));
    assert_eq!(
        err,
        "GGUF: a qwen2 file without blk.0.attn_q.bias: Qwen2 has q/k/v biases"
    );
}

/// A fixture with per-layer widths: layer 1 keeps the first KV group and half the MLP, by slicing.
struct Sliced<'a> {
    inner: &'a SafetensorsWeights<'a>,
    cfg: ModelConfig,
}

impl WeightSource for Sliced<'_> {
    fn inventory(&self) -> Vec<(String, Vec<usize>)> {
        prunelab::model::tensors::tensor_specs(&self.cfg)
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect()
    }
    fn read(&self, name: &str) -> prunelab::Result<TensorData> {
        let full = self.inner.read_f32(name)?;
        let shape = self
            .inventory()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1;
        let cols_full = if name.contains("o_proj") {
            96
        } else if name.contains("down_proj") {
            192
        } else {
            *shape.last().unwrap()
        };
        let rows = shape[0];
        let cols = *shape.last().unwrap();
        let values: Vec<f32> = match shape.len() {
            1 => full[..rows].to_vec(),
            _ => (0..rows)
                .flat_map(|r| full[r * cols_full..r * cols_full + cols].to_vec())
                .collect(),
        };
        Ok(TensorData::new(values, shape))
    }
}

#[test]
fn per_layer_model_round_trips_as_deci_with_arrays() {
    let (mut cfg, bytes) = fixture_files("tiny-gqa");
    cfg.layers[1] = LayerShape {
        num_heads: 3,
        num_kv_heads: 1,
        intermediate_size: 96,
    };
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let src = Sliced {
        inner: &st,
        cfg: cfg.clone(),
    };
    let gguf = write_gguf(&cfg, &src, &[]);
    let back = GgufModel::parse(&gguf).unwrap();
    assert_eq!(back.architecture, "deci");
    assert_eq!(
        back.file.get("deci.feed_forward_length"),
        Some(&Value::Array(
            [192, 96, 192, 192].iter().map(|&v| Value::I32(v)).collect()
        ))
    );
    assert_eq!(
        back.file.get("deci.attention.head_count_kv"),
        Some(&Value::Array(
            [2, 1, 2, 2].iter().map(|&v| Value::I32(v)).collect()
        ))
    );
    assert_eq!(back.config.layers, cfg.layers);
    let a = Llama::<Cpu>::load(&cfg, &src, &Default::default()).unwrap();
    let b = Llama::<Cpu>::load(&back.config, &back, &Default::default()).unwrap();
    assert_eq!(logits(&a), logits(&b));
}

fn valid_gguf() -> Vec<u8> {
    let (cfg, bytes) = fixture_files("tiny-mha");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    write_gguf(
        &cfg,
        &st,
        &[("general.name".into(), Value::String("tiny".into()))],
    )
}

/// A `general.` key as long as `key`, made of `c`, to be [`renamed`] to it once written.
fn placeholder(key: &str, c: char) -> String {
    format!("general.{}", c.to_string().repeat(key.len() - 8))
}

/// `file` with the metadata key `from` renamed `to` (of the same length) in its bytes: the writer keeps
/// architecture keys to itself, so a test writes another key and renames it.
fn renamed(mut file: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = file
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    file[at..at + to.len()].copy_from_slice(to.as_bytes());
    file
}

fn parse_err(bytes: &[u8]) -> String {
    GgufModel::parse(bytes)
        .err()
        .expect("malformed input is refused")
        .to_string()
}

/// Byte offset of a tensor info's type field (the u32 after its dims) in the header.
fn type_field_offset(bytes: &[u8], tensor: &str) -> usize {
    let needle = [
        (tensor.len() as u64).to_le_bytes().to_vec(),
        tensor.as_bytes().to_vec(),
    ]
    .concat();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

#[test]
fn malformed_files_get_specific_errors() {
    let good = valid_gguf();
    assert!(GgufModel::parse(&good).is_ok());

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    assert!(parse_err(&bad).starts_with("GGUF: bad magic [71, 71, 77, 76]: not a GGUF file"));

    let err = parse_err(&good[..good.len() - 100]);
    assert!(
        err.contains("lies past the end of the file") && err.contains("truncated?"),
        "{err}"
    );

    let err = parse_err(&good[..200]);
    assert!(err.starts_with("GGUF: truncated:"), "{err}");

    let mut bad = good.clone();
    let at = type_field_offset(&bad, "blk.0.attn_q.weight");
    bad[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(parse_err(&bad)
        .starts_with("GGUF: tensor blk.0.attn_q.weight: unknown or unsupported tensor type 99"));

    let mut bad = good.clone();
    let at = type_field_offset(&bad, "output.weight") + 4;
    bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = parse_err(&bad);
    assert!(
        err.starts_with("GGUF: tensor output.weight: data [") && err.contains("past the end"),
        "{err}"
    );

    // One tensor name twice: which one is meant is ambiguous. Layer numbers have one spelling only.
    let bad = renamed(good.clone(), "blk.1.attn_q.weight", "blk.0.attn_q.weight");
    assert_eq!(
        parse_err(&bad),
        "GGUF: tensor blk.0.attn_q.weight appears twice"
    );
    use prunelab::io::gguf::llama::hf_name;
    assert_eq!(
        hf_name("blk.10.attn_q.weight").as_deref(),
        Some("model.layers.10.self_attn.q_proj.weight")
    );
    for other in [
        "blk.00.attn_q.weight",
        "blk.+0.attn_q.weight",
        "blk.-0.attn_q.weight",
    ] {
        assert_eq!(hf_name(other), None, "{other}");
    }

    let mut bad = good.clone();
    let key = b"llama.block_count";
    let at = bad.windows(key.len()).position(|w| w == key).unwrap();
    bad[at..at + key.len()].copy_from_slice(b"llama.block_cXunt");
    assert_eq!(parse_err(&bad), "GGUF: missing metadata llama.block_count");

    // The value after the key's type: a layer count no model has is refused before anything per layer exists.
    let value_at = at + key.len() + 4;
    let mut bad = good.clone();
    bad[value_at..value_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = parse_err(&bad);
    assert!(
        err.contains("field llama.block_count: is 4294967295, beyond any model"),
        "{err}"
    );
    // The same four bytes typed F32: present, but not a count.
    let mut bad = good.clone();
    bad[value_at - 4..value_at].copy_from_slice(&6u32.to_le_bytes());
    let err = parse_err(&bad);
    assert!(
        err.starts_with("GGUF: llama.block_count = F32(") && err.ends_with("is not a count"),
        "{err}"
    );
}

#[test]
fn metadata_a_model_cannot_have_is_refused() {
    let (cfg, bytes) = fixture_files("tiny-mha");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let with = |key: &str, value: Value| write_gguf(&cfg, &st, &[(key.into(), value)]);

    let moe = renamed(
        with("general.xxxxxxxxxx", Value::U32(8)),
        "general.xxxxxxxxxx",
        "llama.expert_count",
    );
    let err = parse_err(&moe);
    assert!(
        err.contains("unsupported llama.expert_count = U32(8)"),
        "{err}"
    );
    let dense = renamed(
        with("general.xxxxxxxxxx", Value::U32(0)),
        "general.xxxxxxxxxx",
        "llama.expert_count",
    );
    assert!(GgufModel::parse(&dense).is_ok());

    // Arrays nest at most four deep: a crafted file cannot exhaust the stack.
    let nested = |depth: usize| (0..depth).fold(Value::U8(1), |inner, _| Value::Array(vec![inner]));
    assert!(GgufModel::parse(&with("general.nested", nested(4))).is_ok());
    let err = parse_err(&with("general.nested", nested(5)));
    assert!(
        err.contains("metadata general.nested: arrays nested more than 4 deep"),
        "{err}"
    );

    // Zero query heads make no layer (the value follows the key and its u32 type).
    let mut bad = valid_gguf();
    let key = b"llama.attention.head_count";
    let at = bad.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    bad[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    let err = parse_err(&bad);
    assert!(
        err.contains("layer 0 heads: 0 query heads cannot be shared evenly"),
        "{err}"
    );
}

#[test]
fn gguf_end_tokens_and_chat_template_become_hf_side_files() {
    use prunelab::io::side_files::{hf_side_files, stop_ids};
    let tokenizer = serde_json::json!({
        "added_tokens": [{"id": 7, "content": "<|eot|>", "special": true}],
        "model": {"vocab": {"<s>": 1, "</s>": 2, "a": 3}},
    });
    let id = |k: &str, v: u32| (format!("tokenizer.ggml.{k}_token_id"), Value::U32(v));
    let mut meta = vec![id("bos", 1), id("eos", 2)];
    // EOS alone, no template: transformers needs nothing beyond config.json.
    assert!(hf_side_files(&meta, Some(&tokenizer)).is_empty());
    meta.push(id("eot", 7));
    meta.push((
        "tokenizer.chat_template".into(),
        Value::String("{{ x }}".into()),
    ));
    let files = hf_side_files(&meta, Some(&tokenizer));
    let json = |name: &str| -> serde_json::Value {
        let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
        serde_json::from_slice(bytes).unwrap()
    };
    assert_eq!(files.len(), 2);
    assert_eq!(
        json("tokenizer_config.json"),
        serde_json::json!({"chat_template": "{{ x }}", "bos_token": "<s>", "eos_token": "</s>"})
    );
    assert_eq!(
        json("generation_config.json"),
        serde_json::json!({"eos_token_id": [2, 7], "bos_token_id": 1})
    );
    // Generation stops at every end token, with the EOS the config was read with first.
    let (mut cfg, _) = fixture_files("tiny-gqa");
    cfg.eos_token_id = Some(2);
    assert_eq!(stop_ids(&cfg, None, &files).unwrap(), vec![2, 7]);
    // An end-of-turn token without an end-of-sequence one still ends a text.
    let eot_only = vec![id("bos", 1), id("eot", 7)];
    let files = hf_side_files(&eot_only, Some(&tokenizer));
    assert_eq!(files.len(), 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&files[0].1).unwrap(),
        serde_json::json!({"eos_token_id": [7], "bos_token_id": 1})
    );
    cfg.eos_token_id = None;
    assert_eq!(stop_ids(&cfg, None, &files).unwrap(), vec![7]);
    // An HF folder: every id of config.json's list and of generation_config.json's, once each.
    let config_json = serde_json::json!({"eos_token_id": [2, 5]});
    let generation = vec![(
        "generation_config.json".to_string(),
        br#"{"eos_token_id": [5, 9]}"#.to_vec(),
    )];
    cfg.eos_token_id = Some(2);
    assert_eq!(
        stop_ids(&cfg, Some(&config_json), &generation).unwrap(),
        vec![2, 5, 9]
    );
}
