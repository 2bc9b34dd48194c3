//! prunelab: structured pruning of LLaMA-family language models.
//!
//! The core is generic over burn's `Backend`, takes bytes and returns bytes, and reads tensors back
//! asynchronously, so the same code runs natively (CPU, wgpu/Vulkan, CUDA) and in a browser worker (WebGPU).
//! See `docs` in the repository README for the layout.

pub mod backend;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod products;
pub mod progress;
pub mod prune;
pub mod readback;
pub mod train;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::{Error, Result};
