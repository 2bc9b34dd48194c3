//! The real model (SmolLM2-135M-Instruct from its GGUF; `models/smollm2/fetch` must have run — `scripts/test`
//! runs it): tokenizer from GGUF metadata, dense logits and perplexity against the reference, GGUF → HF → GGUF
//! round trip, the GGUF read by byte ranges (as the page reads a `File`), our GGUF read by the `gguf` Python
//! package, pruning runs against the reference, depth pruning with its repair, and the FAQ task's
//! multiple-choice scores against lm-evaluation-harness's own.

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use prunelab::eval::perplexity::{batch_tensor, perplexity, PerplexityOptions};
use prunelab::io::gguf::reader::Value;
use prunelab::io::gguf::tokenizer::tokenizer;
use prunelab::io::gguf::GgufModel;
use prunelab::io::ranges::ByteRanges;
use prunelab::io::SafetensorsWeights;
use prunelab::model::{Llama, WeightSource};
use prunelab::progress::Silent;
use prunelab::readback::to_vec;

type Cpu = prunelab::backend::Cpu;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn gguf_bytes() -> memmap2::Mmap {
    let path = models().join("smollm2-135m.gguf");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} — run models/smollm2/fetch first", path.display()));
    unsafe { memmap2::Mmap::map(&file) }.unwrap()
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&read(&shared_dir().join("reference/smollm2-135m.json"))).unwrap()
}

fn eval_text() -> String {
    String::from_utf8(read(&shared_dir().join("data/eval-python-faq.txt"))).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_from_gguf_matches_reference_counts() {
    let bytes = gguf_bytes();
    let model = GgufModel::parse(&bytes).unwrap();
    let tok = tokenizer(&model.file).unwrap();
    let r = reference();
    let got = tok.encode(&eval_text()).unwrap();
    assert_eq!(
        got.len() as u64,
        reference()["tokenizer"]["eval_text_tokens"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        got[..32],
        ids(&r["tokenizer"]["eval_text_first_32_ids"])[..]
    );
    let calib =
        String::from_utf8(read(&shared_dir().join("data/calib-python-tutorial.txt"))).unwrap();
    assert_eq!(
        tok.encode(&calib).unwrap().len() as u64,
        r["tokenizer"]["calib_text_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        tok.encode(r["dense"]["probe"]["text"].as_str().unwrap())
            .unwrap(),
        ids(&r["dense"]["probe"]["input_ids"])
    );
}

#[test]
fn dense_probe_and_perplexity_match_reference() {
    let bytes = gguf_bytes();
    let gguf = GgufModel::parse(&bytes).unwrap();
    let device = Default::default();
    let model = Llama::<Cpu>::load(&gguf.config, &gguf, &device).unwrap();
    let r = reference();
    let probe = ids(&r["dense"]["probe"]["input_ids"]);
    let logits = pollster::block_on(to_vec(
        model.forward(batch_tensor::<Cpu>(&[&probe], &device)),
    ))
    .unwrap();
    let vocab = gguf.config.vocab_size;
    let last = &logits[(probe.len() - 1) * vocab..];
    let mut order: Vec<usize> = (0..vocab).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    let top5: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
    assert_eq!(top5, ids(&r["dense"]["probe"]["last_position_top5_ids"]));
    for (i, want) in r["dense"]["probe"]["last_position_top5_logits"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let got = last[order[i]] as f64;
        assert!(
            (got - want.as_f64().unwrap()).abs() < 0.05,
            "top-{i} logit {got} vs {want}"
        );
    }

    let tok = tokenizer(&gguf.file).unwrap();
    let opts = PerplexityOptions {
        seq_len: 128,
        max_windows: Some(64),
        batch: 8,
    };
    let ppl = pollster::block_on(perplexity(
        &model,
        &tok.encode(&eval_text()).unwrap(),
        &opts,
        &device,
        &Silent,
    ))
    .unwrap();
    let want = r["dense"]["ppl_eval_128x64"].as_f64().unwrap();
    assert!(
        (ppl.ppl - want).abs() / want < 0.005,
        "dense perplexity {} vs reference {want}",
        ppl.ppl
    );
    assert_eq!(ppl.tokens, 64 * 127);
}

/// wgpu binds at most its storage-binding limit in one buffer (a u32: under 4 GiB on any device; 128 MiB on
/// Mesa's lavapipe), and cubecl's server thread panicked on a bigger tensor while the eval went on to print a
/// garbage perplexity (1.7e38 for 8 windows on lavapipe) with exit 0. SmolLM2's logits for 256 windows of 128
/// tokens, [256, 128, 49152] in f32, take 6 GiB: that batch is refused by name before the model loads, and 2
/// windows on wgpu give the CPU's perplexity.
#[test]
fn a_batch_over_the_wgpu_buffer_limit_is_refused_and_a_smaller_one_matches_the_cpu() {
    let gguf = models().join("smollm2-135m.gguf");
    let text = shared_dir().join("data/eval-python-faq.txt");
    let (gguf, text) = (gguf.to_str().unwrap(), text.to_str().unwrap());
    let eval = |windows: &'static str, backend: &'static str| {
        let mut args = vec!["eval", gguf, "--text", text, "--json"];
        args.extend([
            "--max-windows",
            windows,
            "--batch",
            windows,
            "--backend",
            backend,
        ]);
        args
    };
    let err = refused_cli(&eval("256", "wgpu"));
    assert!(
        err.contains(
            "evaluation of 256 × 128 tokens needs logits [256, 128, 49152] of 6.00 GiB in f32"
        ) && err.contains("the largest buffer wgpu allocates on this device"),
        "{err}"
    );
    let ppl = |backend: &'static str| {
        let v: serde_json::Value = serde_json::from_str(&run_cli(&eval("2", backend))).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    let (gpu, cpu) = (ppl("wgpu"), ppl("cpu"));
    assert!((gpu - cpu).abs() / cpu < 1e-4, "wgpu {gpu} vs cpu {cpu}");
}

/// Bytes that record every read made of them.
struct Recorded<'a> {
    bytes: &'a [u8],
    reads: RefCell<Vec<(u64, usize)>>,
}

impl<'a> Recorded<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            reads: RefCell::new(vec![]),
        }
    }
}

