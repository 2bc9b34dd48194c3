//! The metadata a GGUF output carries besides its architecture: a GGUF input's `general.*` and `tokenizer.*`
//! keys, or, for an HF input, the tokenizer rebuilt from `tokenizer.json` with the special token ids.

use serde_json::Value as Json;

use super::reader::{GgufHeader, Value};
use super::tokenizer::gguf_metadata;
use crate::error::Result;
use crate::io::side_files::{chat_template, SideFile, CHAT_TEMPLATE_KEY};
use crate::model::ModelConfig;

/// `config.json` key that keeps a GGUF input's `tokenizer.ggml.pre` (llama.cpp's pre-tokenizer name, which
/// `tokenizer.json` cannot always express) so that converting back to GGUF restores it.
pub const GGUF_PRE_KEY: &str = "gguf_tokenizer_pre";

/// Keys the writer sets itself from the config and storage type.
const WRITER_KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "general.file_type",
    "general.quantization_version",
];

/// The metadata of an input GGUF that outputs keep (general.* and tokenizer.*, less the writer's keys).
pub fn carried(header: &GgufHeader) -> Vec<(String, Value)> {
    header
        .metadata
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("general.") || k.starts_with("tokenizer."))
                && !WRITER_KEYS.contains(&k.as_str())
        })
        .cloned()
        .collect()
}

/// Records a GGUF input's pre-tokenizer name in an output `config.json`.
pub fn keep_pre(config: &mut Json, carried: &[(String, Value)]) {
    if let Some((_, pre)) = carried.iter().find(|(k, _)| k == "tokenizer.ggml.pre") {
        config[GGUF_PRE_KEY] = pre.as_str().unwrap_or_default().into();
    }
}

/// The metadata of a GGUF output of `cfg`: `carried` when the input was a GGUF, else the tokenizer's (from
/// `tokenizer.json`, with the pre-tokenizer name a GGUF input once left in `base_config`), the BOS/EOS ids and the
/// chat template of the HF input's `side_files`.
pub fn output_metadata(
    cfg: &ModelConfig,
    carried: &[(String, Value)],
    tokenizer_json: Option<&Json>,
    base_config: Option<&Json>,
    side_files: &[SideFile],
) -> Result<Vec<(String, Value)>> {
    if !carried.is_empty() {
        return Ok(carried.to_vec());
    }
    let mut meta = match tokenizer_json {
        Some(tok) => gguf_metadata(tok)?,
        None => vec![],
    };
    let pre = base_config.and_then(|c| c[GGUF_PRE_KEY].as_str());
    if let (Some(pre), Some(slot)) = (
        pre,
        meta.iter_mut().find(|(k, _)| k == "tokenizer.ggml.pre"),
    ) {
        slot.1 = Value::String(pre.to_string());
    }
    let ids = [
        ("tokenizer.ggml.bos_token_id", cfg.bos_token_id),
        ("tokenizer.ggml.eos_token_id", cfg.eos_token_id),
    ];
    meta.extend(
        ids.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::U32(v)))),
    );
    if let Some(template) = chat_template(side_files)? {
        meta.push((CHAT_TEMPLATE_KEY.into(), Value::String(template)));
    }
    Ok(meta)
}
