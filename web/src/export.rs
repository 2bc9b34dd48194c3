//! The GGUF download: the pruned model the page holds (its `config.json` and `model.safetensors`, assembled from
//! a run's parts) written as GGUF one tensor at a time, with the input's tokenizer and metadata.

use prunelab::error::{parse_json, Error, Result};
use prunelab::io::gguf::metadata::output_metadata;
use prunelab::io::gguf::{GgufDtype, GgufWriter};
use prunelab::progress::{Progress, ProgressEvent};

use crate::files::ModelFiles;
use crate::host::Emit;

/// The output file's name in `emit` calls.
pub const GGUF_FILE: &str = "model.gguf";

/// Writes the pruned model (`config`, `weights`) of `input` as GGUF with matrices stored as `dtype` (`f32`,
/// `f16` or `q8_0`).
pub fn gguf(
    input: &ModelFiles,
    config: &[u8],
    weights: web_sys::Blob,
    dtype: &str,
    progress: &dyn Progress,
    emit: &Emit,
) -> Result<()> {
    let dtype: GgufDtype = serde_json::from_value(dtype.into()).map_err(|_| {
        Error::Invalid(format!(
            "GGUF storage type {dtype:?}: choose f32, f16 or q8_0"
        ))
    })?;
    let pruned = input.pruned(config, weights)?;
    let tokenizer = input
        .tokenizer
        .as_deref()
        .map(|t| parse_json(t, "tokenizer.json"))
        .transpose()?;
    let meta = output_metadata(
        &pruned.config,
        &input.gguf_metadata,
        tokenizer.as_ref(),
        pruned.base_config.as_ref(),
        &input.side_files,
    )?;
    let writer = GgufWriter::new(&pruned.config, &meta, dtype)?;
    emit.part(GGUF_FILE, writer.header())?;
    let total = writer.tensors.len();
    pruned.with_source(|src| {
        for i in 0..total {
            emit.part(GGUF_FILE, &writer.tensor(i, src)?)?;
            progress.report(ProgressEvent::new("write gguf", i + 1, total));
        }
        Ok(())
    })
}
