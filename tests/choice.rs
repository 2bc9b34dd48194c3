//! Multiple-choice accuracy: a choice's log-likelihood, scored in sorted, padded batches, equals the sum of its
//! continuation tokens' log-probabilities from a forward of its own sequence; the context/continuation split is
//! lm-evaluation-harness's; the CLI's `eval --tasks` reports the accuracy its own log-likelihoods give and names
//! what is wrong with a task file; the built-in FAQ tasks are what their generator writes,
//! and the demo model completes FAQ sentences above chance; `acc`, `acc_norm` and their standard errors on
//! hand-made scores, and task-file lines checked by number; a task's largest forward, and a task too long for
//! the device refused by name.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pollster::block_on;
use prunelab::eval::choice::{
    encode_pair, parse_items, score_choices, ChoiceBatches, ChoiceItem, ChoiceOptions, ChoiceScores,
};
use prunelab::eval::perplexity::batch_tensor;
use prunelab::io::tokenizer::Tokenizer;
use prunelab::model::Llama;
use prunelab::progress::Silent;
use prunelab::readback::to_vec_f64;

type Cpu = prunelab::backend::Cpu;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn demo() -> (Llama<Cpu>, Tokenizer) {
    let dir = repo("models/demo");
    let tok = Tokenizer::from_json(&read(&dir.join("tokenizer.json"))).unwrap();
    (load_hf_folder(&dir, &Default::default()), tok)
}

/// A built-in task of `web/data/`.
fn builtin(file: &str) -> Vec<ChoiceItem> {
    parse_items(&read(&repo(&format!("web/data/{file}"))), file).unwrap()
}

fn faq_items() -> Vec<ChoiceItem> {
    builtin("tasks-python-faq.jsonl")
}

