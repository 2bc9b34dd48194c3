//! HF-named access to a model's weights: the bridge between the module tree and everything that works per
//! tensor (gradients, scores, export).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::linear::Linear;
use super::llama::{Block, Llama};
use super::tensors::layer_tensor;
use crate::error::Result;
use crate::readback::to_data;

/// A weight of rank 1 (norms, biases) or 2 (linears, embeddings).
#[derive(Debug, Clone)]
pub enum Weight<B: Backend> {
    Vector(Tensor<B, 1>),
    Matrix(Tensor<B, 2>),
}

impl<B: Backend> Weight<B> {
    /// Shape in PyTorch layout.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Weight::Vector(t) => t.dims().to_vec(),
            Weight::Matrix(t) => t.dims().to_vec(),
        }
    }

    /// All values as one vector.
    pub fn flatten(self) -> Tensor<B, 1> {
        match self {
            Weight::Vector(t) => t,
            Weight::Matrix(t) => t.flatten(0, 1),
        }
    }

    /// The values read back in the weight's float type, with its shape.
    pub async fn to_data(self) -> Result<TensorData> {
        match self {
            Weight::Vector(t) => to_data(t).await,
            Weight::Matrix(t) => to_data(t).await,
        }
    }
}

impl<B: AutodiffBackend> Weight<B> {
    /// The gradient of this weight, if the backward pass reached it.
    pub fn grad(&self, grads: &B::Gradients) -> Option<Weight<B::InnerBackend>> {
        match self {
            Weight::Vector(t) => t.grad(grads).map(Weight::Vector),
            Weight::Matrix(t) => t.grad(grads).map(Weight::Matrix),
        }
    }
}

fn push_linear<B: Backend>(out: &mut Vec<(String, Weight<B>)>, prefix: String, lin: &Linear<B>) {
    out.push((format!("{prefix}.weight"), Weight::Matrix(lin.weight.val())));
    if let Some(b) = &lin.bias {
        out.push((format!("{prefix}.bias"), Weight::Vector(b.val())));
    }
}

impl<B: Backend> Block<B> {
    /// The weights of decoder layer `l` with their HF names, in module order.
    pub fn named_weights(&self, l: usize) -> Vec<(String, Weight<B>)> {
        let p = |s: &str| layer_tensor(l, s);
        let mut out = vec![(
            p("input_layernorm.weight"),
            Weight::Vector(self.input_layernorm.weight.val()),
        )];
        let a = &self.self_attn;
        for (name, lin) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            push_linear(&mut out, p(&format!("self_attn.{name}")), lin);
        }
        out.push((
            p("post_attention_layernorm.weight"),
            Weight::Vector(self.post_attention_layernorm.weight.val()),
        ));
        let m = &self.mlp;
        for (name, lin) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ] {
            push_linear(&mut out, p(&format!("mlp.{name}")), lin);
        }
        out
    }
}

impl<B: Backend> Llama<B> {
    /// Every weight with its HF name, in module order. A tied `lm_head` is
    /// not listed: it is `model.embed_tokens.weight`.
    pub fn named_weights(&self) -> Vec<(String, Weight<B>)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            Weight::Matrix(self.embed_tokens.val()),
        )];
        for (l, block) in self.layers.iter().enumerate() {
            out.extend(block.named_weights(l));
        }
        out.push((
            "model.norm.weight".to_string(),
            Weight::Vector(self.norm.weight.val()),
        ));
        if let Some(w) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), Weight::Matrix(w.val())));
        }
        out
    }
}