impl ByteRanges for Recorded<'_> {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read(&self, offset: u64, len: usize) -> prunelab::error::Result<Vec<u8>> {
        self.reads.borrow_mut().push((offset, len));
        self.bytes.read(offset, len)
    }
}

#[test]
fn gguf_by_ranges_reads_the_header_then_one_tensor_at_a_time() {
    let bytes = gguf_bytes();
    let whole = GgufModel::parse(&bytes).unwrap();
    let recorded = Recorded::new(&bytes);
    let ranged = GgufModel::open(&recorded).unwrap();
    assert_eq!(ranged.config, whole.config);
    assert_eq!(ranged.file.metadata, whole.file.metadata);
    // The 1.7 MiB header (49,152 tokens and their merges) runs past the first 1 MiB read: read again, ×4.
    let data_start = whole.file.tensors.iter().map(|t| t.offset).min().unwrap();
    assert!(data_start > 1 << 20, "{data_start}");
    assert_eq!(*recorded.reads.borrow(), [(0, 1 << 20), (0, 4 << 20)]);
    recorded.reads.borrow_mut().clear();
    let name = "model.layers.3.self_attn.k_proj.weight";
    assert_eq!(
        ranged.read_f32(name).unwrap(),
        whole.read_f32(name).unwrap()
    );
    let info = whole.file.tensor("blk.3.attn_k.weight").unwrap();
    assert_eq!(
        *recorded.reads.borrow(),
        [(info.offset as u64, info.size)],
        "exactly the tensor's bytes"
    );
    // A file cut in its data or inside its header is refused, whatever the prefix read so far.
    let cut = Recorded::new(&bytes[..data_start + 1000]);
    let err = GgufModel::open(&cut)
        .err()
        .expect("cut file refused")
        .to_string();
    assert!(err.contains("lies past the end of the file"), "{err}");
    let cut = Recorded::new(&bytes[..(3 << 20) / 2]);
    let err = GgufModel::open(&cut)
        .err()
        .expect("cut file refused")
        .to_string();
    assert!(err.starts_with("GGUF: truncated:"), "{err}");
}