/// What `scripts/make-faq-task.py ARGS… web/data/eval-python-faq.txt` prints.
fn generated(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .arg(repo("scripts/make-faq-task.py"))
        .args(args)
        .arg(repo("web/data/eval-python-faq.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every item has its own real choice, and its position is spread over the four (each at least `min` times).
fn check_spread(items: &[ChoiceItem], min: usize) {
    assert!(items.iter().all(|it| it.choices.len() == 4));
    let real: std::collections::HashSet<&str> = items
        .iter()
        .map(|it| it.choices[it.gold].as_str())
        .collect();
    assert_eq!(real.len(), items.len());
    let mut counts = [0; 4];
    for it in items {
        counts[it.gold] += 1;
    }
    assert!(counts.iter().all(|&c| c >= min), "{counts:?}");
}

#[test]
fn a_choice_scores_the_log_probability_of_its_tokens_after_the_context() {
    let (model, tok) = demo();
    let device = Default::default();
    let mut items: Vec<ChoiceItem> = faq_items().into_iter().take(5).collect();
    // A context ending in a space: the space moves to the choices.
    items[1].context.push(' ');
    items[1].choices = items[1]
        .choices
        .iter()
        .map(|c| c.trim_start().to_string())
        .collect();
    let mut by_batch = Vec::new();
    for batch in [1, 3, 8] {
        let opts = ChoiceOptions {
            batch,
            max_items: None,
        };
        by_batch
            .push(block_on(score_choices(&model, &tok, &items, &opts, &device, &Silent)).unwrap());
    }
    let mut tokens = 0;
    for (i, item) in items.iter().enumerate() {
        for (k, choice) in item.choices.iter().enumerate() {
            // One sequence alone, unpadded: the log-probabilities of its last `n` tokens.
            let pair = encode_pair(&tok, &item.context, choice).unwrap();
            let n = pair.continuation.len();
            let seq = [pair.context, pair.continuation].concat();
            let nll = block_on(to_vec_f64(
                model.token_nll(batch_tensor::<Cpu>(&[&seq], &device)),
            ))
            .unwrap();
            let want = -nll[nll.len() - n..].iter().sum::<f64>();
            tokens += n;
            for scores in &by_batch {
                let got = scores.log_likelihoods[i][k];
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "item {i} choice {k}: {got} vs {want}"
                );
            }
        }
    }
    assert!(by_batch.iter().all(|s| s.tokens == tokens));
    // The moved space gives the same scores as the same text split after the colon.
    let mut plain = items[1].clone();
    plain.context.pop();
    plain.choices = plain.choices.iter().map(|c| format!(" {c}")).collect();
    let opts = ChoiceOptions::default();
    let again = block_on(score_choices(
        &model,
        &tok,
        &[plain],
        &opts,
        &device,
        &Silent,
    ))
    .unwrap();
    assert_eq!(again.log_likelihoods[0], by_batch[2].log_likelihoods[1]);
    // No items, or a batch of none, is refused rather than scored as an accuracy of 0/0.
    let none = block_on(score_choices(&model, &tok, &[], &opts, &device, &Silent)).unwrap_err();
    assert!(none.to_string().contains("0 items"), "{none}");
    let zero = ChoiceOptions {
        batch: 0,
        max_items: None,
    };
    let err = block_on(score_choices(&model, &tok, &items, &zero, &device, &Silent)).unwrap_err();
    assert!(err.to_string().contains("batch ≥ 1"), "{err}");
}

#[test]
fn the_pair_is_split_as_lm_evaluation_harness_splits_it() {
    let (_, tok) = demo();
    let context = "Question: How do I copy a list?\nAnswer:";
    let pair = encode_pair(&tok, context, " Use the copy() method.").unwrap();
    let whole = tok
        .encode("Question: How do I copy a list?\nAnswer: Use the copy() method.")
        .unwrap();
    assert_eq!(pair.context, tok.encode(context).unwrap());
    assert_eq!(
        [pair.context.clone(), pair.continuation.clone()].concat(),
        whole
    );
    assert!(!pair.continuation.is_empty());
    assert_eq!(
        encode_pair(&tok, &format!("{context} "), "Use the copy() method.").unwrap(),
        pair
    );
    // A space alone is a token of this tokenizer; nothing at all is refused.
    assert_eq!(
        encode_pair(&tok, context, " ").unwrap().continuation.len(),
        1
    );
    let err = encode_pair(&tok, context, "").unwrap_err().to_string();
    assert!(err.contains("adds no token"), "{err}");
}

#[test]
fn a_text_the_tokenizer_drops_whole_is_refused_by_name() {
    // BPE without an unknown token or byte fallback: characters outside its vocabulary vanish.
    let tok = Tokenizer::from_json(
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false,
                      "vocab": {"a": 0, "b": 1}, "merges": []}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(tok.encode("ab zb").unwrap(), [0, 1, 1]);
    let err = tok.encode("zz").unwrap_err().to_string();
    assert_eq!(
        err,
        "text: the text \"zz\" encodes to no token: the tokenizer drops every character of it (it has no \
         unknown token or byte fallback)"
    );
    // a context of such characters would leave its choices' first tokens without a predicting position
    let err = encode_pair(&tok, "zz", " a").unwrap_err().to_string();
    assert!(err.contains("\"zz\" encodes to no token"), "{err}");
    let long = "z".repeat(50);
    let err = tok.encode(&long).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{:?}", "z".repeat(40) + "…")),
        "{err}"
    );
}

#[test]
fn the_cli_reports_the_accuracy_of_its_log_likelihoods() {
    let tasks = repo("web/data/tasks-python-faq.jsonl");
    let out = run_cli(&[
        "eval",
        repo("models/demo").to_str().unwrap(),
        "--tasks",
        tasks.to_str().unwrap(),
        "--max-items",
        "12",
        "--batch",
        "5",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = &faq_items()[..12];
    let lls: Vec<Vec<f64>> = serde_json::from_value(v["log_likelihoods"].clone()).unwrap();
    assert_eq!(lls.len(), 12);
    let (mut hits, mut hits_norm) = (0, 0);
    for (item, ll) in items.iter().zip(&lls) {
        assert_eq!(ll.len(), item.choices.len());
        assert!(ll.iter().all(|l| l.is_finite() && *l < 0.0), "{ll:?}");
        let best = |f: &dyn Fn(usize) -> f64| {
            (0..ll.len()).fold(0, |b, k| if f(k) > f(b) { k } else { b })
        };
        hits += usize::from(best(&|k| ll[k]) == item.gold);
        hits_norm +=
            usize::from(best(&|k| ll[k] / item.choices[k].chars().count() as f64) == item.gold);
    }
    assert_eq!(v["acc"].as_f64().unwrap(), hits as f64 / 12.0);
    assert_eq!(v["acc_norm"].as_f64().unwrap(), hits_norm as f64 / 12.0);
    assert_eq!(
        (v["items"].as_u64(), v["choices"].as_u64()),
        (Some(12), Some(48))
    );
    let p = hits as f64 / 12.0;
    assert!((v["acc_stderr"].as_f64().unwrap() - (p * (1.0 - p) / 11.0).sqrt()).abs() < 1e-12);
}

#[test]
fn the_cli_names_what_is_wrong_with_a_task_file() {
    let dir = std::env::temp_dir().join(format!("prunelab-choice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let demo = repo("models/demo");
    let cases = [
        (
            "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n{\"context\": \"Q\"",
            "line 2: invalid JSON",
        ),
        (
            "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 5}",
            "gold 5 is not an index of its 2 choices",
        ),
        ("\n\n", "holds no items"),
    ];
    for (n, (text, want)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{n}.jsonl"));
        std::fs::write(&file, text).unwrap();
        let err = refused_cli(&[
            "eval",
            demo.to_str().unwrap(),
            "--tasks",
            file.to_str().unwrap(),
        ]);
        assert!(
            err.contains(want) && err.contains(&format!("bad{n}.jsonl")),
            "{err:?} should say {want:?}"
        );
    }
    // --max-items belongs to --tasks; --tasks excludes --text.
    let (demo, text) = (repo("models/demo"), repo("web/data/eval-python-faq.txt"));
    let (demo, text) = (demo.to_str().unwrap(), text.to_str().unwrap());
    let tasks = repo("web/data/tasks-python-faq.jsonl");
    for extra in [
        vec!["--max-items", "3"],
        vec!["--tasks", tasks.to_str().unwrap()],
    ] {
        refused_cli(&[&["eval", demo, "--text", text][..], &extra].concat());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A task's footprint is its largest batch: the longest sequences (the first batch, longest first) through the
/// layers, and the most scored positions any batch runs the head on. With every choice in one batch the head
/// runs on every scored token; one choice per batch runs it on the longest continuation.
#[test]
fn the_footprint_of_a_task_is_its_longest_batch() {
    let (model, tok) = demo();
    let cfg = &model.config;
    let items = &faq_items()[..6];
    let pairs: Vec<(usize, usize)> = (items.iter())
        .flat_map(|it| {
            it.choices
                .iter()
                .map(|c| encode_pair(&tok, &it.context, c).unwrap())
        })
        .map(|p| (p.context.len() + p.continuation.len(), p.continuation.len()))
        .collect();
    let longest = pairs.iter().map(|p| p.0).max().unwrap();
    assert!(longest < cfg.max_position_embeddings);
    let footprint = |batch| {
        let opts = ChoiceOptions {
            batch,
            max_items: None,
        };
        let f = ChoiceBatches::new(&tok, items, &opts, cfg)
            .unwrap()
            .footprint(cfg);
        let shape = |name: &str| {
            f.tensors
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .shape
                .clone()
        };
        (f.batch, f.seq, shape("attention scores"), shape("logits"))
    };
    let all = pairs.iter().map(|p| p.1).sum::<usize>();
    assert_eq!(
        footprint(100),
        (
            24,
            longest,
            vec![24, 8, longest, longest],
            vec![1, all, 4096]
        )
    );
    let one = pairs.iter().map(|p| p.1).max().unwrap();
    assert_eq!(
        footprint(1),
        (1, longest, vec![1, 8, longest, longest], vec![1, one, 4096])
    );
}

/// A task whose longest sequence the device cannot hold is refused before anything runs, naming the tensor:
/// `eval --tasks` and `prune --tasks`, on the CPU and on wgpu. The demo's positions are raised to 400,000 in a
/// copy of its folder, so that a context of 300,000 words is not cut.
#[test]
fn a_task_too_long_for_the_device_is_refused_naming_its_largest_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(repo("models/demo").join(file), demo.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&read(&repo("models/demo/config.json"))).unwrap();
    config["max_position_embeddings"] = 400_000.into();
    std::fs::write(demo.join("config.json"), config.to_string()).unwrap();
    let item = ChoiceItem {
        context: "word ".repeat(300_000) + "Answer:",
        choices: vec![" yes".into(), " no".into()],
        gold: 0,
    };
    let tasks = dir.path().join("long.jsonl");
    std::fs::write(&tasks, serde_json::to_string(&item).unwrap()).unwrap();
    let calib = dir.path().join("calib.json");
    std::fs::write(&calib, "[[1, 2, 3, 4, 5, 6, 7, 8]]").unwrap();

    let tok = Tokenizer::from_json(&read(&demo.join("tokenizer.json"))).unwrap();
    let len = |c: &str| {
        let p = encode_pair(&tok, &item.context, c).unwrap();
        p.context.len() + p.continuation.len()
    };
    let longest = len(" yes").max(len(" no"));
    assert!(longest > 300_000, "{longest}");
    let want = format!(
        "multiple-choice scoring of 2 × {longest} tokens needs attention scores [1, 1, {longest}, {longest}]"
    );
    let (demo, tasks, calib) = (
        demo.to_str().unwrap(),
        tasks.to_str().unwrap(),
        calib.to_str().unwrap(),
    );
    for backend in ["cpu", "wgpu"] {
        let err = refused_cli(&["eval", demo, "--tasks", tasks, "--backend", backend]);
        assert!(err.contains(&want), "{err}");
    }
    let out = dir.path().join("pruned");
    let prune = [
        "prune",
        demo,
        "--out",
        out.to_str().unwrap(),
        "--tasks",
        tasks,
        "--calib-ids",
        calib,
        "--ratio",
        "0.25",
    ];
    let err = refused_cli(&prune);
    assert!(err.contains(&want), "{err}");
    assert!(!out.exists());
}

#[test]
fn the_faq_task_is_what_its_generator_writes() {
    assert_eq!(
        generated(&[]),
        read(&repo("web/data/tasks-python-faq.jsonl"))
    );
    let items = faq_items();
    assert_eq!(items.len(), 133);
    assert!(items.iter().all(|it| it.context.ends_with("\nAnswer:")));
    check_spread(&items, 21);
}

/// The completions task: what its generator writes (300 half sentences, each with its own second half among
/// three others), and the demo model, which stays at chance on the answers task (0.248), completes above chance:
/// 91 (acc) and 100 (acc_norm) of the 300 items, where chance is 75 (the closest two choices of an item differ
/// by 2.6e-4 relative, far above f32 rounding).
#[test]
fn the_completions_task_is_what_its_generator_writes_and_the_demo_beats_chance_on_it() {
    let file = "tasks-python-faq-completions.jsonl";
    assert_eq!(
        generated(&["--completions"]),
        read(&repo(&format!("web/data/{file}")))
    );
    let items = builtin(file);
    assert_eq!(items.len(), 300);
    assert!(items
        .iter()
        .all(|it| it.context.trim_end() == it.context
            && it.choices.iter().all(|c| c.starts_with(' '))));
    check_spread(&items, 60);

    let (model, tok) = demo();
    let opts = ChoiceOptions::default();
    let scores = block_on(score_choices(
        &model,
        &tok,
        &items,
        &opts,
        &Default::default(),
        &Silent,
    ))
    .unwrap();
    let acc = scores.accuracy(&items);
    assert_eq!((acc.acc * 300.0).round() as usize, 91, "{acc:?}");
    assert_eq!((acc.acc_norm * 300.0).round() as usize, 100, "{acc:?}");
}

#[test]
fn prune_reports_the_accuracy_eval_gives_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned");
    let (demo, tasks) = (repo("models/demo"), repo("web/data/tasks-python-faq.jsonl"));
    let (demo, tasks) = (demo.to_str().unwrap(), tasks.to_str().unwrap());
    let report = run_cli(&[
        "prune",
        demo,
        "--out",
        out.to_str().unwrap(),
        "--importance",
        "l2",
        "--compensation",
        "none",
        "--ratio",
        "0.5",
        "--tasks",
        tasks,
        "--tasks-items",
        "10",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let t = &report["tasks"];
    assert_eq!(t["task"].as_str(), Some(tasks));
    let mut evals = vec![];
    for (key, model) in [("before", demo), ("after", out.to_str().unwrap())] {
        let eval = run_cli(&[
            "eval",
            model,
            "--tasks",
            tasks,
            "--max-items",
            "10",
            "--json",
        ]);
        let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
        for field in [
            "acc",
            "acc_norm",
            "acc_stderr",
            "items",
            "choices",
            "tokens",
        ] {
            assert_eq!(t[key][field], eval[field], "{key} {field}");
        }
        evals.push(eval);
    }
    // Half the structures gone: "after" scored the pruned model, not the input again.
    assert_eq!(t["after"]["items"].as_u64(), Some(10));
    assert_ne!(evals[0]["log_likelihoods"], evals[1]["log_likelihoods"]);
}

fn item(choices: &[&str], gold: usize) -> ChoiceItem {
    ChoiceItem {
        context: "Q:".into(),
        choices: choices.iter().map(|c| c.to_string()).collect(),
        gold,
    }
}

#[test]
fn accuracy_counts_the_highest_and_the_highest_per_character() {
    // Item 0: raw picks choice 1 (−2 > −3); per character choice 0 (−3/6 = −0.5 > −2/2 = −1).
    // Item 1: both pick choice 0. Item 2: a tie picks the first.
    let items = vec![
        item(&[" aaaaa", " b"], 0),
        item(&[" yes", " no", " maybe"], 0),
        item(&[" x", " y"], 1),
    ];
    let scores = ChoiceScores {
        log_likelihoods: vec![vec![-3.0, -2.0], vec![-1.0, -4.0, -5.0], vec![-1.0, -1.0]],
        tokens: 9,
    };
    assert_eq!(scores.predictions(&items, false), vec![1, 0, 0]);
    assert_eq!(scores.predictions(&items, true), vec![0, 0, 0]);
    let acc = scores.accuracy(&items);
    assert_eq!((acc.acc, acc.acc_norm), (1.0 / 3.0, 2.0 / 3.0));
    // lm-evaluation-harness: sample std (n − 1) / √n. Hits [0, 1, 0]: var 1/3, stderr √(1/9) = 1/3.
    assert!((acc.acc_stderr.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // Hits [1, 1, 0]: var 1/3 as well.
    assert!((acc.acc_norm_stderr.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((acc.items, acc.choices, acc.tokens), (3, 7, 9));
}

#[test]
fn items_are_checked_with_their_line() {
    let good = b"{\"context\": \"Q: 1+1?\\nA:\", \"choices\": [\" 2\", \" 3\"], \"gold\": 0}\n\n";
    assert_eq!(parse_items(good, "t.jsonl").unwrap().len(), 1);
    let cases: [(&[u8], &str); 7] = [
        (b"", "t.jsonl holds no items"),
        (
            b"\n{\"context\": \"Q\", \"choices\": [\" a\"], \"gold\": 0}",
            "t.jsonl line 2: 1 choice(s)",
        ),
        (
            b"{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 2}",
            "gold 2 is not an index of its 2",
        ),
        (
            b"{\"context\": \" \", \"choices\": [\" a\", \" b\"], \"gold\": 0}",
            "line 1: the context is empty",
        ),
        (
            b"{\"context\": \"Q\", \"choices\": [\" a\", \"\"], \"gold\": 0}",
            "choice 1 is empty",
        ),
        (
            b"{\"context\": \"Q\", \"choices\": [\" a\", \" b\"]}",
            "t.jsonl line 1: invalid JSON: missing field `gold`",
        ),
        (
            b"{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 0, \"label\": 1}",
            "unknown field `label`",
        ),
    ];
    for (bytes, want) in cases {
        let err = parse_items(bytes, "t.jsonl").unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should say {want:?}");
    }
}
