//! Measuring a model: perplexity, multiple-choice accuracy, and continuations to read (greedy or sampled, of a text or a chat turn).

pub mod chat;
pub mod choice;
pub mod generate;
pub mod perplexity;
pub mod sampling;
#[cfg(feature = "cli")]
pub mod streamed;

pub use choice::{score_choices, ChoiceAccuracy, ChoiceItem, ChoiceOptions};
pub use perplexity::{perplexity, Perplexity, PerplexityOptions};
