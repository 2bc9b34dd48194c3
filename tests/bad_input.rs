//! Bad input gets a specific error that names the problem: truncated or garbled safetensors, missing tensors,
//! shapes that disagree with the config, unsupported architectures. Never a panic, never a modified input.

mod common;

use std::collections::HashMap;

use common::*;
use prunelab::io::safetensors_ranges::RangedSafetensors;
use prunelab::io::SafetensorsWeights;
use prunelab::model::weights::check_inventory;
use prunelab::model::{Llama, ModelConfig, WeightSource};
use safetensors::tensor::TensorView;

type Cpu = prunelab::backend::Cpu;

fn load(cfg: &ModelConfig, bytes: &[u8]) -> prunelab::Result<Llama<Cpu>> {
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), bytes)], None)?;
    Llama::load(cfg, &st, &Default::default())
}

/// The fixture's safetensors rewritten through `edit` (name → (shape, values)).
fn rewrite(
    bytes: &[u8],
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>),
) -> Vec<u8> {
    let st = SafetensorsWeights::from_files(&[("m".into(), bytes)], None).unwrap();
    let mut all: HashMap<_, _> = st
        .inventory()
        .into_iter()
        .map(|(n, s)| (n.clone(), (s, st.read_f32(&n).unwrap())))
        .collect();
    edit(&mut all);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = all
        .into_iter()
        .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn truncated_file_is_named() {
    let (cfg, bytes) = fixture_files("tiny-mha");
    let err = load(&cfg, &bytes[..bytes.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("model.safetensors: invalid safetensors: truncated"),
        "{err}"
    );
    let err = load(&cfg, &bytes[..5]).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors: invalid safetensors: truncated or garbled header"),
        "{err}"
    );
}

/// A safetensors file with `header` (JSON) and `data_len` bytes of data.
fn raw(header: serde_json::Value, data_len: usize) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.resize(out.len() + data_len, 0);
    out
}

/// Both readers (memory map, byte ranges) find the same fault in a data section the tensors do not tile, and
/// name the tensor.
#[test]
fn data_the_tensors_do_not_tile_is_named() {
    use serde_json::json;
    let t = |a: u64, b: u64| json!({"dtype": "F32", "shape": [2], "data_offsets": [a, b]});
    let cases = [
        (
            json!({"a": t(0, 8), "b": t(4, 12)}),
            12,
            "tensor b: bytes [4, 12) overlap tensor a",
        ),
        (
            json!({"a": t(0, 8), "b": t(12, 20)}),
            20,
            "bytes [8, 12) between tensor a and tensor b belong to no tensor",
        ),
        (
            json!({"a": t(4, 12)}),
            12,
            "bytes [0, 4) between the header and tensor a belong to no tensor",
        ),
        (
            json!({"a": t(0, 8)}),
            10,
            "2 bytes after the last tensor belong to no tensor",
        ),
        (
            json!({"a": t(0, 8), "b": t(8, 16)}),
            12,
            "truncated: tensor b ends at byte",
        ),
        (
            json!({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}),
            8,
            "tensor a: bytes [0, 8) do not hold shape [3] of F32",
        ),
        (
            json!({"a": {"dtype": "F32", "shape": [1u64 << 62, 8], "data_offsets": [0, 8]}}),
            8,
            "do not hold shape",
        ),
    ];
    for (header, len, message) in cases {
        let bytes = raw(header, len);
        let mapped = SafetensorsWeights::from_files(&[("m.safetensors".into(), &bytes)], None)
            .err()
            .unwrap()
            .to_string();
        let ranged = RangedSafetensors::open(vec![("m.safetensors".to_string(), bytes.as_slice())])
            .err()
            .unwrap()
            .to_string();
        assert!(
            mapped.starts_with("m.safetensors: invalid safetensors: ") && mapped.contains(message),
            "{mapped}"
        );
        assert_eq!(mapped, ranged);
    }
}

