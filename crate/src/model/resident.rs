//! What a run holds on its device from start to end, known exactly from the config before anything loads: the
//! model's weights and, when it runs a backward, a gradient for each of them (burn's backward computes every
//! weight's, in the weights' type). A run whose weights and gradients alone are over the device's memory is
//! refused up front, naming both, instead of failing part-way through loading or in an allocation a gradient
//! later. A necessary condition only: activations come on top (see [`Footprint`](super::footprint::Footprint)).

use super::config::ModelConfig;
use super::footprint::{gib, DeviceLimit};
use super::params::count_params;
use crate::backend::Precision;
use crate::error::{Error, Result};

/// The weights (and gradients) a run holds for its whole length.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    /// What runs ("prune", "evaluation", …), for the message.
    pub what: &'static str,
    pub precision: Precision,
    /// Every parameter once (a tied head is the embedding), in `precision`.
    pub weights: u128,
    /// As many bytes again when the run takes gradients, else 0.
    pub gradients: u128,
    /// What the user can change, for the message ("use --stream", …).
    pub remedy: &'static str,
}

impl Resident {
    /// The model of `cfg` held in `precision`, with a gradient for every weight if `gradients`.
    pub fn of(
        cfg: &ModelConfig,
        what: &'static str,
        precision: Precision,
        gradients: bool,
        remedy: &'static str,
    ) -> Self {
        let weights = (count_params(cfg).total as u128).saturating_mul(precision.bytes() as u128);
        Resident {
            what,
            precision,
            weights,
            gradients: if gradients { weights } else { 0 },
            remedy,
        }
    }

    /// Weights and gradients together.
    pub fn bytes(&self) -> u128 {
        self.weights.saturating_add(self.gradients)
    }

    /// Refuses the run when its weights and gradients are over `memory`.
    pub fn check(&self, memory: &DeviceLimit) -> Result<()> {
        if self.bytes() <= memory.bytes as u128 {
            return Ok(());
        }
        let precision = self.precision.name();
        let held = match self.gradients {
            0 => format!("its weights in {precision} alone"),
            g => format!(
                "its weights in {precision} ({}) and their gradients ({})",
                gib(self.weights),
                gib(g)
            ),
        };
        Err(Error::Invalid(format!(
            "{} needs {} for {held}, over {} ({}): {}",
            self.what,
            gib(self.bytes()),
            gib(memory.bytes as u128),
            memory.source,
            self.remedy
        )))
    }
}
