//! Measuring a model: perplexity, and greedy samples to read.

pub mod generate;
pub mod perplexity;

pub use perplexity::{perplexity, Perplexity, PerplexityOptions};
