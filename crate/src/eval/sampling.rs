//! How the next token is chosen from the last position's logits: greedily (the highest logit), or drawn from the
//! softmax at a temperature after top-k and top-p (nucleus) filtering, in the order transformers' `generate`
//! applies them. Sampling is seeded: the same seed continues the same prompt the same way.

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Settings for drawing tokens (`temperature` > 0; `top_k` 0 = every token; `top_p` in (0, 1], 1 = every token).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    /// Refuses settings that select no token or divide by zero.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Invalid(format!(
                "temperature {}: must be a positive number (greedy decoding has none)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top-p {}: must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Chooses each next token: greedily, or by seeded sampling.
pub enum Chooser {
    Greedy,
    Sample {
        sampling: Sampling,
        /// Boxed: the generator's state is large next to `Greedy`.
        rng: Box<rand::rngs::StdRng>,
    },
}

impl Chooser {
    /// A sampling chooser, after checking its settings.
    pub fn sample(sampling: Sampling) -> Result<Self> {
        sampling.check()?;
        Ok(Chooser::Sample {
            rng: Box::new(rand::rngs::StdRng::seed_from_u64(sampling.seed)),
            sampling,
        })
    }

    /// The next token for one position's `logits` (`[vocab]`).
    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        match self {
            Chooser::Greedy => argmax(logits),
            Chooser::Sample { sampling, rng } => {
                let (ids, probs) = candidates(logits, sampling);
                let mut u = rng.random::<f64>() * probs.iter().sum::<f64>();
                for (&id, &p) in ids.iter().zip(&probs) {
                    if u < p {
                        return id;
                    }
                    u -= p;
                }
                ids[ids.len() - 1]
            }
        }
    }
}

/// The highest logit's id (ties: the lowest id).
pub fn argmax(logits: &[f32]) -> u32 {
    (0..logits.len()).fold(0, |best, i| if logits[i] > logits[best] { i } else { best }) as u32
}

/// The tokens sampling may draw and their unnormalised probabilities, most likely first: the softmax of
/// `logits / temperature`, cut to the `top_k` most likely, then to the fewest whose probability reaches `top_p`
/// of what is left (at least one).
pub fn candidates(logits: &[f32], s: &Sampling) -> (Vec<u32>, Vec<f64>) {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if s.top_k > 0 {
        ids.truncate(s.top_k);
    }
    let top = logits[ids[0] as usize] as f64;
    let t = s.temperature as f64;
    let mut probs: Vec<f64> = ids
        .iter()
        .map(|&i| ((logits[i as usize] as f64 - top) / t).exp())
        .collect();
    let (total, mut mass) = (probs.iter().sum::<f64>(), 0.0);
    let keep = probs
        .iter()
        .position(|p| {
            mass += p;
            mass >= s.top_p as f64 * total
        })
        .map_or(probs.len(), |i| i + 1);
    ids.truncate(keep);
    probs.truncate(keep);
    (ids, probs)
}
