//! The LLaMA decoder: embeddings → N × (RMSNorm → attention → residual, RMSNorm → MLP → residual) → RMSNorm →
//! `lm_head` (tied to the embeddings or not). Module and field names are HF's, so `model.layers.3.mlp.up_proj`
//! is `llama.layers[3].mlp.up_proj` here.

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{activation::log_softmax, DType, Int, Tensor};

use super::attention::{causal_mask, Attention};
use super::cache::{KvCache, LayerKv};
use super::config::ModelConfig;
use super::linear::Linear;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::rope;
use super::tensors::layer_tensor;
use super::weights::{check_inventory, load_param, WeightSource};
use crate::backend::Precision;
use crate::error::Result;
use crate::products::product;

/// One decoder layer.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

/// Per-forward constants shared by every layer: rotary tables and the causal mask for `seq` positions that
/// follow `past` earlier ones (0 without a cache).
#[derive(Clone)]
pub struct Positions<B: Backend> {
    /// `[seq, head_dim]`
    pub cos: Tensor<B, 2>,
    /// `[seq, head_dim]`, the first half negated ([`rope::apply`]).
    pub sin: Tensor<B, 2>,
    /// `[seq, past + seq]`, added to the scores: −∞ where masked, else 0.
    pub mask: Tensor<B, 2>,
}

fn load_norm<B: Backend>(
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    name: &str,
    device: &B::Device,
) -> Result<RmsNorm<B>> {
    Ok(RmsNorm {
        weight: load_param(src, name, [cfg.hidden_size], device)?,
        eps: cfg.rms_norm_eps,
    })
}

impl<B: Backend> Block<B> {
    /// Loads decoder layer `l` of `cfg` from `src` (names and shapes are checked by the caller or on read).
    pub fn load(
        cfg: &ModelConfig,
        l: usize,
        src: &dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        let (d, hd, s) = (cfg.hidden_size, cfg.head_dim, &cfg.layers[l]);
        let (q, kv, m) = (s.num_heads * hd, s.num_kv_heads * hd, s.intermediate_size);
        let p = |suffix: &str| layer_tensor(l, suffix);
        Ok(Block {
            input_layernorm: load_norm(cfg, src, &p("input_layernorm.weight"), device)?,
            self_attn: Attention {
                q_proj: linear(src, &p("self_attn.q_proj"), [q, d], cfg.qkv_bias, device)?,
                k_proj: linear(src, &p("self_attn.k_proj"), [kv, d], cfg.qkv_bias, device)?,
                v_proj: linear(src, &p("self_attn.v_proj"), [kv, d], cfg.qkv_bias, device)?,
                o_proj: linear(src, &p("self_attn.o_proj"), [d, q], cfg.o_bias, device)?,
                head_dim: hd,
            },
            post_attention_layernorm: load_norm(
                cfg,
                src,
                &p("post_attention_layernorm.weight"),
                device,
            )?,
            mlp: Mlp {
                gate_proj: linear(src, &p("mlp.gate_proj"), [m, d], cfg.mlp_bias, device)?,
                up_proj: linear(src, &p("mlp.up_proj"), [m, d], cfg.mlp_bias, device)?,
                down_proj: linear(src, &p("mlp.down_proj"), [d, m], cfg.mlp_bias, device)?,
            },
        })
    }

    /// # Shapes
    /// `x [batch, seq, hidden]` → same
    pub fn forward(&self, x: Tensor<B, 3>, pos: &Positions<B>) -> Tensor<B, 3> {
        let a = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), pos);
        self.after_attention(x, a)
    }

    /// The attention's per-head outputs (the input of `o_proj`). `x [batch, seq, hidden]` → `[batch, seq,
    /// heads·head_dim]`
    pub fn heads(&self, x: Tensor<B, 3>, pos: &Positions<B>) -> Tensor<B, 3> {
        self.self_attn.heads(self.input_layernorm.forward(x), pos)
    }

    /// The MLP's hidden activations (the input of `down_proj`) on the stream after the attention. `h [batch,
    /// seq, hidden]` → `[batch, seq, intermediate]`
    pub fn mlp_input(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mlp.hidden(self.post_attention_layernorm.forward(h))
    }

    /// [`Block::forward`] for positions that follow those in `kv` (appended to).
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        pos: &Positions<B>,
        kv: &mut LayerKv<B>,
    ) -> Tensor<B, 3> {
        let a = self
            .self_attn
            .forward_cached(self.input_layernorm.forward(x.clone()), pos, kv);
        self.after_attention(x, a)
    }

    /// The attention residual, then the MLP and its residual. `x`, `attention` `[batch, seq, hidden]` → same
    fn after_attention(&self, x: Tensor<B, 3>, attention: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = x + attention;
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// A LLaMA-family causal language model with per-layer widths.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// `[vocab, hidden]`
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    /// `[vocab, hidden]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Param<Tensor<B, 2>>>,
    /// The blueprint the weights were loaded for (kept in step with the weights by every pruning step).
    pub config: ModelConfig,
}

fn linear<B: Backend>(
    src: &dyn WeightSource,
    prefix: &str,
    shape: [usize; 2],
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    Ok(Linear {
        weight: load_param(src, &format!("{prefix}.weight"), shape, device)?,
        bias: match bias {
            true => Some(load_param(
                src,
                &format!("{prefix}.bias"),
                [shape[0]],
                device,
            )?),
            false => None,
        },
    })
}

