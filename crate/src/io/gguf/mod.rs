//! GGUF in and out: the container, ggml block formats, the llama/deci architectures, tokenizers from metadata.

pub mod llama;
pub mod quant;
pub mod reader;
pub mod tokenizer;
pub mod writer;

pub use llama::GgufModel;
pub use reader::GgufFile;
pub use writer::{GgufDtype, GgufWriter};
