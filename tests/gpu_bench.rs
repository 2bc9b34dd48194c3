//! The GPU bench (`benches/gpu/run.sh`) gets one call on a lent GPU, with no time for a second, so its prunelab
//! half runs here on the CPU at the `tiny` shape, as its header says: every step it measures (the synthetic
//! checkpoint, both recipes cold and warm, flap + ls with the autotune build's and the autotune + fusion build's
//! steps — here CI's CLI, which has neither — and decoding the dense and the pruned model) exits 0, both recipes leave the parameters the
//! uniform plan of 25% of layers 1..3 leaves, and the table has their rows. Its PyTorch rows
//! need torch, which CI does not install; they are left out here (`benches/gpu/check_baseline.sh` compares the
//! two tools where torch is).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use prunelab::model::params::count_params;
use prunelab::model::ModelConfig;
use prunelab::prune::allocate::{shapes_at, Allocation};
use prunelab::prune::structure::StructureKind;

#[test]
fn the_gpu_bench_runs_its_prunelab_steps_on_the_cpu() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    let run = Command::new("bash")
        .arg(repo.join("benches/gpu/run.sh"))
        .envs([
            ("OUT", out.to_str().unwrap()),
            ("WORK", work.to_str().unwrap()),
            ("SHAPE", "tiny"),
            ("LAYERS", "1..3"),
            ("BACKEND", "cpu"),
            ("TORCH_DEVICE", "cpu"),
            ("TORCH_DTYPE", "f32"),
            ("SKIP_GOLDEN", "1"),
            ("BIN", env!("CARGO_BIN_EXE_prunelab")),
            ("AUTOTUNE_BIN", env!("CARGO_BIN_EXE_prunelab")),
            ("FUSED_BIN", env!("CARGO_BIN_EXE_prunelab")),
            // Every step, however slow the machine: the GPU call's time budget is not the test's.
            ("CALL_LIMIT", "100000"),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{log}");
    let runs: HashMap<String, i64> = std::fs::read_to_string(out.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["name"].as_str().unwrap().to_string(),
                r["rc"].as_i64().unwrap(),
            )
        })
        .collect();
    let ours = [
        "ours-taylor-first",
        "ours-flap-ls",
        "ours-taylor-first-warm",
        "ours-flap-ls-warm",
        "ours-flap-ls-autotune",
        "ours-flap-ls-autotune-warm",
        "ours-flap-ls-fused",
        "ours-flap-ls-fused-warm",
    ];
    for step in ["synth", "decode-model", "decode-pruned"]
        .iter()
        .chain(&ours)
    {
        assert_eq!(runs.get(*step), Some(&0), "{step}: {log}");
    }
    let cfg =
        ModelConfig::from_json(&std::fs::read(out.join("model-config.json")).unwrap()).unwrap();
    let kinds = [StructureKind::KvGroups, StructureKind::Mlp];
    let pruned = shapes_at(&cfg, &(1..3), 0.25, &kinds, Allocation::Uniform);
    let (before, after) = (count_params(&cfg).total, count_params(&pruned).total);
    assert!(after < before);
    for step in ours {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{step}.json"))).unwrap())
                .unwrap();
        assert_eq!(report["params_before"]["total"], before, "{step}");
        assert_eq!(report["params_after"]["total"], after, "{step}");
    }
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in [
        "| taylor-first | prunelab |",
        "| taylor-first | prunelab, warm |",
        "| flap-ls | prunelab |",
        "| flap-ls | prunelab, warm |",
        "| flap-ls | prunelab, autotune |",
        "| flap-ls | prunelab, autotune, warm |",
        "| flap-ls | prunelab, autotune + fusion |",
        "| flap-ls | prunelab, autotune + fusion, warm |",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    assert!(!work.exists(), "the bench removes its models");
}