#[test]
fn gguf_to_hf_to_gguf_round_trip_keeps_tensors_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (hf, back) = (dir.path().join("hf"), dir.path().join("back.gguf"));
    let src = models().join("smollm2-135m.gguf");
    run_cli(&[
        "convert",
        src.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]);
    run_cli(&[
        "convert",
        hf.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);

    let orig_bytes = gguf_bytes();
    let orig = GgufModel::parse(&orig_bytes).unwrap();
    let back_bytes = read(&back);
    let round = GgufModel::parse(&back_bytes).unwrap();
    assert_eq!(round.config, orig.config);
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.context_length",
        "llama.vocab_size",
        "llama.rope.dimension_count",
    ] {
        let (a, b) = (orig.file.get(key), round.file.get(key));
        let same = match (a, b) {
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|(p, q)| p == q || p.as_u64() == q.as_u64())
            }
            (Some(x), Some(y)) => x == y || (x.as_u64().is_some() && x.as_u64() == y.as_u64()),
            _ => false,
        };
        assert!(same, "metadata {key}: {a:?} vs {b:?}");
    }
    // transformers finds the chat template and the special tokens in the HF folder's tokenizer_config.json.
    let tokenizer_config: serde_json::Value =
        serde_json::from_slice(&read(&hf.join("tokenizer_config.json"))).unwrap();
    assert_eq!(
        tokenizer_config["chat_template"].as_str(),
        orig.file
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
    );
    assert_eq!(tokenizer_config["bos_token"], "<|im_start|>");
    assert_eq!(tokenizer_config["eos_token"], "<|im_end|>");
    assert!(
        !hf.join("generation_config.json").exists(),
        "EOS is the only end token"
    );
    let hf_bytes = read(&hf.join("model.safetensors"));
    let st =
        SafetensorsWeights::from_files(&[("model.safetensors".into(), &hf_bytes)], None).unwrap();
    for (name, _) in orig.inventory() {
        let want = orig.read_f32(&name).unwrap();
        assert_eq!(st.read_f32(&name).unwrap(), want, "HF {name}");
        assert_eq!(round.read_f32(&name).unwrap(), want, "GGUF {name}");
    }

    // The `gguf` Python package reads what we wrote, with the expected metadata and shapes.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/gguf_read.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gguf package: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["block_count"], 30);
    assert_eq!(v["tensors"], 272);
    assert_eq!(
        v["shapes"]["blk.0.attn_k.weight"],
        serde_json::json!([576, 192])
    );
    assert_eq!(
        v["shapes"]["token_embd.weight"],
        serde_json::json!([576, 49152])
    );
    assert_eq!(v["tokens"], 49152);
}

fn lp_calibration() -> Vec<Vec<u32>> {
    id_windows(&reference()["llm_pruner_official"]["calibration_ids"])
}

/// Prunes SmolLM2 on the reference shapes (ratio 0.34, layers [4, 28)) with `recipe` (its ratio, layers and
/// calibration are set here) and `windows`; returns (parameters, per-layer shapes, eval perplexity 64 × 128).
fn prune_reference_shapes(
    recipe: prunelab::prune::recipe::Recipe,
    windows: Vec<Vec<u32>>,
) -> (usize, Vec<prunelab::model::LayerShape>, f64) {
    use prunelab::prune::calib::CalibSource;
    use prunelab::prune::recipe::{LayerRange, Recipe};
    let bytes = gguf_bytes();
    let gguf = GgufModel::parse(&bytes).unwrap();
    let device = Default::default();
    let model = Llama::<burn::backend::Autodiff<Cpu>>::load(&gguf.config, &gguf, &device).unwrap();
    let recipe = Recipe {
        ratio: Some(0.34),
        layers: Some(LayerRange { start: 4, end: 28 }),
        calibration: CalibSource::Ids {
            windows: windows.clone(),
        },
        ..recipe
    };
    let out = pollster::block_on(prunelab::prune::pipeline::prune(
        model, &recipe, &windows, &device, &Silent,
    ))
    .unwrap();
    let ppl = eval_ppl(&out.model, &tokenizer(&gguf.file).unwrap());
    let cfg = &out.model.config;
    (
        prunelab::model::params::count_params(cfg).total,
        cfg.layers.clone(),
        ppl,
    )
}

