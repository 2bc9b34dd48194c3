//! What a run holds on its device, known from the config before anything loads: the model's weights for the whole
//! run (a streamed run: one decoder layer, or two; a streamed evaluation: one, with the embeddings and head) and,
//! at its peak, one of: a gradient for each weight when it runs a backward (burn's backward computes every
//! weight's, in the weights' type) with what the backward adds (its activations, counted as fitted to measured
//! peaks, and running sums of gradients); the pruned copy a search candidate makes of the layers it changes while
//! its loss is measured (the gradients are freed by then); what the layer-wise calibration passes hold for a whole
//! layer (every window's activations, one chunk's MLP tensors and the layer's statistics); or, in a streamed
//! evaluation, every evaluation window's activations and one batch's MLP tensors. A run whose weights and that
//! peak are over the device's memory is refused up front, naming them, instead of failing part-way through
//! loading or in an allocation later. A necessary condition only: what else a forward computes inside a layer
//! comes on top (see [`Footprint`](super::footprint::Footprint)).

use super::config::ModelConfig;
use super::footprint::{gib, DeviceLimit};
use super::params::count_params;
use crate::backend::Precision;
use crate::error::{Error, Result};

/// The weights a run holds for its whole length, and at its peak a backward (gradients, activations, sums), a
/// search candidate's copy, the layer-wise calibration passes or a streamed evaluation's windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    /// What runs ("prune", "evaluation", …), for the message.
    pub what: &'static str,
    pub precision: Precision,
    /// The weights on the device for the whole run, in `precision`: every parameter once (a tied head is the
    /// embedding), or a streamed run's decoder layers at a time.
    pub weights: u128,
    /// What `weights` are, for the message ("its weights", "one decoder layer's weights", …).
    pub held: &'static str,
    /// As many bytes again when the run takes gradients, else 0.
    pub gradients: u128,
    /// What a backward holds beside the gradients at its peak: its windows' activations and the running sums
    /// of gradients (0 without a backward).
    pub backward: u128,
    /// A search candidate's pruned copy of the layers it changes, held beside the weights while its loss is
    /// measured, in `precision` (0 without a search).
    pub copy: u128,
    /// What the layer-wise calibration passes hold through a layer: every window's activations, one chunk's MLP
    /// tensors and the layer's statistics (0 without calibration activations; see
    /// [`pass_bytes`](crate::prune::activations::pass_bytes)).
    pub calibration: u128,
    /// What a streamed evaluation holds between layers: every window's activations `[windows, seq, hidden]` and
    /// one batch's MLP tensors, in `precision` (0 without one).
    pub evaluation: u128,
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
            held: "its weights",
            gradients: if gradients { weights } else { 0 },
            backward: 0,
            copy: 0,
            calibration: 0,
            evaluation: 0,
            remedy,
        }
    }

    /// A streamed run of `cfg` (`prune --stream`): `layers` of its widest decoder layer on the device at once
    /// in `precision` (one; two while a depth repair keeps the layer before a removed run), no gradients, the
    /// embeddings and head left on the host.
    pub fn streamed(
        cfg: &ModelConfig,
        what: &'static str,
        precision: Precision,
        layers: usize,
        remedy: &'static str,
    ) -> Self {
        let widest = count_params(cfg).per_layer.into_iter().max().unwrap_or(0) as u128;
        let bytes = widest
            .saturating_mul(layers as u128)
            .saturating_mul(precision.bytes() as u128);
        Resident {
            weights: bytes,
            held: match layers {
                1 => "one decoder layer's weights",
                _ => "two decoder layers' weights",
            },
            ..Resident::of(cfg, what, precision, false, remedy)
        }
    }

    /// A streamed evaluation of `cfg` (`eval --stream`, `prune --stream --eval`): its widest decoder layer with
    /// the embeddings, final norm and head on the device in `precision` (see [`Resident::with_evaluation`] for
    /// the windows).
    pub fn streamed_evaluation(
        cfg: &ModelConfig,
        precision: Precision,
        remedy: &'static str,
    ) -> Self {
        let params = count_params(cfg);
        let layers: usize = params.per_layer.iter().sum();
        let widest = params.per_layer.iter().max().copied().unwrap_or(0);
        let held = (params.total - layers + widest) as u128;
        Resident {
            weights: held.saturating_mul(precision.bytes() as u128),
            held: "one decoder layer's weights with the embeddings and head",
            ..Resident::of(cfg, "streamed evaluation", precision, false, remedy)
        }
    }

    /// With `bytes` held by a streamed evaluation between layers (see [`Resident::evaluation`]) and what to
    /// change when they do not fit.
    pub fn with_evaluation(self, bytes: u128, remedy: &'static str) -> Self {
        Resident {
            evaluation: bytes,
            ..self
        }
        .with_remedy_if(Peak::Evaluation, remedy)
    }

    /// With `bytes` held beside the gradients by a backward at its peak (see [`Resident::backward`]).
    pub fn with_backward(self, bytes: u128) -> Self {
        Resident {
            backward: bytes,
            ..self
        }
    }

    /// With a search candidate's copy of `params` parameters (in the weights' precision) and what to change
    /// when it does not fit.
    pub fn with_copy(self, params: usize, remedy: &'static str) -> Self {
        let copy = (params as u128).saturating_mul(self.precision.bytes() as u128);
        Resident { copy, ..self }.with_remedy_if(Peak::Copy, remedy)
    }

    /// With `bytes` held by the layer-wise calibration passes (see [`Resident::calibration`]) and what to
    /// change when they do not fit.
    pub fn with_calibration(self, bytes: u128, remedy: &'static str) -> Self {
        Resident {
            calibration: bytes,
            ..self
        }
        .with_remedy_if(Peak::Calibration, remedy)
    }

    /// `remedy` for the message when `peak` is now the largest.
    fn with_remedy_if(self, peak: Peak, remedy: &'static str) -> Self {
        match self.peak() == peak {
            true => Resident { remedy, ..self },
            false => self,
        }
    }

    /// The gradients and what a backward adds to them (0 without a backward).
    fn backward_peak(&self) -> u128 {
        self.gradients.saturating_add(self.backward)
    }

    /// Which of the peaks beside the weights is the largest (on a tie, the first of a backward's, a copy's, the
    /// calibration passes' and an evaluation's).
    fn peak(&self) -> Peak {
        let peaks = [
            (Peak::Copy, self.copy),
            (Peak::Calibration, self.calibration),
            (Peak::Evaluation, self.evaluation),
        ];
        let first = (Peak::Backward, self.backward_peak());
        peaks
            .into_iter()
            .fold(first, |best, p| if p.1 > best.1 { p } else { best })
            .0
    }

    /// The weights and the largest of a backward's peak, a candidate's copy, the calibration passes' and an
    /// evaluation's activations (never held together).
    pub fn bytes(&self) -> u128 {
        let peak = self.backward_peak().max(self.copy);
        self.weights
            .saturating_add(peak.max(self.calibration).max(self.evaluation))
    }

    /// Refuses the run when its weights and its peak beside them are over `memory`.
    pub fn check(&self, memory: &DeviceLimit) -> Result<()> {
        if self.bytes() <= memory.bytes as u128 {
            return Ok(());
        }
        let (precision, weights, held) = (self.precision.name(), gib(self.weights), self.held);
        let held = match self.peak() {
            _ if self.bytes() == self.weights => format!("{held} in {precision} alone"),
            Peak::Backward if self.backward == 0 => format!(
                "{held} in {precision} ({weights}) and their gradients ({})",
                gib(self.gradients)
            ),
            Peak::Backward => format!(
                "{held} in {precision} ({weights}), their gradients ({}) and a backward's activations and \
                 running sums ({})",
                gib(self.gradients),
                gib(self.backward)
            ),
            Peak::Copy => format!(
                "{held} in {precision} ({weights}) and a search candidate's pruned copy of the layers it \
                 changes ({})",
                gib(self.copy)
            ),
            Peak::Calibration => format!(
                "{held} in {precision} ({weights}) and, through each layer, every calibration window's \
                 activations, what a chunk of them computes there and the layer's statistics ({})",
                gib(self.calibration)
            ),
            Peak::Evaluation => format!(
                "{held} in {precision} ({weights}) and every evaluation window's activations with what a batch \
                 of them computes in a layer ({})",
                gib(self.evaluation)
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

/// The peaks a run holds beside its weights, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peak {
    Backward,
    Copy,
    Calibration,
    Evaluation,
}
