//! Named shapes of real checkpoints, as HF `config.json` objects: synthetic checkpoints with random weights of
//! these shapes prove scale and speed where the real weights cannot be downloaded.

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Names [`known_shape`] accepts.
pub const SHAPES: [&str; 4] = ["llama-7b", "llama2-7b", "llama3-8b", "tiny"];

/// The HF config of a named shape.
pub fn known_shape(name: &str) -> Result<Value> {
    // (hidden, intermediate, layers, heads, kv heads, vocab, rope θ, max positions, rms ε)
    let (d, m, l, h, kv, v, theta, ctx, eps) = match name {
        "llama-7b" => (4096, 11008, 32, 32, 32, 32000, 10000.0, 2048, 1e-6),
        "llama2-7b" => (4096, 11008, 32, 32, 32, 32000, 10000.0, 4096, 1e-5),
        "llama3-8b" => (4096, 14336, 32, 32, 8, 128256, 500000.0, 8192, 1e-5),
        "tiny" => (128, 344, 4, 4, 2, 1000, 10000.0, 512, 1e-5),
        other => {
            return Err(Error::Invalid(format!(
                "unknown shape {other:?}: expected one of {}",
                SHAPES.join(", ")
            )))
        }
    };
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d,
        "intermediate_size": m,
        "num_hidden_layers": l,
        "num_attention_heads": h,
        "num_key_value_heads": kv,
        "vocab_size": v,
        "rope_theta": theta,
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }))
}
