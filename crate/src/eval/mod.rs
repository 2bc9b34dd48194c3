//! Measuring a model: perplexity, and continuations to read (greedy or sampled, of a text or a chat turn).

pub mod chat;
pub mod generate;
pub mod perplexity;
pub mod sampling;

pub use perplexity::{perplexity, Perplexity, PerplexityOptions};
