//! Decoding with the KV cache: a forward split into cached chunks gives the logits of one forward over the whole
//! sequence (MHA, GQA, layers of different widths, LLaMA-3 and YaRN rotary scaling, a batch of two), and the CLI's
//! `generate` continues a prompt with the tokens greedy decoding chooses, timed, up to an end-of-text token, or names
//! what is wrong with its input; sampling draws from the softmax that temperature, top-k and top-p leave.

mod common;

use burn::tensor::{backend::Backend, Tensor};
use common::*;
use pollster::block_on;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::eval::sampling::{Chooser, Sampling};
use prunelab::model::cache::KvCache;
use prunelab::model::rope_scaling::{RopeScaling, YarnScaling};
use prunelab::model::Llama;
use prunelab::prune::plan::{apply, LayerPlan, Plan};
use prunelab::readback::to_vec;

type Cpu = prunelab::backend::Cpu;

/// The fixture's probe windows (a batch of sequences).
fn probe(name: &str) -> Vec<Vec<u32>> {
    id_windows(&golden_json(name)["probe_input_ids"])
}

fn logits<B: Backend>(t: Tensor<B, 3>) -> (Vec<usize>, Vec<f32>) {
    (t.dims().to_vec(), block_on(to_vec(t)).unwrap())
}

/// The logits of `windows` run through `model` in cached chunks of the given lengths, in order.
/// Returns `[batch, seq, vocab]` flattened, position by position as a full forward lays them out.
fn chunked<B: Backend>(model: &Llama<B>, windows: &[Vec<u32>], chunks: &[usize]) -> Vec<f32> {
    let device = Default::default();
    let (b, s, v) = (windows.len(), windows[0].len(), model.config.vocab_size);
    assert_eq!(chunks.iter().sum::<usize>(), s);
    let mut cache = KvCache::new(model.layers.len());
    let mut out = vec![0.0; b * s * v];
    let mut at = 0;
    for &n in chunks {
        let parts: Vec<&[u32]> = windows.iter().map(|w| &w[at..at + n]).collect();
        let (dims, got) = logits(model.forward_cached(batch_tensor(&parts, &device), &mut cache));
        assert_eq!(dims, vec![b, n, v]);
        for w in 0..b {
            let to = (w * s + at) * v;
            out[to..to + n * v].copy_from_slice(&got[w * n * v..(w + 1) * n * v]);
        }
        at += n;
        assert_eq!(cache.len(), at);
    }
    out
}

/// Checks that chunked decoding of the probe reproduces the full forward within `tol`: a long prompt, a short
/// chunk, then one token at a time.
fn assert_cache_matches<B: Backend>(model: &Llama<B>, name: &str, windows: &[Vec<u32>]) {
    let device = Default::default();
    let s = windows[0].len();
    let refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();
    let (_, full) = logits(model.forward(batch_tensor(&refs, &device)));
    let mut chunks = vec![s / 3, 4];
    chunks.resize(chunks.len() + s - s / 3 - 4, 1);
    let cached = chunked(model, windows, &chunks);
    let diff = max_abs_diff(&cached, &full);
    let scale = full.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        diff < 1e-5 * scale.max(1.0),
        "{name}: cached logits differ from the full forward's by {diff:e} (largest logit {scale})"
    );
}

