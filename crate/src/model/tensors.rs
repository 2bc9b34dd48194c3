//! The tensor inventory of a configuration: every HF tensor name with the shape the config implies, grouped by
//! module. One table serves loading (validation), parameter accounting and export.

use super::config::ModelConfig;

/// Which part of the model a tensor belongs to (for per-module parameter counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    Embedding,
    Attention,
    Mlp,
    Norm,
    LmHead,
}

/// One expected tensor: HF name, shape (PyTorch layout, `[d_out, d_in]` for linears), owning module, layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub module: Module,
    pub layer: Option<usize>,
}

impl TensorSpec {
    /// Number of scalars in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// HF name of a decoder layer's tensor, e.g. `layer_tensor(3, "self_attn.q_proj.weight")`.
pub fn layer_tensor(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}")
}

/// All tensors of the model in HF order. A tied `lm_head` is not listed (it is `embed_tokens`).
pub fn tensor_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (d, hd, v) = (cfg.hidden_size, cfg.head_dim, cfg.vocab_size);
    let mut out = vec![TensorSpec {
        name: "model.embed_tokens.weight".into(),
        shape: vec![v, d],
        module: Module::Embedding,
        layer: None,
    }];
    for (l, s) in cfg.layers.iter().enumerate() {
        let (q, kv, m) = (s.num_heads * hd, s.num_kv_heads * hd, s.intermediate_size);
        let mut push = |suffix: &str, shape: Vec<usize>, module| {
            out.push(TensorSpec {
                name: layer_tensor(l, suffix),
                shape,
                module,
                layer: Some(l),
            })
        };
        push("input_layernorm.weight", vec![d], Module::Norm);
        push("self_attn.q_proj.weight", vec![q, d], Module::Attention);
        push("self_attn.k_proj.weight", vec![kv, d], Module::Attention);
        push("self_attn.v_proj.weight", vec![kv, d], Module::Attention);
        push("self_attn.o_proj.weight", vec![d, q], Module::Attention);
        if cfg.qkv_bias {
            push("self_attn.q_proj.bias", vec![q], Module::Attention);
            push("self_attn.k_proj.bias", vec![kv], Module::Attention);
            push("self_attn.v_proj.bias", vec![kv], Module::Attention);
        }
        if cfg.o_bias {
            push("self_attn.o_proj.bias", vec![d], Module::Attention);
        }
        push("post_attention_layernorm.weight", vec![d], Module::Norm);
        push("mlp.gate_proj.weight", vec![m, d], Module::Mlp);
        push("mlp.up_proj.weight", vec![m, d], Module::Mlp);
        push("mlp.down_proj.weight", vec![d, m], Module::Mlp);
        if cfg.mlp_bias {
            push("mlp.gate_proj.bias", vec![m], Module::Mlp);
            push("mlp.up_proj.bias", vec![m], Module::Mlp);
            push("mlp.down_proj.bias", vec![d], Module::Mlp);
        }
    }
    out.push(TensorSpec {
        name: "model.norm.weight".into(),
        shape: vec![d],
        module: Module::Norm,
        layer: None,
    });
    if !cfg.tie_word_embeddings {
        out.push(TensorSpec {
            name: "lm_head.weight".into(),
            shape: vec![v, d],
            module: Module::LmHead,
            layer: None,
        });
    }
    out
}
