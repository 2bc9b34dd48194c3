//! Calibration windows: sampled from a text (seeded), or given explicitly (to reproduce a published run).

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::activations::windows_per_chunk;
use super::allocate::Allocation;
use super::compensate::Compensation;
use super::depth::SKIP_BATCH;
use super::fitness::windows_per_fitness;
use super::gradients::windows_per_backward;
use super::{Importance, Recipe};
use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::model::footprint::Footprint;
use crate::model::ModelConfig;

/// Where calibration tokens come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum CalibSource {
    /// `samples` windows of `length` tokens at seeded random offsets of the tokenized text.
    Sampled { samples: usize, length: usize },
    /// Windows of token ids given verbatim.
    Ids { windows: Vec<Vec<u32>> },
}

/// Samples `samples` windows of `length` tokens from `ids` at offsets drawn uniformly with `seed`.
pub fn sample_windows(
    ids: &[u32],
    samples: usize,
    length: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    if samples == 0 || length < 2 {
        return Err(Error::Invalid(format!(
            "calibration needs ≥ 1 sample of ≥ 2 tokens (got {samples} × {length})"
        )));
    }
    if ids.len() < length {
        return Err(Error::Text(format!(
            "calibration text has {} tokens, fewer than one window of {length}",
            ids.len()
        )));
    }
    // More samples than distinct windows only repeats windows (and an absurd count exhausts memory).
    let distinct = ids.len() - length + 1;
    if samples > distinct {
        return Err(Error::Text(format!(
            "calibration text of {} tokens has {distinct} distinct windows of {length}, fewer than the {samples} samples asked",
            ids.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok((0..samples)
        .map(|_| {
            let start = rng.random_range(0..=ids.len() - length);
            ids[start..start + length].to_vec()
        })
        .collect())
}

/// The forwards of calibration: the layers over a batch of windows (a backward's for a loss to differentiate:
/// [`windows_per_backward`]; a batch of the held-out windows a search compares candidates on:
/// [`windows_per_fitness`]; else a chunk:
/// [`windows_per_chunk`]) and the head's logits where a loss is taken ([`forward_batches`]). The activations
/// every window holds between layers are one tensor per chunk, none larger than the chunk's MLP activations.
/// `precision` is the model's, which sets how many windows a backward runs.
pub fn calibration_footprint(
    cfg: &ModelConfig,
    windows: &[Vec<u32>],
    recipe: &Recipe,
    precision: Precision,
) -> Footprint {
    let (n, len) = (windows.len(), windows.first().map_or(0, Vec::len));
    let (layers, logits) = forward_batches(cfg, recipe, n, len, precision);
    let logits = (logits > 0).then(|| vec![logits, len, cfg.vocab_size]);
    let mut f = Footprint::of(cfg, "calibration", layers, len, logits);
    f.batch = n;
    f
}

/// How many of `n` calibration windows of `len` tokens one forward of `recipe` (or of either of its depth and
/// width steps) runs through the layers, and on how many it runs the head — the most over what the recipe runs:
/// a backward's batch, both, for gradient scores and AdaPruner's trials; one window, both, for the Fisher
/// diagonal alone; a chunk, and at most [`SKIP_BATCH`] of it, for the skipped-layer perplexity; a chunk and
/// none for the activation scores and repairs, which stop at the last layer; a batch of the held-out windows,
/// both, to compare candidates on (AdaPruner, the search allocation).
fn forward_batches(
    cfg: &ModelConfig,
    recipe: &Recipe,
    n: usize,
    len: usize,
    precision: Precision,
) -> (usize, usize) {
    recipe
        .and_steps()
        .iter()
        .map(|r| {
            let chunk = windows_per_chunk(cfg, len, r).min(n);
            let backward = windows_per_backward(cfg, len, n, r, precision).min(n);
            let held_out = match (&r.allocation, r.importance) {
                (_, Importance::Adapruner) => {
                    r.adapruner.clone().unwrap_or_default().fitness_windows
                }
                (Allocation::Search(search), _) => search.fitness_windows,
                _ => 0,
            }
            .min(windows_per_fitness(cfg, len, r))
            .min(n);
            let (layers, head) = match r.importance {
                i if i.needs_gradient() || i == Importance::Adapruner => (backward, backward),
                i if i.needs_fisher() => (1.min(n), 1.min(n)),
                Importance::Perplexity => (chunk, chunk.min(SKIP_BATCH)),
                _ => (chunk, 0),
            };
            let repair = match r.compensation {
                Compensation::None => 0,
                _ => chunk,
            };
            (layers.max(repair).max(held_out), head.max(held_out))
        })
        .fold((0, 0), |(l, h), (a, b)| (l.max(a), h.max(b)))
}

/// Checks windows before they become a `[windows, len]` batch: at least one, all of one length ≥ 2, every id
/// inside a vocabulary of `vocab_size`.
pub fn check_windows(windows: &[Vec<u32>], vocab_size: usize) -> Result<()> {
    let len = windows.first().map(Vec::len).unwrap_or(0);
    if len < 2 || windows.iter().any(|w| w.len() != len) {
        return Err(Error::Invalid(format!(
            "calibration windows must be non-empty and all of one length ≥ 2 (got {} windows of lengths {}..={})",
            windows.len(),
            windows.iter().map(Vec::len).min().unwrap_or(0),
            windows.iter().map(Vec::len).max().unwrap_or(0),
        )));
    }
    crate::eval::perplexity::check_ids(&windows.concat(), vocab_size)
}
