//! The largest tensors one forward creates, known from the config before anything runs. Attention scores grow
//! with the square of the window and logits with the vocabulary, so a window length or batch the device cannot
//! hold is refused up front, naming the tensor and its size, instead of ending in a failed allocation.

use super::attention::score_block;
use super::config::ModelConfig;
use super::rope_scaling::RopeScaling;
use crate::error::{Error, Result};

/// One tensor a forward creates, in f32 (softmax and log-softmax run in f32 whatever the model's float type).
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// `4 · Π shape`, exact (no overflow for any shape).
    pub bytes: u128,
}

impl Activation {
    fn f32(name: &'static str, shape: Vec<usize>) -> Self {
        let bytes = elements(&shape).saturating_mul(4);
        Activation { name, shape, bytes }
    }
}

/// `Π dims`, exact (saturating: no overflow for any shape).
pub fn elements(dims: &[usize]) -> u128 {
    dims.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128))
}

/// Bytes that must coexist at a layer's MLP when `batch` sequences of `len` tokens pass through it, in
/// `value_bytes` a value: the outputs of `gate_proj` and `up_proj` (`[batch, len, intermediate]` each, the widest
/// layer's), their input and the residual stream (`[batch, len, hidden]` each). What else the MLP holds (the
/// SiLU, the product) depends on the backend.
pub fn mlp_peak_bytes(cfg: &ModelConfig, batch: usize, len: usize, value_bytes: usize) -> u128 {
    let width = 2 * (cfg.widest_intermediate() + cfg.hidden_size);
    elements(&[batch, len, width, value_bytes])
}

/// The tensors of one forward over `batch` sequences of `seq` tokens that grow fastest with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// What runs the forward ("calibration", "evaluation", …), for the message.
    pub what: &'static str,
    /// The sequences, in the message (a forward that runs fewer at a time through the layers names them all).
    pub batch: usize,
    pub seq: usize,
    /// The positions the model's rotary embeddings were trained on (`max_position_embeddings`); `None` under
    /// dynamic NTK scaling, which stretches them to the window.
    pub trained_positions: Option<usize>,
    /// For the `b` sequences the layers run at once (`batch`, or a chunk of them): the causal mask `[seq, seq]`
    /// (built on the host), one block of the widest layer's attention scores (`[b, heads, seq, seq]` in blocks
    /// of [`SCORE_BLOCK_BYTES`](super::attention::SCORE_BLOCK_BYTES)), its MLP activations `[b, seq,
    /// intermediate]` and the logits (`[b, seq, vocab]`, only the scored positions', or none).
    pub tensors: Vec<Activation>,
}

/// The most bytes one tensor may take on a device, and what sets that bound (for the message).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLimit {
    pub bytes: u64,
    pub source: String,
}

impl Footprint {
    /// The footprint of `what`: a forward of `cfg`'s model over `batch` sequences of `seq` tokens.
    pub fn forward(cfg: &ModelConfig, what: &'static str, batch: usize, seq: usize) -> Self {
        let logits = vec![batch, seq, cfg.vocab_size];
        Self::of(cfg, what, batch, seq, Some(logits))
    }

    /// The footprint of `what`: a forward like [`Footprint::forward`]'s whose head runs on `scored` of its
    /// positions only (multiple-choice scoring), logits `[1, scored, vocab]`.
    pub fn scoring(
        cfg: &ModelConfig,
        what: &'static str,
        batch: usize,
        seq: usize,
        scored: usize,
    ) -> Self {
        Self::of(cfg, what, batch, seq, Some(vec![1, scored, cfg.vocab_size]))
    }

    /// The footprint of `what`: the layers' forward over `batch` sequences of `seq` tokens, and the head's
    /// `logits` of that shape, if it runs.
    pub fn of(
        cfg: &ModelConfig,
        what: &'static str,
        batch: usize,
        seq: usize,
        logits: Option<Vec<usize>>,
    ) -> Self {
        let heads = cfg.layers.iter().map(|l| l.num_heads).max().unwrap_or(0);
        let mlp = cfg.widest_intermediate();
        let (rows, block_heads) = score_block(batch, heads, seq, seq);
        let mut tensors = vec![
            Activation::f32("causal mask", vec![seq, seq]),
            Activation::f32(
                "attention scores",
                vec![rows.min(batch), block_heads.min(heads), seq, seq],
            ),
            Activation::f32("MLP activations", vec![batch, seq, mlp]),
        ];
        tensors.extend(logits.map(|shape| Activation::f32("logits", shape)));
        let dynamic = matches!(cfg.rope.scaling, Some(RopeScaling::Dynamic { .. }));
        Footprint {
            what,
            batch,
            seq,
            trained_positions: (!dynamic).then_some(cfg.max_position_embeddings),
            tensors,
        }
    }

    /// The largest of the tensors.
    pub fn largest(&self) -> &Activation {
        self.tensors
            .iter()
            .max_by_key(|t| t.bytes)
            .expect("a footprint lists its tensors")
    }

    /// Refuses the forward when its largest tensor is over `limit` (a necessary condition only: the forward
    /// holds several such tensors at once, and a backward keeps every layer's).
    pub fn check(&self, limit: &DeviceLimit) -> Result<()> {
        let t = self.largest();
        if t.bytes <= limit.bytes as u128 {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{} of {} × {} tokens needs {} {:?} of {} in f32, over {} ({}): use shorter sequences or \
             fewer per batch",
            self.what,
            self.batch,
            self.seq,
            t.name,
            t.shape,
            gib(t.bytes),
            gib(limit.bytes as u128),
            limit.source
        )))
    }

    /// A note when the windows run past the positions the model was trained on: it computes there, but what it
    /// computes says little about the model (llama.cpp warns likewise; transformers is silent).
    pub fn past_trained_positions(&self) -> Option<String> {
        let trained = self.trained_positions.filter(|&p| self.seq > p)?;
        Some(format!(
            "{} of {} × {} tokens runs past the {trained} positions the model was trained on \
             (max_position_embeddings): its results there say little about the model",
            self.what, self.batch, self.seq
        ))
    }
}

/// `bytes` in GiB with two decimals.
pub(crate) fn gib(bytes: u128) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
