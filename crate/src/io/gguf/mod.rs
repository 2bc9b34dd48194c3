//! GGUF in and out: the container, ggml block formats, the llama/deci (and, read only, qwen2) architectures,
//! rotary scaling, tokenizers from metadata.

pub mod llama;
pub mod metadata;
pub mod quant;
pub mod reader;
pub mod rope_freqs;
pub mod rope_metadata;
pub mod tokenizer;
pub mod writer;

pub use llama::GgufModel;
pub use reader::{GgufFile, GgufHeader};
pub use writer::{GgufDtype, GgufWriter};
