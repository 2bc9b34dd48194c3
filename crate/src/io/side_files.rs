//! The files beside an HF model's weights that describe its tokenizer and generation (`tokenizer_config.json`,
//! `generation_config.json`, chat templates, …): carried verbatim from an HF input to an HF output, their chat
//! template put into a GGUF output, and made from a GGUF input's metadata for an HF output.

use serde_json::Value as Json;

use crate::error::{parse_json, Error, Result};
use crate::io::gguf::reader::Value;
use crate::model::ModelConfig;

/// A side file: its name in the folder and its bytes.
pub type SideFile = (String, Vec<u8>);

/// The side files transformers reads for its tokenizer (special tokens, chat template, the SentencePiece model of
/// LLaMA-2-era folders) and for `generate`'s defaults.
pub const SIDE_FILES: [&str; 6] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
];

/// GGUF key of the chat template (a Jinja string), which llama.cpp applies to chat messages.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// The chat template of an HF folder, from its side files `(name, bytes)` as transformers looks for it:
/// `chat_template.jinja`, else `chat_template.json`'s or `tokenizer_config.json`'s `chat_template` (a string, or a
/// list of named templates, where the one named `default` is taken, as llama.cpp's converter does).
pub fn chat_template(side_files: &[SideFile]) -> Result<Option<String>> {
    if let Some(bytes) = file(side_files, "chat_template.jinja") {
        return String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Error::Text("chat_template.jinja is not UTF-8 text".into()));
    }
    for name in ["chat_template.json", "tokenizer_config.json"] {
        let Some(json) = json_file(side_files, name)? else {
            continue;
        };
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

/// A special token's text in `tokenizer_config.json` (`key` `bos_token`, `eos_token`, …: a string, or an object with
/// `content`, as older folders write it); empty when there is none, as transformers passes it to chat templates.
pub fn special_token(side_files: &[SideFile], key: &str) -> Result<String> {
    let Some(config) = json_file(side_files, "tokenizer_config.json")? else {
        return Ok(String::new());
    };
    let token = &config[key];
    Ok(token
        .as_str()
        .or_else(|| token["content"].as_str())
        .unwrap_or_default()
        .to_string())
}

/// The ids that end a text: the config's `eos_token_id` (`cfg`, and every id of `config.json`'s, a number or a
/// list) and `generation_config.json`'s, where transformers' `generate` stops; for a GGUF input, whose side files
/// are made by [`hf_side_files`], that is its end-of-sequence, end-of-turn and end-of-message tokens, where
/// llama.cpp stops. Empty when the model names none.
pub fn stop_ids(
    cfg: &ModelConfig,
    config_json: Option<&Json>,
    side_files: &[SideFile],
) -> Result<Vec<u32>> {
    let generation = json_file(side_files, "generation_config.json")?;
    let mut ids: Vec<u32> = cfg.eos_token_id.into_iter().collect();
    for json in config_json.into_iter().chain(generation.as_ref()) {
        for id in token_ids(&json["eos_token_id"]) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// A token id field: a number, a list of numbers, or absent (`null`).
fn token_ids(v: &Json) -> Vec<u32> {
    match v {
        Json::Array(a) => a.iter().flat_map(token_ids).collect(),
        v => v.as_u64().map(|id| id as u32).into_iter().collect(),
    }
}

fn file<'a>(side_files: &'a [SideFile], name: &str) -> Option<&'a [u8]> {
    side_files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.as_slice())
}

/// A side file parsed as JSON; `None` when it is absent, an error naming it when it is not JSON.
fn json_file(side_files: &[SideFile], name: &str) -> Result<Option<Json>> {
    file(side_files, name)
        .map(|bytes| parse_json(bytes, name))
        .transpose()
}

/// What transformers reads beside `tokenizer.json` and GGUF metadata says, for an HF output of a GGUF input:
/// `tokenizer_config.json` with the chat template and the BOS/EOS tokens by their text (when the metadata has a
/// template), and `generation_config.json` listing the end-of-turn and end-of-message ids with EOS (when it names
/// any besides EOS), so that `generate` stops where llama.cpp does. `tokenizer_json` is the one built from the metadata.
pub fn hf_side_files(carried: &[(String, Value)], tokenizer_json: Option<&Json>) -> Vec<SideFile> {
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
    if ends.iter().any(|&e| Some(e) != id("eos")) {
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