#[test]
fn cached_chunks_give_the_logits_of_one_full_forward() {
    let device = Default::default();
    for name in ["tiny-mha", "tiny-gqa"] {
        let model = load_fixture::<Cpu>(name, &device);
        let windows = probe(name);
        assert!(windows.len() >= 2 && windows[0].len() >= 12);
        assert_cache_matches(&model, name, &windows);
        assert_cache_matches(&model, name, &windows[..1]);
    }
    // Layers of different widths: every layer caches the KV heads it kept.
    let model = load_fixture::<Cpu>("tiny-gqa", &device);
    let cfg = model.config.clone();
    let layer = |l, kv_groups: Vec<usize>, query_heads: Vec<usize>, mlp: Vec<usize>| LayerPlan {
        layer: l,
        kv_groups,
        query_heads,
        mlp_channels: mlp,
    };
    let plan = Plan::new(
        &cfg,
        vec![
            layer(1, vec![], vec![1, 4], (0..50).collect()),
            layer(2, vec![0], vec![], vec![]),
        ],
    );
    let pruned = apply(model.clone(), &plan).unwrap();
    let kv: Vec<usize> = pruned
        .layers
        .iter()
        .map(|b| b.self_attn.num_kv_heads())
        .collect();
    assert_eq!(kv, vec![2, 2, 1, 2]);
    assert_cache_matches(&pruned, "tiny-gqa pruned", &probe("tiny-gqa"));
    // Rotary scalings whose tables depend on the position (LLaMA-3) and carry an attention factor (YaRN).
    let scalings = [
        RopeScaling::Llama3(llama3(8.0, 4.0, 32)),
        RopeScaling::Yarn(YarnScaling {
            factor: 4.0,
            original_max_position_embeddings: 32,
            beta_fast: YarnScaling::BETA_FAST,
            beta_slow: YarnScaling::BETA_SLOW,
            truncate: true,
            attention_factor: YarnScaling::mscale(4.0, 1.0),
        }),
    ];
    for scaling in scalings {
        let mut scaled = model.clone();
        scaled.config.rope.scaling = Some(scaling);
        assert_cache_matches(&scaled, &format!("{scaling:?}"), &probe("tiny-gqa"));
    }
}

/// The same on the wgpu backend (the browser lab's WebGPU samples run this code).
#[cfg(feature = "wgpu")]
#[test]
fn cached_chunks_give_the_full_forward_logits_on_wgpu() {
    let device = Default::default();
    let model = load_fixture::<prunelab::backend::Wgpu>("tiny-gqa", &device);
    assert_cache_matches(&model, "tiny-gqa on wgpu", &probe("tiny-gqa"));
}

