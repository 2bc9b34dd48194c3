//! Perplexity as methods.md §5 defines it: the whole text tokenized once, cut into consecutive
//! non-overlapping windows of `seq_len` tokens, the partial tail dropped, optionally only the first
//! `max_windows`; PPL = exp(mean NLL over every predicted token, `seq_len − 1` per window).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::footprint::Footprint;
use crate::model::{Llama, ModelConfig};
use crate::progress::{checkpoint, Progress, ProgressEvent};
use crate::readback;

/// How to cut the token stream.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerplexityOptions {
    /// Tokens per window (LLM-Pruner and FLAP report 128).
    pub seq_len: usize,
    /// Keep only the first N windows.
    pub max_windows: Option<usize>,
    /// Windows per forward pass.
    pub batch: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            seq_len: 128,
            max_windows: None,
            batch: 8,
        }
    }
}

impl PerplexityOptions {
    /// The windows a text of `tokens` tokens gives (as [`windows`] cuts them).
    pub fn window_count(&self, tokens: usize) -> usize {
        (tokens / self.seq_len.max(1)).min(self.max_windows.unwrap_or(usize::MAX))
    }

    /// The forward of one batch of windows of a text of `tokens` tokens under `cfg`.
    pub fn footprint(&self, cfg: &ModelConfig, tokens: usize) -> Footprint {
        let batch = self.batch.min(self.window_count(tokens));
        Footprint::forward(cfg, "evaluation", batch, self.seq_len)
    }
}

/// The outcome of one perplexity evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    /// Mean negative log-likelihood per predicted token.
    pub mean_nll: f64,
    /// Predicted tokens (`windows × (seq_len − 1)`).
    pub tokens: usize,
    pub windows: usize,
}

impl Perplexity {
    /// From the NLL summed over every predicted token of `windows` windows of `seq_len` tokens.
    pub fn from_nll_sum(nll: f64, windows: usize, seq_len: usize) -> Self {
        let tokens = windows * (seq_len - 1);
        let mean_nll = nll / tokens as f64;
        Perplexity {
            ppl: mean_nll.exp(),
            mean_nll,
            tokens,
            windows,
        }
    }
}

/// Cuts `ids` into the windows the protocol evaluates.
pub fn windows<'a>(ids: &'a [u32], opts: &PerplexityOptions) -> Result<Vec<&'a [u32]>> {
    if opts.seq_len < 2 || opts.batch == 0 || opts.max_windows == Some(0) {
        return Err(Error::Invalid(format!(
            "perplexity needs seq_len ≥ 2, batch ≥ 1 and at least one window (got seq_len {}, batch {}, \
             max_windows {:?})",
            opts.seq_len, opts.batch, opts.max_windows
        )));
    }
    let mut w: Vec<&[u32]> = ids.chunks_exact(opts.seq_len).collect();
    if let Some(max) = opts.max_windows {
        w.truncate(max);
    }
    if w.is_empty() {
        return Err(Error::Text(format!(
            "{} tokens do not fill one window of {} tokens",
            ids.len(),
            opts.seq_len
        )));
    }
    Ok(w)
}

/// Checks that every id indexes the model's vocabulary (an out-of-range id would read garbage or abort).
pub fn check_ids(ids: &[u32], vocab_size: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(id) => Err(Error::Text(format!(
            "token id {id} is outside the model's vocabulary of {vocab_size}"
        ))),
        None => Ok(()),
    }
}

/// Stacks windows into an id tensor `[windows, seq_len]`.
pub fn batch_tensor<B: Backend>(windows: &[&[u32]], device: &B::Device) -> Tensor<B, 2, Int> {
    let seq = windows[0].len();
    let flat: Vec<i64> = windows
        .iter()
        .flat_map(|w| w.iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(TensorData::new(flat, [windows.len(), seq]), device)
}

/// Evaluates `model` on `ids`.
pub async fn perplexity<B: Backend>(
    model: &Llama<B>,
    ids: &[u32],
    opts: &PerplexityOptions,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Perplexity> {
    check_ids(ids, model.config.vocab_size)?;
    let windows = windows(ids, opts)?;
    let mut nll = 0.0f64;
    let total = windows.len();
    progress.report(ProgressEvent::new("eval", 0, total));
    for (i, chunk) in windows.chunks(opts.batch).enumerate() {
        checkpoint(progress).await?;
        let sum = model.token_nll(batch_tensor::<B>(chunk, device)).sum();
        nll += readback::scalar(sum).await?;
        let done = (i * opts.batch + chunk.len()).min(total);
        let so_far = Perplexity::from_nll_sum(nll, done, opts.seq_len).ppl;
        progress.report(
            ProgressEvent::new("eval", done, total).saying(format!("perplexity {so_far:.3}")),
        );
    }
    Ok(Perplexity::from_nll_sum(nll, total, opts.seq_len))
}