/// Perplexity of `model` on the eval text (64 windows of 128 tokens).
fn eval_ppl(model: &Llama<Cpu>, tok: &prunelab::io::tokenizer::Tokenizer) -> f64 {
    let opts = PerplexityOptions {
        seq_len: 128,
        max_windows: Some(64),
        batch: 8,
    };
    let ids = tok.encode(&eval_text()).unwrap();
    pollster::block_on(perplexity(model, &ids, &opts, &Default::default(), &Silent))
        .unwrap()
        .ppl
}

/// LLM-Pruner's run (taylor-first, its exact 10 × 64 calibration windows) with the given GQA aggregation.
fn lp_run(
    agg: prunelab::prune::structure::Aggregation,
) -> (usize, Vec<prunelab::model::LayerShape>, f64) {
    let recipe = prunelab::prune::recipe::Recipe {
        importance: prunelab::prune::Importance::TaylorFirst,
        aggregation: agg,
        compensation: prunelab::prune::compensate::Compensation::None,
        ..Default::default()
    };
    prune_reference_shapes(recipe, lp_calibration())
}

#[test]
fn llm_pruner_taylor_first_run_is_reproduced() {
    let (params, layers, ppl) = lp_run(prunelab::prune::structure::Aggregation::LlmPruner);
    let r = &reference()["llm_pruner_official"]["runs"][0];
    assert_eq!(params as u64, r["params_after"].as_u64().unwrap());
    let col = |f: fn(&prunelab::model::LayerShape) -> usize| {
        serde_json::json!(layers.iter().map(f).collect::<Vec<_>>())
    };
    assert_eq!(col(|l| l.num_heads), r["q_heads"]);
    assert_eq!(col(|l| l.num_kv_heads), r["kv_heads"]);
    assert_eq!(col(|l| l.intermediate_size), r["intermediate"]);
    let want = r["ppl_eval_128x64"].as_f64().unwrap();
    assert!(
        (ppl - want).abs() / want < REFERENCE_TOLERANCE,
        "perplexity {ppl} vs the official code's {want}"
    );
    eprintln!("LLM-Pruner compat: perplexity {ppl:.3} (official {want})");
}

#[test]
fn correct_gqa_aggregation_on_the_same_shapes() {
    let (params, _, ppl) = lp_run(prunelab::prune::structure::Aggregation::Correct);
    assert_eq!(params, reference_shapes_params());
    // Crediting query heads to the KV group they attend with keeps the better heads: measured 70.832 here
    // against 74.594 with the published aggregation.
    assert!(ppl < 74.594, "correct aggregation perplexity {ppl}");
    eprintln!("correct aggregation: perplexity {ppl:.3}");
}

/// Training-free pruning with the least-squares reference's calibration: 32 windows × 128 tokens of the
/// calibration text at the reference offsets. Returns (parameters, eval perplexity).
fn ls_run(
    importance: prunelab::prune::Importance,
    comp: prunelab::prune::compensate::Compensation,
) -> (usize, f64) {
    let bytes = gguf_bytes();
    let tok = tokenizer(&GgufModel::parse(&bytes).unwrap().file).unwrap();
    let calib_text =
        String::from_utf8(read(&shared_dir().join("data/calib-python-tutorial.txt"))).unwrap();
    let ids = tok.encode(&calib_text).unwrap();
    let windows: Vec<Vec<u32>> = reference()["least_squares_reference"]
        ["calibration_window_starts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .map(|s| ids[s..s + 128].to_vec())
        .collect();
    let recipe = prunelab::prune::recipe::Recipe {
        importance,
        compensation: comp,
        ..Default::default()
    };
    let (params, _, ppl) = prune_reference_shapes(recipe, windows);
    (params, ppl)
}

/// Relative distance allowed from a reference perplexity: the runs compute the same thing in another order
/// (measured within 2e-4 of every reference).
const REFERENCE_TOLERANCE: f64 = 1e-3;

/// The parameters of the reference shapes (LLM-Pruner's run), from the reference file.
fn reference_shapes_params() -> usize {
    reference()["llm_pruner_official"]["runs"][0]["params_after"]
        .as_u64()
        .unwrap() as usize
}

/// Runs `importance` + `comp` on the least-squares reference's windows and checks perplexity against the
/// reference run `score` + `compensation`.
fn meets_the_ls_reference(
    importance: prunelab::prune::Importance,
    comp: prunelab::prune::compensate::Compensation,
    score: &str,
    compensation: &str,
) -> usize {
    let (params, ppl) = ls_run(importance, comp);
    let runs = reference()["least_squares_reference"]["runs"].clone();
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["score"] == score && r["compensation"] == compensation)
        .unwrap_or_else(|| panic!("no reference run {score} + {compensation}"))
        .clone();
    let want = run["ppl_eval_128x64"].as_f64().unwrap();
    eprintln!("{score} + {compensation}: perplexity {ppl:.3} (reference {want})");
    assert!(
        (ppl - want).abs() / want < REFERENCE_TOLERANCE,
        "{score} + {compensation}: perplexity {ppl} vs the reference's {want}"
    );
    params
}

