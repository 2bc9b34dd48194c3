//! Measuring a model: perplexity, and continuations to read (greedy or sampled).

pub mod generate;
pub mod perplexity;
pub mod sampling;

pub use perplexity::{perplexity, Perplexity, PerplexityOptions};
