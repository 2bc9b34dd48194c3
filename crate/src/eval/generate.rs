//! Greedy generation: a short continuation that shows what pruning did to a model, in words. No KV cache — each
//! step runs the whole prefix (fine for the few dozen tokens of a sample).

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::Llama;
use crate::readback::to_vec;

/// The `n` tokens greedy decoding appends to `prompt` (ties: the lowest id).
pub async fn greedy<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    n: usize,
    device: &B::Device,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Invalid("generation needs a non-empty prompt".into()));
    }
    crate::eval::perplexity::check_ids(prompt, model.config.vocab_size)?;
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let logits = model.forward(batch_tensor::<B>(&[ids.as_slice()], device));
        let [_, s, v] = logits.dims();
        let last = to_vec(logits.narrow(1, s - 1, 1).reshape([v])).await?;
        let next = (0..v).fold(0, |best, i| if last[i] > last[best] { i } else { best });
        ids.push(next as u32);
    }
    Ok(ids[prompt.len()..].to_vec())
}