#[test]
fn obs_with_and_without_least_squares_meets_the_reference() {
    use prunelab::prune::compensate::Compensation;
    use prunelab::prune::Importance;
    let params = meets_the_ls_reference(Importance::Obs, Compensation::Ls, "obs", "ls");
    assert_eq!(params, reference_shapes_params());
    let params = meets_the_ls_reference(Importance::Obs, Compensation::None, "obs", "none");
    assert_eq!(params, reference_shapes_params());
}

#[test]
fn flap_and_wanda_meet_the_reference() {
    use prunelab::prune::compensate::Compensation;
    use prunelab::prune::Importance;
    let params = meets_the_ls_reference(Importance::Flap, Compensation::Ls, "flap", "ls");
    assert_eq!(params, reference_shapes_params());
    // HF biases are all-or-nothing: every projection gets one (the reference counts o_proj's and down_proj's).
    let params = meets_the_ls_reference(Importance::Flap, Compensation::Bias, "flap", "bias");
    assert_eq!(params, reference_shapes_params() + bias_params());
    let params = meets_the_ls_reference(Importance::WandaSp, Compensation::None, "wanda", "none");
    assert_eq!(params, reference_shapes_params());
}

/// Bias parameters once every projection carries one (HF biases are all-or-nothing): per pruned layer q 6·64,
/// k and v 2·64 each, o 576, gate and up 1013 each, down 576; per unpruned layer q 9·64, k and v 3·64 each,
/// o 576, gate and up 1536 each, down 576.
fn bias_params() -> usize {
    let pruned = 24 * (6 * 64 + 2 * 2 * 64 + 576 + 2 * 1013 + 576);
    let unpruned = 6 * (9 * 64 + 2 * 3 * 64 + 576 + 2 * 1536 + 576);
    pruned + unpruned
}

/// `recipe` run on SmolLM2 (from its GGUF) as the benches run it through the CLI: 32 × 128 calibration windows
/// sampled (seed 42) from the calibration text. Returns the run and the model's tokenizer.
fn bench_run(
    recipe: prunelab::prune::recipe::Recipe,
) -> (
    prunelab::prune::pipeline::Pruned<burn::backend::Autodiff<Cpu>>,
    prunelab::io::tokenizer::Tokenizer,
) {
    use prunelab::prune::calib::{sample_windows, CalibSource};
    let bytes = gguf_bytes();
    let gguf = GgufModel::parse(&bytes).unwrap();
    let tok = tokenizer(&gguf.file).unwrap();
    let calib_text =
        String::from_utf8(read(&shared_dir().join("data/calib-python-tutorial.txt"))).unwrap();
    let windows = sample_windows(&tok.encode(&calib_text).unwrap(), 32, 128, 42).unwrap();
    let recipe = prunelab::prune::recipe::Recipe {
        calibration: CalibSource::Sampled {
            samples: 32,
            length: 128,
        },
        ..recipe
    };
    let device = Default::default();
    let model = Llama::<burn::backend::Autodiff<Cpu>>::load(&gguf.config, &gguf, &device).unwrap();
    let out = pollster::block_on(prunelab::prune::pipeline::prune(
        model, &recipe, &windows, &device, &Silent,
    ))
    .unwrap();
    (out, tok)
}

