//! `prunelab inspect MODEL [--json]`: config, per-layer shapes, parameters per module and in total.

use std::path::PathBuf;

use clap::Args;

use super::files::ModelInput;
use crate::error::Result;
use crate::model::params::count_params;
use crate::model::weights::check_inventory;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// HF model folder (config.json + *.safetensors) or a .gguf file.
    model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let input = ModelInput::open(&args.model)?;
    input.with_weights(|w| check_inventory(&input.config, w))?;
    let cfg = &input.config;
    let params = count_params(cfg);
    if args.json {
        let out = serde_json::json!({ "config": cfg, "params": params });
        say!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialisable")
        )?;
        return Ok(());
    }
    say!("model      {} ({})", args.model.display(), cfg.model_type)?;
    say!(
        "shape      hidden {} · head_dim {} · {} layers · vocab {} · tied embeddings {}",
        cfg.hidden_size,
        cfg.head_dim,
        cfg.num_layers(),
        cfg.vocab_size,
        cfg.tie_word_embeddings
    )?;
    say!(
        "rope       theta {} {}",
        cfg.rope.theta,
        cfg.rope.scaling.map_or(String::new(), |s| format!("({s})"))
    )?;
    say!(
        "{:>5} {:>6} {:>9} {:>9} {:>12}",
        "layer",
        "heads",
        "kv heads",
        "mlp",
        "params"
    )?;
    for (l, s) in cfg.layers.iter().enumerate() {
        say!(
            "{l:>5} {:>6} {:>9} {:>9} {:>12}",
            s.num_heads,
            s.num_kv_heads,
            s.intermediate_size,
            params.per_layer[l]
        )?;
    }
    for (module, n) in &params.per_module {
        say!("{:<10} {n:>12}", format!("{module:?}").to_lowercase())?;
    }
    say!("{:<10} {:>12}", "total", params.total)?;
    Ok(())
}