/// Draws `n` tokens from `logits` with a fresh chooser for `s` and returns each id's frequency.
fn frequencies(logits: &[f32], s: Sampling, n: usize) -> Vec<f64> {
    let mut chooser = Chooser::sample(s).unwrap();
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[chooser.choose(logits) as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

/// `softmax(logits / t)` restricted to `keep` (renormalised), zero elsewhere.
fn softmax_over(logits: &[f32], t: f64, keep: &[usize]) -> Vec<f64> {
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp()).collect();
    let z: f64 = keep.iter().map(|&i| e[i]).sum();
    (0..logits.len())
        .map(|i| if keep.contains(&i) { e[i] / z } else { 0.0 })
        .collect()
}

#[test]
fn sampling_draws_from_the_filtered_softmax() {
    // softmax(logits) = [0.0871, 0.6439, 0.0321, 0.2369]: ids 1, 3, 0, 2 from the most likely.
    let logits = [0.0f32, 2.0, -1.0, 1.0];
    let s = |temperature, top_k, top_p| Sampling {
        temperature,
        top_k,
        top_p,
        seed: 7,
    };
    let n = 40_000;
    // 4 standard deviations of a frequency near 0.5 over 40,000 draws: 0.01.
    let close = |got: &[f64], want: &[f64], what: &str| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 0.01, "{what}: {got:?} against {want:?}");
        }
    };
    let all = [0, 1, 2, 3];
    close(
        &frequencies(&logits, s(1.0, 0, 1.0), n),
        &softmax_over(&logits, 1.0, &all),
        "t=1",
    );
    close(
        &frequencies(&logits, s(0.5, 0, 1.0), n),
        &softmax_over(&logits, 0.5, &all),
        "t=0.5",
    );
    close(
        &frequencies(&logits, s(2.0, 0, 1.0), n),
        &softmax_over(&logits, 2.0, &all),
        "t=2",
    );
    // top-k 2 keeps ids 1 and 3; top-p 0.8 keeps the fewest reaching 0.8 (0.644 + 0.237); top-p 0.5 one token.
    close(
        &frequencies(&logits, s(1.0, 2, 1.0), n),
        &softmax_over(&logits, 1.0, &[1, 3]),
        "top-k 2",
    );
    close(
        &frequencies(&logits, s(1.0, 0, 0.8), n),
        &softmax_over(&logits, 1.0, &[1, 3]),
        "top-p 0.8",
    );
    assert_eq!(
        frequencies(&logits, s(1.0, 0, 0.5), 100),
        [0.0, 1.0, 0.0, 0.0]
    );
    // top-p 0.9 keeps ids 1, 3, 0 (0.881 < 0.9); after top-k 3 it measures what is left (0.665, 0.245, 0.090),
    // where 1 and 3 reach it.
    close(
        &frequencies(&logits, s(1.0, 0, 0.9), n),
        &softmax_over(&logits, 1.0, &[1, 3, 0]),
        "top-p 0.9",
    );
    close(
        &frequencies(&logits, s(1.0, 3, 0.9), n),
        &softmax_over(&logits, 1.0, &[1, 3]),
        "top-k 3, top-p 0.9",
    );
    assert_eq!(
        frequencies(&logits, s(5.0, 1, 1.0), 100),
        [0.0, 1.0, 0.0, 0.0]
    );
    // The same seed draws the same tokens; greedy takes the highest logit.
    let draws = |seed| {
        let mut c = Chooser::sample(Sampling {
            seed,
            ..s(1.0, 0, 1.0)
        })
        .unwrap();
        (0..64).map(|_| c.choose(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(draws(1), draws(1));
    assert_ne!(draws(1), draws(2));
    assert_eq!(Chooser::Greedy.choose(&logits), 1);
    for bad in [
        s(0.0, 0, 1.0),
        s(-1.0, 0, 1.0),
        s(f32::NAN, 0, 1.0),
        s(1.0, 0, 0.0),
        s(1.0, 0, 1.5),
    ] {
        assert!(Chooser::sample(bad).is_err(), "{bad:?}");
    }
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A copy of the demo model's config, weights and tokenizer in `dir/demo`, to add side files to.
    fn demo_copy(dir: &Path) -> PathBuf {
        let model = dir.join("demo");
        std::fs::create_dir(&model).unwrap();
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(demo_dir().join(name), model.join(name)).unwrap();
        }
        model
    }

    fn generate(args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_prunelab"))
            .arg("generate")
            .args(args)
            .output()
            .unwrap()
    }

    #[test]
    fn generate_continues_the_prompt_greedily_and_times_the_decoding() {
        let demo = demo_dir();
        let prompt = "The list type has";
        let out = run_cli(&[
            "generate",
            demo.to_str().unwrap(),
            "--prompt",
            prompt,
            "--tokens",
            "12",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
        assert_eq!(ids.len(), 12);
        assert!(v["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(v["prefill_seconds"].as_f64().unwrap() > 0.0);
        // The same tokens as choosing each one from a full forward over the prompt and the tokens before it.
        let input = std::fs::read(demo.join("tokenizer.json")).unwrap();
        let tok = prunelab::io::Tokenizer::from_json(&input).unwrap();
        let mut seq = tok.encode(prompt).unwrap();
        assert_eq!(v["prompt_tokens"], seq.len());
        let model = load_hf_folder::<Cpu>(&demo, &Default::default());
        for &id in &ids {
            let (dims, l) =
                logits(model.forward(batch_tensor(&[seq.as_slice()], &Default::default())));
            let (s, vocab) = (dims[1], dims[2]);
            let last = &l[(s - 1) * vocab..];
            let best = (0..vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b });
            assert_eq!(id as usize, best);
            seq.push(id);
        }
        assert_eq!(v["text"], tok.decode(&ids).unwrap());
    }

    #[test]
    fn generate_names_bad_input() {
        let demo = demo_dir();
        let dir = tempfile::tempdir().unwrap();
        let ids = |name: &str, json: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, json).unwrap();
            p
        };
        let (empty, outside) = (ids("empty.json", "[]"), ids("outside.json", "[1, 99999]"));
        let fixture = fixture("tiny-gqa");
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec![demo.to_str().unwrap(), "--prompt", "a", "--tokens", "0"],
                "--tokens must be at least 1",
            ),
            (
                vec![
                    demo.to_str().unwrap(),
                    "--prompt-ids",
                    empty.to_str().unwrap(),
                ],
                "holds no token ids",
            ),
            (
                vec![demo.to_str().unwrap(), "--prompt", ""],
                "--prompt is empty",
            ),
            (
                vec![
                    demo.to_str().unwrap(),
                    "--prompt-ids",
                    outside.to_str().unwrap(),
                ],
                "token id 99999 is outside the model's vocabulary",
            ),
            (
                vec![fixture.to_str().unwrap(), "--prompt", "a"],
                "has no tokenizer; pass a pre-tokenized prompt with --prompt-ids",
            ),
            (
                vec![demo.to_str().unwrap(), "--prompt", "a", "--precision", "f8"],
                "--precision \"f8\": expected one of f32, bf16",
            ),
            (
                vec![
                    demo.to_str().unwrap(),
                    "--prompt",
                    "a",
                    "--temperature",
                    "0",
                ],
                "temperature 0: must be a positive number (greedy decoding has none)",
            ),
            (
                vec![
                    demo.to_str().unwrap(),
                    "--prompt",
                    "a",
                    "--temperature",
                    "1",
                    "--top-p",
                    "1.5",
                ],
                "top-p 1.5: must be in (0, 1]",
            ),
            (
                vec![demo.to_str().unwrap(), "--prompt", "a", "--top-k", "5"],
                "--temperature",
            ),
        ];
        for (args, message) in cases {
            let out = generate(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(message), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }

    #[test]
    fn generate_stops_at_end_of_text_unless_told_not_to() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_copy(dir.path());
        let run = |extra: &[&str]| {
            let mut args = vec![
                "generate",
                model.to_str().unwrap(),
                "--prompt",
                "The list type has",
            ];
            args.extend(["--tokens", "12", "--json"]);
            args.extend(extra);
            let v: serde_json::Value = serde_json::from_str(&run_cli(&args)).unwrap();
            let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
            (ids, v["finish_reason"].as_str().unwrap().to_string())
        };
        let (all, finish) = run(&["--ignore-eos"]);
        assert_eq!((all.len(), finish.as_str()), (12, "length"));
        // generation_config.json names a token the continuation reaches: it ends there (config.json's eos 0 too).
        let end = all[4];
        let gen = model.join("generation_config.json");
        std::fs::write(&gen, format!("{{\"eos_token_id\": [4095, {end}]}}")).unwrap();
        let first = all.iter().position(|&t| t == end || t == 0).unwrap();
        let (short, finish) = run(&[]);
        assert_eq!((short.as_slice(), finish.as_str()), (&all[..=first], "eos"));
        assert_eq!(run(&["--ignore-eos"]).0, all);
        // A garbled generation_config.json is named.
        std::fs::write(&gen, "{\"eos_token_id\": [").unwrap();
        let out = generate(&[model.to_str().unwrap(), "--prompt", "a"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("generation_config.json"), "{stderr}");
    }

    #[test]
    fn generate_samples_reproducibly_from_a_seed() {
        let demo = demo_dir();
        let run = |extra: &[&str]| {
            let mut args = vec![
                "generate",
                demo.to_str().unwrap(),
                "--prompt",
                "The list type has",
            ];
            args.extend(["--tokens", "16", "--ignore-eos", "--json"]);
            args.extend(extra);
            let v: serde_json::Value = serde_json::from_str(&run_cli(&args)).unwrap();
            let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
            (ids, v["sampling"].clone())
        };
        let (greedy, none) = run(&[]);
        assert!(none.is_null());
        let (a, sampling) = run(&["--temperature", "1", "--seed", "3"]);
        assert_eq!(
            sampling,
            serde_json::json!({"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 3})
        );
        assert_eq!(run(&["--temperature", "1", "--seed", "3"]).0, a);
        assert_ne!(run(&["--temperature", "1", "--seed", "4"]).0, a);
        assert_ne!(a, greedy);
        // One candidate left: sampling is greedy decoding, at any temperature.
        assert_eq!(run(&["--temperature", "3", "--top-k", "1"]).0, greedy);
        assert_eq!(run(&["--temperature", "3", "--top-p", "1e-6"]).0, greedy);
    }

    #[test]
    fn generate_chat_renders_the_template_as_transformers_does() {
        let dir = tempfile::tempdir().unwrap();
        let model = demo_copy(dir.path());
        // Block tags on their own lines (trim_blocks, lstrip_blocks), a Python string method, raise_exception.
        let template = "{{ bos_token }}{% for m in messages %}\n  {% if m.content == 'boom' %}\n{{ raise_exception('no booms') }}\n  {% endif %}\n<{{ m.role }}>{{ m.content.strip() }}{{ eos_token }}\n{% endfor %}\n{% if add_generation_prompt %}<assistant>{% endif %}";
        let config = serde_json::json!({"chat_template": template, "bos_token": {"content": "<s>"}, "eos_token": "</s>"});
        let chat = |model: &Path, extra: &[&str]| {
            let mut args = vec![model.to_str().unwrap(), "--tokens", "6", "--ignore-eos"];
            args.extend(extra);
            generate(&args)
        };
        let missing = chat(&model, &["--chat", "hi"]);
        assert_eq!(missing.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("has no chat template"));
        std::fs::write(model.join("tokenizer_config.json"), config.to_string()).unwrap();
        let out = chat(
            &model,
            &[
                "--system",
                "  Be brief. ",
                "--chat",
                "What is a list?",
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = "<s><system>Be brief.</s>\n<user>What is a list?</s>\n<assistant>";
        assert_eq!(v["chat_prompt"], want);
        // The same tokens as the rendered text given as the prompt.
        let plain = chat(&model, &["--prompt", want, "--json"]);
        let p: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
        assert_eq!(
            (&v["ids"], &v["prompt_tokens"]),
            (&p["ids"], &p["prompt_tokens"])
        );
        // A conversation from a file: the same turn as --system/--chat, then one with an answer and a follow-up.
        let file = |name: &str, messages: serde_json::Value| {
            let path = dir.path().join(name);
            std::fs::write(&path, messages.to_string()).unwrap();
            path.to_str().unwrap().to_string()
        };
        let messages = |path: &str| {
            let out = chat(&model, &["--messages", path, "--json"]);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "{stderr}");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let one = file(
            "one.json",
            serde_json::json!([{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "What is a list?"}]),
        );
        let from_file = messages(&one);
        assert_eq!(
            (&from_file["chat_prompt"], &from_file["ids"]),
            (&v["chat_prompt"], &v["ids"])
        );
        let two = file(
            "two.json",
            serde_json::json!([
                {"role": "user", "content": "What is a list?"},
                {"role": "assistant", "content": "A sequence."},
                {"role": "user", "content": "And a tuple?"},
            ]),
        );
        assert_eq!(
            messages(&two)["chat_prompt"],
            "<s><user>What is a list?</s>\n<assistant>A sequence.</s>\n<user>And a tuple?</s>\n<assistant>"
        );
        let ends_with_answer = file(
            "answer.json",
            serde_json::json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
        );
        let tool = file(
            "tool.json",
            serde_json::json!([{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}]),
        );
        let late_system = file(
            "system.json",
            serde_json::json!([{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]),
        );
        let garbled = dir.path().join("garbled.json");
        std::fs::write(&garbled, "[{\"role\": \"user\"").unwrap();
        let garbled = garbled.to_str().unwrap();
        for (args, message) in [
            (vec!["--chat", "boom"], "no booms"),
            (vec!["--chat", ""], "the chat message is empty"),
            (
                vec!["--system", "x", "--prompt", "a"],
                "--system goes with --chat",
            ),
            (
                vec!["--messages", &ends_with_answer],
                "a conversation ends with the user's message",
            ),
            (
                vec!["--messages", &tool],
                "chat message 1: role \"tool\" (expected system, user, assistant",
            ),
            (
                vec!["--messages", &late_system],
                "chat message 2: role \"system\" (expected user, assistant; a system message comes first)",
            ),
            (vec!["--messages", garbled], "garbled.json: invalid JSON"),
            (
                vec!["--messages", &one, "--chat", "hi"],
                "cannot be used with",
            ),
        ] {
            let out = chat(&model, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(message), "{args:?}: {stderr}");
        }
    }
}