/// Depth pruning on the real model, as `benches/depth_smollm2.sh` runs it: 6 of the 26 layers of the default
/// range 3..29 by block influence, repaired by least squares, 32 × 128 calibration windows sampled (seed 42) from
/// the calibration text. The bench measured perplexity 40.767 with the repair (53.147 without) through the CLI.
#[test]
fn depth_pruning_by_block_influence_is_repaired_by_least_squares() {
    use prunelab::prune::compensate::Compensation;
    use prunelab::prune::recipe::Recipe;
    use prunelab::prune::structure::StructureKind;
    use prunelab::prune::Importance;
    let (out, tok) = bench_run(Recipe {
        structures: vec![StructureKind::Layers],
        importance: Importance::BlockInfluence,
        compensation: Compensation::Ls,
        ratio: Some(0.2),
        ..Default::default()
    });
    assert_eq!(out.plan.removed_layers, vec![13, 14, 15, 16, 17, 25]);
    assert_eq!(
        prunelab::model::params::count_params(&out.model.config).total,
        113_274_432
    );
    // Two runs of removed layers, each absorbed by the layer before it, and each repair removes error.
    let repaired: Vec<usize> = out.reconstruction.iter().map(|r| r.layer).collect();
    assert_eq!(repaired, vec![12, 24]);
    assert!(out.reconstruction.iter().all(|r| r.after < r.before));
    let ppl = eval_ppl(&out.model, &tok);
    eprintln!("block influence + ls, 6 layers: perplexity {ppl:.3}");
    assert!(
        (ppl - 40.767).abs() / 40.767 < REFERENCE_TOLERANCE,
        "perplexity {ppl} vs 40.767 measured by the CLI"
    );
}

/// Query heads on the real model, as `benches/query_heads_smollm2.sh` runs it: one of the 3 query heads of every
/// KV group of the default range 3..29 goes (ratio 0.34) by the numerical score, and `o_proj` is refit by least
/// squares; 32 × 128 calibration windows sampled (seed 42) from the calibration text. The bench measured
/// perplexity 30.248 through the CLI (whole KV groups of the same heads: 34.921).
#[test]
fn query_heads_go_evenly_from_every_group_and_are_repaired_by_least_squares() {
    use prunelab::prune::recipe::Recipe;
    use prunelab::prune::structure::StructureKind;
    let (out, tok) = bench_run(Recipe {
        structures: vec![StructureKind::QueryHeads],
        ratio: Some(0.34),
        ..Default::default()
    });
    for lp in &out.plan.layers {
        let groups: Vec<usize> = lp.query_heads.iter().map(|h| h / 3).collect();
        assert_eq!(
            groups,
            vec![0, 1, 2],
            "layer {}: {:?}",
            lp.layer,
            lp.query_heads
        );
    }
    let shapes: Vec<(usize, usize)> = out
        .model
        .config
        .layers
        .iter()
        .map(|s| (s.num_heads, s.num_kv_heads))
        .collect();
    assert_eq!(shapes[..3], [(9, 3); 3]);
    assert_eq!(shapes[3..29], [(6, 3); 26]);
    // Each pruned layer loses 3 heads' q rows and o_proj columns: 26 · 3 · 64 · 576 · 2.
    assert_eq!(
        prunelab::model::params::count_params(&out.model.config).total,
        134_515_008 - 26 * 3 * 64 * 576 * 2
    );
    let o_proj = out.reconstruction.iter().filter(|r| r.module == "o_proj");
    assert!(o_proj.clone().count() == 26 && o_proj.clone().all(|r| r.after < r.before));
    let ppl = eval_ppl(&out.model, &tok);
    eprintln!("numerical + ls, 3 of 9 query heads: perplexity {ppl:.3}");
    assert!(
        (ppl - 30.248).abs() / 30.248 < REFERENCE_TOLERANCE,
        "perplexity {ppl} vs 30.248 measured by the CLI"
    );
}

