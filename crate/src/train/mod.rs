//! Training from scratch (the built-in demo model; later LoRA recovery): AdamW with linear warm-up, cosine decay
//! and gradient-norm clipping on random windows of a token stream, seeded. Backend-generic and asynchronous
//! like the rest of the core.

pub mod bpe;
pub mod unigram;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::perplexity::batch_tensor;
use crate::model::Llama;
use crate::progress::{checkpoint, Progress, ProgressEvent};
use crate::readback::scalar;

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Tokens per window.
    pub seq_len: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup: usize,
    /// Learning rate at the end of the cosine decay, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm to this value.
    pub clip_norm: f64,
    pub seed: u64,
}

impl Schedule {
    /// Learning rate at `step` (0-based): linear warm-up, then cosine decay to `min_lr_ratio · lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = self.min_lr_ratio * self.lr;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// Refuses settings that cannot train.
    pub fn check(&self, tokens: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.steps == 0 || self.batch == 0 || self.seq_len < 2 {
            return bad(format!(
                "training needs steps, batch ≥ 1 and seq_len ≥ 2 (got {}, {}, {})",
                self.steps, self.batch, self.seq_len
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && (0.0..=1.0).contains(&self.min_lr_ratio)) {
            return bad(format!(
                "learning rate {} / min ratio {} is not usable",
                self.lr, self.min_lr_ratio
            ));
        }
        let (decay, clip) = (self.weight_decay, self.clip_norm);
        if !(decay >= 0.0 && decay.is_finite() && clip > 0.0 && clip.is_finite()) {
            return bad(format!(
                "weight decay {decay} must be ≥ 0 and the clipping norm {clip} > 0 (both finite)"
            ));
        }
        if tokens <= self.seq_len {
            return bad(format!(
                "the training text has {tokens} tokens: fewer than one window of {}",
                self.seq_len
            ));
        }
        Ok(())
    }
}

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub lr: f64,
    /// Mean next-token cross-entropy of the step's batch (nats).
    pub loss: f64,
}

/// Trains `model` on random windows of `ids`; each step's progress report says its loss and learning rate.
/// Returns the trained model and the log of every step.
pub async fn train<B: AutodiffBackend>(
    mut model: Llama<B>,
    ids: &[u32],
    schedule: &Schedule,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<(Llama<B>, Vec<StepLog>)> {
    schedule.check(ids.len())?;
    crate::eval::perplexity::check_ids(ids, model.config.vocab_size)?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(schedule.weight_decay as f32)
        .with_grad_clipping(Some(
            burn::optim::grad_clipping::GradientClippingConfig::Norm(schedule.clip_norm as f32),
        ))
        .init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(schedule.seed);
    let last_start = ids.len() - schedule.seq_len;
    let mut log = Vec::new();
    for step in 0..schedule.steps {
        checkpoint(progress).await?;
        let windows: Vec<&[u32]> = (0..schedule.batch)
            .map(|_| rng.random_range(0..=last_start))
            .map(|s| &ids[s..s + schedule.seq_len])
            .collect();
        let loss = model.loss(batch_tensor::<B>(&windows, device));
        let value = scalar(loss.clone().inner()).await?;
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "training diverged at step {step} (loss {value}); lower the learning rate"
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = schedule.lr_at(step);
        model = optim.step(lr, model, grads);
        let entry = StepLog {
            step,
            lr,
            loss: value,
        };
        log.push(entry);
        progress.report(
            ProgressEvent::new("train", step + 1, schedule.steps)
                .saying(format!("loss {value:.3}  lr {lr:.2e}")),
        );
    }
    Ok((model, log))
}
