//! Forward throughput per backend (not a test): tokens/s of a batched forward pass on the two fixtures and on
//! a random 30M-parameter model of realistic proportions. Run: `cargo bench --bench forward`.

use std::time::Instant;

use burn::tensor::backend::Backend;
use prunelab::eval::perplexity::batch_tensor;
use prunelab::io::SafetensorsWeights;
use prunelab::model::random::RandomWeights;
use prunelab::model::{Llama, ModelConfig};
use prunelab::readback::scalar;

fn bench<B: Backend>(label: &str, model: &Llama<B>, batch: usize, seq: usize, device: &B::Device) {
    let vocab = model.config.vocab_size as u32;
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..seq).map(|t| (b * 31 + t * 7) as u32 % vocab).collect())
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(|w| w.as_slice()).collect();
    let run = || {
        pollster::block_on(scalar(
            model.forward(batch_tensor::<B>(&refs, device)).sum(),
        ))
        .unwrap()
    };
    run(); // warm-up: kernels compiled, memory pools sized
    let iters = 5;
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    let secs = start.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{label:<28} batch {batch:>2} × {seq:>3} tokens: {:>10.0} tokens/s ({:.1} ms per forward)",
        (batch * seq) as f64 / secs,
        secs * 1e3
    );
}

fn run_backend<B: Backend>(backend: &str) {
    let device = B::Device::default();
    let shared = match std::env::var_os("PRUNELAB_SHARED") {
        Some(p) => std::path::PathBuf::from(p).join("fixtures"),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
    };
    for name in ["tiny-mha", "tiny-gqa"] {
        let dir = shared.join(name);
        let cfg = ModelConfig::from_json(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st =
            SafetensorsWeights::from_files(&[("model.safetensors".into(), &bytes)], None).unwrap();
        let model = Llama::<B>::load(&cfg, &st, &device).unwrap();
        bench(&format!("{backend} {name}"), &model, 8, 128, &device);
    }
    let cfg = ModelConfig::from_json(
        br#"{"model_type":"llama","vocab_size":8192,"hidden_size":512,"intermediate_size":1536,
        "num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":2,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let src = RandomWeights::new(&cfg, 0, 0.02);
    let model = Llama::<B>::load(&cfg, &src, &device).unwrap();
    bench(&format!("{backend} random-30M"), &model, 8, 128, &device);
}

/// `cargo bench --bench forward [-- cpu wgpu cuda]`: the named backends, or every compiled one.
fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |b: &str| args.is_empty() || args.iter().any(|a| a == b);
    if wanted("cpu") {
        run_backend::<prunelab::backend::Cpu>("cpu");
    }
    #[cfg(feature = "wgpu")]
    if wanted("wgpu") {
        run_backend::<prunelab::backend::Wgpu>("wgpu");
    }
    #[cfg(feature = "cuda")]
    if wanted("cuda") {
        run_backend::<prunelab::backend::Cuda>("cuda");
    }
}