#[test]
fn chat_turns_use_the_gguf_template_and_end_at_its_eos() {
    let src = models().join("smollm2-135m.gguf");
    let out = run_cli(&[
        "generate",
        src.to_str().unwrap(),
        "--chat",
        "What is the capital of France?",
        "--tokens",
        "48",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["chat_prompt"],
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(v["text"], "The capital of France is Paris.");
    assert_eq!(v["finish_reason"], "eos");
    assert_eq!(
        v["ids"].as_array().unwrap().last().unwrap(),
        2,
        "<|im_end|>"
    );
    // The conversation goes on: the answer and a follow-up, rendered turn by turn.
    let dir = tempfile::tempdir().unwrap();
    let conversation = dir.path().join("conversation.json");
    let messages = serde_json::json!([
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": v["text"]},
        {"role": "user", "content": "And of Italy?"},
    ]);
    std::fs::write(&conversation, messages.to_string()).unwrap();
    let out = run_cli(&[
        "generate",
        src.to_str().unwrap(),
        "--messages",
        conversation.to_str().unwrap(),
        "--tokens",
        "48",
        "--json",
    ]);
    let w: serde_json::Value = serde_json::from_str(&out).unwrap();
    let prompt = w["chat_prompt"].as_str().unwrap();
    assert!(
        prompt.ends_with(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n\
             The capital of France is Paris.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n\
             <|im_start|>assistant\n"
        ),
        "{prompt}"
    );
    assert_eq!(w["text"], "The capital of Italy is Rome.");
    assert_eq!(w["finish_reason"], "eos");
}

/// lm-evaluation-harness itself (`tests/lm_eval_faq.py`: its `multiple_choice` task machinery and `hf` model, f32
/// on the CPU, on the folder `models/smollm2/fetch` converts) on the built-in FAQ task: the first 48 items'
/// log-likelihoods within 3e-5 relative (measured: at most 9.1e-6; the closest two choices of an item differ
/// by 1.2e-4), so the same predictions; and over all 133 items its `acc`, `acc_norm` and standard errors are
/// what `ChoiceScores::accuracy` makes of its log-likelihoods.
#[test]
fn faq_task_scores_as_lm_evaluation_harness_scores_it() {
    use prunelab::eval::choice::{parse_items, score_choices, ChoiceOptions, ChoiceScores};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden: serde_json::Value =
        serde_json::from_slice(&read(&root.join("tests/data/lm-eval-smollm2-faq.json"))).unwrap();
    let theirs: Vec<Vec<f64>> = serde_json::from_value(golden["log_likelihoods"].clone()).unwrap();
    let path = root.join("web/data/tasks-python-faq.jsonl");
    let items = parse_items(&read(&path), "tasks-python-faq.jsonl").unwrap();
    assert_eq!(theirs.len(), items.len());

    let all = ChoiceScores {
        log_likelihoods: theirs.clone(),
        tokens: 0,
    }
    .accuracy(&items);
    for (ours, key) in [
        (Some(all.acc), "acc"),
        (all.acc_stderr, "acc_stderr"),
        (Some(all.acc_norm), "acc_norm"),
        (all.acc_norm_stderr, "acc_norm_stderr"),
    ] {
        let want = golden[key].as_f64().unwrap();
        assert!(
            (ours.unwrap() - want).abs() < 1e-12,
            "{key}: {ours:?} against {want}"
        );
    }

    let dir = models().join("smollm2-135m");
    let device = Default::default();
    let model: Llama<Cpu> = load_hf_folder(&dir, &device);
    let tok =
        prunelab::io::tokenizer::Tokenizer::from_json(&read(&dir.join("tokenizer.json"))).unwrap();
    let opts = ChoiceOptions {
        batch: 8,
        max_items: Some(48),
    };
    let ours =
        pollster::block_on(score_choices(&model, &tok, &items, &opts, &device, &Silent)).unwrap();
    assert_eq!(ours.log_likelihoods.len(), 48);
    for (i, (a, b)) in ours.log_likelihoods.iter().zip(&theirs).enumerate() {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 3e-5 * y.abs(),
                "item {i} choice {k}: {x} against {y}"
            );
        }
    }
    let first = ChoiceScores {
        log_likelihoods: theirs[..48].to_vec(),
        tokens: 0,
    };
    for per_char in [false, true] {
        assert_eq!(
            ours.predictions(&items[..48], per_char),
            first.predictions(&items[..48], per_char)
        );
    }
}
