//! `prunelab convert INPUT --out OUTPUT [--format hf|gguf] [--dtype …]`: HF folder ↔ GGUF, both ways.

use std::path::PathBuf;

use clap::Args;

use super::files::ModelInput;
use super::output::{write_model, Format, Target};
use super::progress::Bars;
use super::prune::extras_of;
use crate::error::{Error, Result};
use crate::io::gguf::GgufDtype;
use crate::io::safetensors_out::StDtype;
use crate::model::weights::check_inventory;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// An HF folder or a .gguf file.
    input: PathBuf,
    /// Output path (a folder for hf, a file for gguf); must not exist.
    #[arg(long)]
    out: PathBuf,
    /// Output format (default: gguf for a path ending in .gguf, else hf).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Storage type: f32, f16 or bf16 for hf; f32, f16 or q8_0 for gguf.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Parses `--dtype` for the chosen format.
pub fn dtypes(format: Format, dtype: &str) -> Result<(StDtype, GgufDtype)> {
    let bad = || {
        Error::Invalid(format!(
            "--dtype {dtype} is not available for {format:?} output"
        ))
    };
    match format {
        Format::Hf => serde_json::from_value(dtype.into())
            .map(|d| (d, GgufDtype::F32))
            .map_err(|_| bad()),
        Format::Gguf => serde_json::from_value(dtype.into())
            .map(|d| (StDtype::F32, d))
            .map_err(|_| bad()),
    }
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let input = ModelInput::open(&args.input)?;
    let format = Format::resolve(args.format, &args.out);
    let (hf_dtype, gguf_dtype) = dtypes(format, &args.dtype)?;
    let extras = extras_of(&input)?;
    input.with_weights(|src| {
        check_inventory(&input.config, src)?;
        write_model(
            &Target {
                out: &args.out,
                format,
                hf_dtype,
                gguf_dtype,
            },
            &input.config,
            src,
            &extras,
            &Bars::default(),
        )
    })?;
    note!("wrote {} ({format:?})", args.out.display());
    Ok(())
}
