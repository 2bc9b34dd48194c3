//! The model: configuration, tensor inventory, parameter accounting and the LLaMA modules.

pub mod attention;
pub mod cache;
pub mod config;
pub mod footprint;
pub mod linear;
pub mod llama;
pub mod mlp;
pub mod named;
pub mod norm;
pub mod params;
pub mod random;
pub mod resident;
pub mod rope;
pub mod rope_scaling;
pub mod shapes;
pub mod tensors;
pub mod weights;

pub use config::{LayerShape, ModelConfig};
pub use llama::Llama;
pub use weights::WeightSource;
