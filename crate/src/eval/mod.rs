//! Measuring a model: perplexity (more evaluations join here).

pub mod perplexity;

pub use perplexity::{perplexity, Perplexity, PerplexityOptions};
