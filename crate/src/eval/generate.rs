//! Generation with a KV cache: the prompt runs through the model once (prefill), then every step runs the one
//! token it chose (greedily or sampled, see [`Chooser`]). Shows what pruning did to a model, in words, and how
//! fast it now decodes.

use burn::tensor::{backend::Backend, Tensor};

use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::eval::sampling::Chooser;
use crate::model::cache::KvCache;
use crate::model::Llama;
use crate::readback::to_vec;

/// One continuation in progress (batch 1).
pub struct Decoder<'a, B: Backend> {
    model: &'a Llama<B>,
    cache: KvCache<B>,
    chooser: Chooser,
    /// The token the last forward chose, not yet fed back.
    next: u32,
    device: B::Device,
}

impl<'a, B: Backend> Decoder<'a, B> {
    /// Runs `prompt` through `model` (filling the cache) and chooses the first token with `chooser`.
    pub async fn start(
        model: &'a Llama<B>,
        prompt: &[u32],
        mut chooser: Chooser,
        device: &B::Device,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::Invalid("generation needs a non-empty prompt".into()));
        }
        crate::eval::perplexity::check_ids(prompt, model.config.vocab_size)?;
        let mut cache = KvCache::new(model.layers.len());
        let logits = model.forward_cached(batch_tensor::<B>(&[prompt], device), &mut cache);
        Ok(Decoder {
            next: choose_last(logits, &mut chooser).await?,
            model,
            cache,
            chooser,
            device: device.clone(),
        })
    }

    /// The token chosen last (the prompt's continuation so far ends with it).
    pub fn next_token(&self) -> u32 {
        self.next
    }

    /// Whether the token chosen last is one of `stop` (end-of-text ids), where a continuation ends.
    pub fn stopped(&self, stop: &[u32]) -> bool {
        stop.contains(&self.next)
    }

    /// Feeds the chosen token back (one position through every layer) and chooses the following one.
    pub async fn step(&mut self) -> Result<u32> {
        let ids = batch_tensor::<B>(&[&[self.next]], &self.device);
        let logits = self.model.forward_cached(ids, &mut self.cache);
        self.next = choose_last(logits, &mut self.chooser).await?;
        Ok(self.next)
    }
}

/// The token `chooser` picks from the last position's logits (read back to the host). `logits [1, seq, vocab]`
async fn choose_last<B: Backend>(logits: Tensor<B, 3>, chooser: &mut Chooser) -> Result<u32> {
    let [_, s, v] = logits.dims();
    Ok(chooser.choose(&to_vec(logits.narrow(1, s - 1, 1).reshape([v])).await?))
}

/// The tokens greedy decoding appends to `prompt`: `n` of them, or fewer when one of `stop` (end-of-text ids)
/// comes first, which is then the last (ties: the lowest id).
pub async fn greedy<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    n: usize,
    stop: &[u32],
    device: &B::Device,
) -> Result<Vec<u32>> {
    let mut decoder = Decoder::start(model, prompt, Chooser::Greedy, device).await?;
    let mut out = vec![decoder.next_token()];
    while out.len() < n && !decoder.stopped(stop) {
        out.push(decoder.step().await?);
    }
    out.truncate(n);
    Ok(out)
}
