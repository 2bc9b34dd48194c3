//! Reading and writing models and text: safetensors, tokenizers, token-id files. All from bytes; the native
//! CLI maps files, the page slices `File`s.

pub mod gguf;
pub mod ranges;
pub mod safetensors;
pub mod safetensors_header;
pub mod safetensors_out;
pub mod safetensors_ranges;
pub mod side_files;
pub mod tokenizer;

pub use self::safetensors::SafetensorsWeights;
pub use tokenizer::Tokenizer;
