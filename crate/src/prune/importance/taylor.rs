//! Taylor scores of LLM-Pruner (methods.md §2): salience `s = W ⊙ ∂L/∂W`, the diagonal Fisher
//! `F = (1/N) Σ_n (∂L_n/∂W)²` for the second-order terms.

use burn::tensor::{backend::Backend, Tensor};

use super::{reduce, Member};
use crate::error::{Error, Result};
use crate::prune::linalg::at_least_f32;

/// Which Taylor expansion term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// `|Σ s|` ("Vector").
    Vector,
    /// `Σ |s|` ("Element¹", `param_first`).
    First,
    /// `Σ W² ⊙ F` (`param_second`).
    Second,
    /// `Σ |s − ½ W² ⊙ F|` ("Element²", `param_mix`).
    Mix,
}

fn need<'a, B: Backend>(t: &'a Option<Tensor<B, 2>>, what: &str) -> Result<&'a Tensor<B, 2>> {
    t.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "this Taylor score needs the {what}, which was not computed"
        ))
    })
}

/// Per-channel Taylor score of one member (in f32 at least: a bf16 run's weights and gradients are widened
/// before they are multiplied and summed).
pub fn score<B: Backend>(m: &Member<B>, term: Term) -> Result<Tensor<B, 1>> {
    let w = at_least_f32(m.weight.clone());
    let wide = |t: &Option<Tensor<B, 2>>, what| need(t, what).map(|t| at_least_f32(t.clone()));
    let hessian = || -> Result<Tensor<B, 2>> {
        Ok(w.clone().powi_scalar(2) * wide(&m.fisher, "Fisher diagonal")?)
    };
    let salience = || -> Result<Tensor<B, 2>> { Ok(w.clone() * wide(&m.grad, "gradient")?) };
    Ok(match term {
        Term::Vector => reduce(salience()?, m.axis).abs(),
        Term::First => reduce(salience()?.abs(), m.axis),
        Term::Second => reduce(hessian()?.abs(), m.axis),
        Term::Mix => reduce((salience()? - hessian()? * 0.5).abs(), m.axis),
    })
}