#[test]
fn garbled_header_is_named() {
    let (cfg, mut bytes) = fixture_files("tiny-mha");
    bytes[8..16].copy_from_slice(b"#garbage");
    let err = load(&cfg, &bytes).unwrap_err().to_string();
    assert!(
        err.starts_with("model.safetensors: invalid safetensors: garbled header"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let (cfg, bytes) = fixture_files("tiny-mha");
    let edited = rewrite(&bytes, |t| {
        t.remove("model.layers.2.mlp.up_proj.weight");
    });
    let err = load(&cfg, &edited).unwrap_err().to_string();
    assert_eq!(
        err,
        "missing tensor model.layers.2.mlp.up_proj.weight (expected shape [160, 64]); \
         the weight files hold no tensor of that name"
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let (cfg, bytes) = fixture_files("tiny-gqa");
    let edited = rewrite(&bytes, |t| {
        t.insert(
            "model.layers.0.self_attn.q_norm.weight".into(),
            (vec![16], vec![1.0; 16]),
        );
    });
    let err = load(&cfg, &edited).unwrap_err().to_string();
    assert!(
        err.starts_with("unexpected tensor model.layers.0.self_attn.q_norm.weight with shape [16]"),
        "{err}"
    );
}

#[test]
fn shape_that_disagrees_with_config_names_both_shapes() {
    let (_, bytes) = fixture_files("tiny-mha");
    let mut v: serde_json::Value =
        serde_json::from_slice(&read(&fixture("tiny-mha").join("config.json"))).unwrap();
    v["intermediate_size"] = 150.into();
    let cfg = ModelConfig::from_json(v.to_string().as_bytes()).unwrap();
    let err = load(&cfg, &bytes).unwrap_err().to_string();
    assert_eq!(
        err,
        "tensor model.layers.0.mlp.gate_proj.weight: shape [160, 64] disagrees with the config, which implies [150, 64]"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let st_bytes = {
        let data = vec![0u8; 8];
        let view = TensorView::new(safetensors::Dtype::I64, vec![1], &data).unwrap();
        safetensors::serialize(vec![("x".to_string(), view)], None).unwrap()
    };
    let st = SafetensorsWeights::from_files(&[("m.safetensors".into(), &st_bytes)], None).unwrap();
    let err = st.read_f32("x").unwrap_err().to_string();
    assert_eq!(
        err,
        "tensor x: unsupported dtype I64 (supported: F32, F16, BF16)"
    );

    // A model weight stored as integers is refused with the inventory, before anything is read, by both
    // readers and by `inspect`.
    let (cfg, bytes) = fixture_files("tiny-mha");
    let st = SafetensorsWeights::from_files(&[("m".into(), &bytes)], None).unwrap();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .inventory()
        .into_iter()
        .map(|(n, s)| {
            let v = st.read_f32(&n).unwrap();
            (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            let dtype = match n.as_str() {
                "model.norm.weight" => safetensors::Dtype::I32,
                _ => safetensors::Dtype::F32,
            };
            (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())
        })
        .collect();
    let ints = safetensors::serialize(views, None).unwrap();
    let want = "tensor model.norm.weight: unsupported dtype I32 (supported: F32, F16, BF16)";
    let st = SafetensorsWeights::from_files(&[("m".into(), &ints)], None).unwrap();
    assert_eq!(check_inventory(&cfg, &st).unwrap_err().to_string(), want);
    let ranged = RangedSafetensors::open(vec![("m".to_string(), ints.as_slice())]).unwrap();
    assert_eq!(
        check_inventory(&cfg, &ranged).unwrap_err().to_string(),
        want
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-mha").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &ints).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prunelab"))
        .args(["inspect", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(want));
}

#[test]
fn sharded_index_must_agree_with_files() {
    let (cfg, bytes) = fixture_files("tiny-gqa");
    let (a, b) = (
        rewrite(&bytes, |t| {
            t.retain(|n, _| n.contains("layers.0") || n.contains("embed"))
        }),
        rewrite(&bytes, |t| {
            t.retain(|n, _| !(n.contains("layers.0") || n.contains("embed")))
        }),
    );
    let files = [
        ("model-00001-of-00002.safetensors".to_string(), &a[..]),
        ("model-00002-of-00002.safetensors".to_string(), &b[..]),
    ];
    let st = SafetensorsWeights::from_files(&files, None).unwrap();
    assert!(
        Llama::<Cpu>::load(&cfg, &st, &Default::default()).is_ok(),
        "two shards load as one model"
    );
    let wrong = serde_json::json!({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}});
    let err = SafetensorsWeights::from_files(&files, Some(wrong.to_string().as_bytes()))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "model-00002-of-00002.safetensors: invalid safetensors: holds model.norm.weight, which the index places in model-00001-of-00002.safetensors"
    );
}

/// A source whose tensor disagrees with its own inventory (a transposed matrix) is refused by name, not
/// reshaped.
#[test]
fn tensor_read_with_another_shape_is_refused() {
    struct Transposing<'a>(SafetensorsWeights<'a>);
    impl WeightSource for Transposing<'_> {
        fn inventory(&self) -> Vec<(String, Vec<usize>)> {
            self.0.inventory()
        }
        fn read(&self, name: &str) -> prunelab::Result<burn::tensor::TensorData> {
            let mut data = self.0.read(name)?;
            if name == "model.layers.0.mlp.down_proj.weight" {
                data.shape = data.shape.iter().rev().copied().collect();
            }
            Ok(data)
        }
    }
    let (cfg, bytes) = fixture_files("tiny-mha");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let err = Llama::<Cpu>::load(&cfg, &Transposing(st), &Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tensor model.layers.0.mlp.down_proj.weight: shape [160, 64] disagrees with the config, which implies [64, 160]"
    );
}

/// Two inventory entries under one name (a repeated name, or two spellings of one weight) are refused by
/// name rather than one of them picked.
#[test]
fn a_tensor_listed_twice_is_refused() {
    struct Twice<'a>(SafetensorsWeights<'a>);
    impl WeightSource for Twice<'_> {
        fn inventory(&self) -> Vec<(String, Vec<usize>)> {
            let mut all = self.0.inventory();
            let again = all
                .iter()
                .find(|(n, _)| n == "model.layers.1.self_attn.k_proj.weight")
                .cloned()
                .unwrap();
            all.push(again);
            all
        }
        fn read(&self, name: &str) -> prunelab::Result<burn::tensor::TensorData> {
            self.0.read(name)
        }
    }
    let (cfg, bytes) = fixture_files("tiny-mha");
    let st = SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
    let err = Llama::<Cpu>::load(&cfg, &Twice(st), &Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tensor model.layers.1.self_attn.k_proj.weight appears twice in the weights: which one is meant is \
         ambiguous"
    );
}