impl<B: AutodiffBackend> Llama<B> {
    /// The model off the autodiff graph, taking it so that no second handle keeps its weights: a pass that
    /// replaces layers then frees each original as it goes. (`valid` borrows: while the autodiff model lives,
    /// every original weight stays allocated beside its pruned replacement.)
    pub fn into_valid(self) -> Llama<B::InnerBackend> {
        self.valid()
    }
}

impl<B: Backend> Llama<B> {
    /// Loads the weights `cfg` describes from `src`, after checking every name and shape.
    pub fn load(cfg: &ModelConfig, src: &dyn WeightSource, device: &B::Device) -> Result<Self> {
        check_inventory(cfg, src)?;
        let layers = (0..cfg.num_layers())
            .map(|l| Block::load(cfg, l, src, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            layers,
            ..Self::without_layers(cfg, src, device)?
        })
    }

    /// The embeddings, final norm and head of `cfg`'s model, without its decoder layers (`layers` is empty, for
    /// a caller that loads them one at a time; `config` is still the whole model's).
    pub fn without_layers(
        cfg: &ModelConfig,
        src: &dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Llama {
            embed_tokens: load_param(
                src,
                "model.embed_tokens.weight",
                [cfg.vocab_size, d],
                device,
            )?,
            layers: vec![],
            norm: load_norm(cfg, src, "model.norm.weight", device)?,
            lm_head: match cfg.tie_word_embeddings {
                true => None,
                false => Some(load_param(
                    src,
                    "lm_head.weight",
                    [cfg.vocab_size, d],
                    device,
                )?),
            },
            config: cfg.clone(),
        })
    }

    /// The float type the weights are held (and the model computes) in.
    pub fn precision(&self) -> Precision {
        Precision::of(self.embed_tokens.val().dtype())
    }

    /// Rotary tables and causal mask for sequences of length `seq`.
    pub fn positions(&self, seq: usize, device: &B::Device) -> Positions<B> {
        Self::positions_for(&self.config, seq, device)
    }

    /// Rotary tables and causal mask of `cfg` for sequences of length `seq` (no weights needed).
    pub fn positions_for(cfg: &ModelConfig, seq: usize, device: &B::Device) -> Positions<B> {
        Self::positions_after(cfg, 0, seq, device)
    }

    /// Rotary tables and causal mask of `cfg` for `seq` positions that follow `past` cached ones.
    fn positions_after(
        cfg: &ModelConfig,
        past: usize,
        seq: usize,
        device: &B::Device,
    ) -> Positions<B> {
        let (cos, sin) = rope::tables(&cfg.rope, cfg.head_dim, past, seq, device);
        Positions {
            cos,
            sin,
            mask: causal_mask(past, seq, device),
        }
    }

    /// Token embeddings. `ids [batch, seq]` → `[batch, seq, hidden]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, s] = ids.dims();
        let d = self.config.hidden_size;
        self.embed_tokens
            .val()
            .select(0, ids.reshape([b * s]))
            .reshape([b, s, d])
    }

    /// Final norm and output projection. `h [batch, seq, hidden]` → logits `[batch, seq, vocab]`
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = h.dims();
        let w = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val(),
        };
        let v = w.dims()[0];
        product(self.norm.forward(h).reshape([b * s, d]), w.transpose()).reshape([b, s, v])
    }

    /// The last layer's output, before the final norm. `ids [batch, seq]` → `[batch, seq, hidden]`
    pub fn hidden(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let device = ids.device();
        let pos = self.positions(ids.dims()[1], &device);
        let mut h = self.embed(ids);
        for layer in &self.layers {
            h = layer.forward(h, &pos);
        }
        h
    }

    /// Logits. `ids [batch, seq]` → `[batch, seq, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.head(self.hidden(ids))
    }

    /// Logits of tokens that follow those in `cache`, whose every layer gets their keys and values.
    /// `ids [batch, new]` → `[batch, new, vocab]` (the batch must be the cache's).
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let device = ids.device();
        let new = ids.dims()[1];
        let pos = Self::positions_after(&self.config, cache.len(), new, &device);
        let mut h = self.embed(ids);
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers) {
            h = layer.forward_cached(h, &pos, kv);
        }
        cache.advance(new);
        self.head(h)
    }

    /// Negative log-likelihood of every next token (in f32 whatever the run's float type).
    /// `ids [batch, seq]` → `[batch, seq − 1]`
    pub fn token_nll(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        next_token_nll(self.forward(ids.clone()), ids)
    }

    /// Mean next-token cross-entropy over the batch (HF `LlamaForCausalLM` loss). `ids [batch, seq]` → `[1]`
    pub fn loss(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.token_nll(ids).mean()
    }
}

/// Negative log-likelihood of every next token of `ids` under `logits` (in f32 whatever their type).
/// `logits [batch, seq, vocab]`, `ids [batch, seq]` → `[batch, seq − 1]`
pub fn next_token_nll<B: Backend>(logits: Tensor<B, 3>, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let s = ids.dims()[1];
    target_nll(logits.narrow(1, 0, s - 1), ids.narrow(1, 1, s - 1))
}

/// Negative log-likelihood of `targets` under `logits` at the same positions (in f32 whatever their type).
/// `logits [batch, n, vocab]`, `targets [batch, n]` → `[batch, n]`
pub fn target_nll<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, n] = targets.dims();
    log_softmax(logits.cast(DType::F32), 2)
        .gather(2, targets.reshape([b, n, 1]))
        .reshape([b, n])
        .neg()
}
