//! `prunelab synth --shape llama-7b --out DIR [--dtype bf16]`: a sharded HF folder with seeded random weights of a
//! real model's shapes, written tensor by tensor (one tensor in memory at a time).

use std::path::PathBuf;

use clap::Args;

use super::convert::dtypes;
use super::output::{write_model, Extras, Format, Target};
use super::progress::Bars;
use crate::error::Result;
use crate::model::params::count_params;
use crate::model::random::RandomWeights;
use crate::model::shapes::known_shape;
use crate::model::ModelConfig;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// llama-7b, llama2-7b, llama3-8b or tiny.
    #[arg(long)]
    shape: String,
    /// Output HF folder (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let config = known_shape(&args.shape)?;
    let cfg = ModelConfig::from_json(&serde_json::to_vec(&config).expect("json"))?;
    let (hf_dtype, gguf_dtype) = dtypes(Format::Hf, &args.dtype)?;
    let target = Target {
        out: &args.out,
        format: Format::Hf,
        hf_dtype,
        gguf_dtype,
    };
    let extras = Extras {
        base_config: Some(config),
        tokenizer_json: None,
        gguf_metadata: vec![],
        files: vec![],
    };
    let weights = RandomWeights::new(&cfg, args.seed, 0.02);
    write_model(&target, &cfg, &weights, &extras, &Bars::default())?;
    println!(
        "wrote {} ({} parameters, {})",
        args.out.display(),
        count_params(&cfg).total,
        args.dtype
    );
    Ok(())
}
