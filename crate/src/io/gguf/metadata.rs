//! The metadata a GGUF output carries besides its architecture: a GGUF input's `general.*` and `tokenizer.*`
//! keys, or, for an HF input, the tokenizer rebuilt from `tokenizer.json` with the special token ids.

use serde_json::Value as Json;

use super::reader::{GgufHeader, Value};
use super::tokenizer::gguf_metadata;
use crate::error::{Error, Result};
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
/// `tokenizer.json`, with the pre-tokenizer name a GGUF input once left in `base_config`) and the BOS/EOS ids.
pub fn output_metadata(
    cfg: &ModelConfig,
    carried: &[(String, Value)],
    tokenizer_json: Option<&Json>,
    base_config: Option<&Json>,
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
    Ok(meta)
}

/// GGUF key of the chat template (a Jinja string), which llama.cpp applies to chat messages.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The chat template of an HF folder, from its side files `(name, bytes)` as transformers looks for it:
/// `chat_template.jinja`, else `chat_template.json`'s or `tokenizer_config.json`'s `chat_template` (a string, or a
/// list of named templates, where the one named `default` is taken, as llama.cpp's converter does).
pub fn chat_template(side_files: &[(String, Vec<u8>)]) -> Result<Option<String>> {
    let file = |name: &str| side_files.iter().find(|(n, _)| n == name).map(|(_, b)| b);
    if let Some(bytes) = file("chat_template.jinja") {
        return String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| Error::Text("chat_template.jinja is not UTF-8 text".into()));
    }
    for name in ["chat_template.json", "tokenizer_config.json"] {
        let Some(bytes) = file(name) else { continue };
        let json: Json = serde_json::from_slice(bytes).map_err(|e| Error::Json {
            what: name.into(),
            message: e.to_string(),
        })?;
        let template = match &json["chat_template"] {
            Json::String(s) => Some(s.clone()),
            Json::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(String::from),
            _ => None,
        };
        if template.is_some() {
            return Ok(template);
        }
    }
    Ok(None)
}

/// What transformers reads beside `tokenizer.json` and GGUF metadata says, for an HF output of a GGUF input:
/// `tokenizer_config.json` with the chat template and the BOS/EOS tokens by their text (when the metadata has a
/// template), and `generation_config.json` listing the end-of-turn and end-of-message ids beside EOS (when it names
/// any), so that `generate` stops where llama.cpp does. `tokenizer_json` is the one built from the metadata.
pub fn hf_side_files(
    carried: &[(String, Value)],
    tokenizer_json: Option<&Json>,
) -> Vec<(String, Vec<u8>)> {
    let get = |key: &str| carried.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let id = |kind: &str| get(&format!("tokenizer.ggml.{kind}_token_id")).and_then(Value::as_u64);
    let mut files = vec![];
    if let Some(template) = get(CHAT_TEMPLATE_KEY).and_then(Value::as_str) {
        let mut config = serde_json::json!({ "chat_template": template });
        for kind in ["bos", "eos"] {
            if let Some(text) = id(kind).and_then(|id| token_text(tokenizer_json?, id)) {
                config[format!("{kind}_token")] = text.into();
            }
        }
        files.push(("tokenizer_config.json".into(), pretty(&config)));
    }
    let ends: Vec<u64> = ["eos", "eot", "eom"].iter().filter_map(|k| id(k)).collect();
    if ends.len() > 1 {
        let mut config = serde_json::json!({ "eos_token_id": ends });
        if let Some(bos) = id("bos") {
            config["bos_token_id"] = bos.into();
        }
        files.push(("generation_config.json".into(), pretty(&config)));
    }
    files
}

/// The text of token `id` in an HF `tokenizer.json` (its added tokens, then the model's vocabulary).
fn token_text(tokenizer_json: &Json, id: u64) -> Option<String> {
    let added = tokenizer_json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten();
    let vocab = tokenizer_json["model"]["vocab"]
        .as_object()
        .into_iter()
        .flatten();
    added
        .filter(|t| t["id"].as_u64() == Some(id))
        .filter_map(|t| t["content"].as_str())
        .chain(
            vocab
                .filter(|(_, v)| v.as_u64() == Some(id))
                .map(|(k, _)| k.as_str()),
        )
        .next()
        .map(String::from)
}

fn pretty(v: &Json) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialisable")
}
