//! Structured pruning: coupled structures (width and depth), importance scores, calibration, allocation, plans and the pipeline
//! that ties them together.

pub mod activations;
pub mod adapruner;
pub mod allocate;
pub mod calib;
pub mod compensate;
pub mod depth;
pub mod fitness;
pub mod gradients;
pub mod importance;
pub mod linalg;
pub mod pipeline;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod search;
pub mod sequential;
pub mod stats;
#[cfg(feature = "cli")]
pub mod streaming;
pub mod structure;

pub use importance::Importance;
pub use plan::Plan;
pub use recipe::Recipe;
pub use report::Report;

/// A unit variant's name as recipes and flags spell it (its serde name: `taylor-first`, `ls-bias`, …).
pub(crate) fn spelled<T: serde::Serialize>(variant: T) -> String {
    match serde_json::to_value(variant) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("a unit variant serialises as its kebab-case name"),
    }
}
