//! Perplexity of a model read one decoder layer at a time (`eval --stream`, `prune --stream --eval`), for models
//! that do not fit in memory: the windows are embedded, then every decoder layer is loaded in turn, moves all
//! the windows' activations and is dropped; the final norm and head score them last. The same windows and batches
//! as [`super::perplexity`], so the same numbers.
//! Memory: the embeddings and head, one decoder layer, and the activations of every window
//! (`windows × seq_len × hidden` floats). Native only: reads block on the device.

use burn::tensor::backend::Backend;

use super::perplexity::{batch_tensor, check_ids, windows, Perplexity, PerplexityOptions};
use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::model::footprint::{elements, mlp_peak_bytes};
use crate::model::llama::{next_token_nll, Block};
use crate::model::resident::Resident;
use crate::model::weights::check_inventory;
use crate::model::{Llama, ModelConfig, WeightSource};
use crate::progress::{Progress, ProgressEvent};
use crate::readback;

/// What a streamed evaluation of the model `cfg` describes holds on its device in `precision` for a text of
/// `tokens` tokens: one decoder layer with the embeddings and head, every window's activations `[windows,
/// seq_len, hidden]`, and what one batch of them computes at a layer's MLP
/// ([`mlp_peak_bytes`](crate::model::footprint::mlp_peak_bytes)). `remedies`: what to change when the weights
/// alone are too large, and when the windows make them so.
pub fn streamed_resident(
    cfg: &ModelConfig,
    opts: &PerplexityOptions,
    tokens: usize,
    precision: Precision,
    remedies: [&'static str; 2],
) -> Resident {
    let windows = opts.window_count(tokens);
    let bytes = precision.bytes();
    let activations = elements(&[windows, opts.seq_len, cfg.hidden_size, bytes]);
    let batch = mlp_peak_bytes(cfg, opts.batch.min(windows), opts.seq_len, bytes);
    Resident::streamed_evaluation(cfg, precision, remedies[0])
        .with_evaluation(activations.saturating_add(batch), remedies[1])
}

/// Evaluates the model `cfg` describes, read from `src` one decoder layer at a time, on `ids`.
pub fn streamed_perplexity<B: Backend>(
    src: &dyn WeightSource,
    cfg: &ModelConfig,
    ids: &[u32],
    opts: &PerplexityOptions,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Perplexity> {
    check_inventory(cfg, src)?;
    check_ids(ids, cfg.vocab_size)?;
    let windows = windows(ids, opts)?;
    let resident = Llama::<B>::without_layers(cfg, src, device)?;
    let pos = Llama::<B>::positions_for(cfg, opts.seq_len, device);
    let batches: Vec<_> = windows
        .chunks(opts.batch)
        .map(|chunk| batch_tensor::<B>(chunk, device))
        .collect();
    // `[batch, seq_len, hidden]` per batch, through the layers loaded so far.
    let mut hs: Vec<_> = batches
        .iter()
        .map(|ids| resident.embed(ids.clone()))
        .collect();
    let layers = cfg.num_layers();
    for l in 0..layers {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let block = Block::<B>::load(cfg, l, src, device)?;
        hs = hs.into_iter().map(|h| block.forward(h, &pos)).collect();
        progress
            .report(ProgressEvent::new("eval layers", l + 1, layers).saying(format!("layer {l}")));
    }
    let mut nll = 0.0f64;
    for (h, ids) in hs.into_iter().zip(batches) {
        let sum = next_token_nll(resident.head(h), ids).sum();
        nll += pollster::block_on(readback::scalar(sum))?;
    }
    Ok(Perplexity::from_nll_sum(nll, windows.len(), opts.seq_len))
}
