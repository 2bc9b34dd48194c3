//! Tokenizers from GGUF metadata and back. `tokenizer.ggml.model = gpt2` (byte-level BPE: tokens + merges, with
//! the pre-tokenizer `tokenizer.ggml.pre` names) and `llama` (SentencePiece: tokens + scores + types, merged by
//! score with byte fallback, as transformers' `SpmConverter` builds it) become an HF `tokenizer.json`.

use std::collections::HashMap;

use serde_json::{json, Value as Json};

use super::reader::{GgufHeader, Value};
use crate::error::{Error, Result};
use crate::io::Tokenizer;

/// llama.cpp token types.
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Json {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// The HF pre-tokenizer for a llama.cpp `tokenizer.ggml.pre` name.
///
/// `smollm` follows transformers' GGUF loader (`GGUFGPTConverter`: the GPT-2 byte-level split), which is how
/// the project's SmolLM2 reference numbers were measured (48,621 ids for the shared eval text). llama.cpp
/// additionally splits digits one by one for `smollm` (48,576 ids); the model card's own tokenizer.json does
/// too. The difference only touches runs of digits.
fn pre_tokenizer(pre: &str) -> Result<Json> {
    Ok(match pre {
        "default" | "gpt-2" | "smollm" => byte_level(true),
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        "qwen2" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
        }
        other => {
            return Err(Error::Unsupported {
                field: "tokenizer.ggml.pre".into(),
                value: other.into(),
                reason: "supported pre-tokenizers: default, gpt-2, smollm, llama-bpe, qwen2".into(),
            })
        }
    })
}

fn strings(file: &GgufHeader, key: &str) -> Result<Vec<String>> {
    let arr = file
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Gguf(format!("missing metadata {key}")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(String::from)
                .ok_or_else(|| Error::Gguf(format!("{key}: {v:?} is not a string")))
        })
        .collect()
}

/// One number per token from array `key` (absent: every token `NORMAL`).
fn numbers(file: &GgufHeader, key: &str, n: usize) -> Result<Vec<f64>> {
    let Some(v) = file.get(key) else {
        return Ok(vec![NORMAL as f64; n]);
    };
    let a = v
        .as_array()
        .ok_or_else(|| Error::Gguf(format!("{key} is not an array")))?;
    if a.len() != n {
        return Err(Error::Gguf(format!(
            "{key} has {} entries for {n} tokens",
            a.len()
        )));
    }
    a.iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| Error::Gguf(format!("{key}: {v:?} is not a number")))
        })
        .collect()
}

fn added_tokens(tokens: &[String], types: &[f64]) -> Vec<Json> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| t as i64 == CONTROL || t as i64 == USER_DEFINED)
        .map(|(id, (content, &t))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": t as i64 == CONTROL})
        })
        .collect()
}

/// The tokenizer a GGUF file describes, as HF `tokenizer.json`.
pub fn tokenizer_json(file: &GgufHeader) -> Result<Json> {
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Gguf("missing metadata tokenizer.ggml.model".into()))?;
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let types = numbers(file, "tokenizer.ggml.token_type", tokens.len())?;
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added = added_tokens(&tokens, &types);
    match model {
        "gpt2" => {
            let pre = file
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let merges = strings(file, "tokenizer.ggml.merges")?;
            Ok(json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null, "pre_tokenizer": pre_tokenizer(pre)?,
                "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": false, "vocab": vocab, "merges": merges}
            }))
        }
        "llama" => {
            let scores = numbers(file, "tokenizer.ggml.scores", tokens.len())?;
            let unk = file
                .get("tokenizer.ggml.unknown_token_id")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            let prefix = !matches!(
                file.get("tokenizer.ggml.add_space_prefix"),
                Some(Value::Bool(false))
            );
            let mut normalizers =
                vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
            if prefix {
                normalizers.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
            }
            Ok(json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers}, "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Strip", "content": " ", "start": if prefix { 1 } else { 0 }, "stop": 0}]},
                "model": {"type": "BPE", "dropout": null, "unk_token": tokens.get(unk), "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": spm_merges(&tokens, &scores, &types)}
            }))
        }
        other => Err(Error::Unsupported {
            field: "tokenizer.ggml.model".into(),
            value: other.into(),
            reason: "prunelab reads gpt2 (byte-level BPE) and llama (SentencePiece) tokenizers"
                .into(),
        }),
    }
}

/// SentencePiece merges: every split of a normal token into two vocabulary pieces, ranked by the merged
/// token's score (higher merges first), as transformers' `SpmConverter` derives them.
fn spm_merges(tokens: &[String], scores: &[f64], types: &[f64]) -> Vec<String> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] as i64 != NORMAL && types[id] as i64 != USER_DEFINED {
            continue;
        }
        for (cut, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) {
                merges.push((scores[id], ia, ib, format!("{a} {b}")));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges.into_iter().map(|m| m.3).collect()
}

/// The tokenizer of a GGUF file.
pub fn tokenizer(file: &GgufHeader) -> Result<Tokenizer> {
    Tokenizer::from_json(tokenizer_json(file)?.to_string().as_bytes())
}

/// Token ids beyond any real vocabulary (the largest have about 2¹⁸ entries): a garbled file.
const MAX_TOKEN_ID: u64 = 1 << 24;

/// GGUF tokenizer metadata for an HF `tokenizer.json` of a byte-level BPE model (what llama.cpp's converter
/// writes): tokens by id, token types, merges, and the pre-tokenizer name.
pub fn gguf_metadata(tokenizer_json: &Json) -> Result<Vec<(String, Value)>> {
    let model = &tokenizer_json["model"];
    let unsupported = |what: &str| Error::Unsupported {
        field: "tokenizer.json".into(),
        value: what.into(),
        reason: "only byte-level BPE tokenizers can be written to GGUF".into(),
    };
    if model["type"] != "BPE" || model["byte_fallback"] == true {
        return Err(unsupported(&format!("model type {}", model["type"])));
    }
    let mut by_id: Vec<Option<(String, i64)>> = Vec::new();
    let mut put = |id: &Json, tok: String, ty: i64| -> Result<()> {
        let id = id.as_u64().filter(|&id| id < MAX_TOKEN_ID).ok_or_else(|| {
            Error::Tokenizer(format!(
                "tokenizer.json: token {tok:?} has id {id}, not a count below {MAX_TOKEN_ID}"
            ))
        })? as usize;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some((tok, ty));
        Ok(())
    };
    for (tok, id) in model["vocab"]
        .as_object()
        .ok_or_else(|| unsupported("no vocab"))?
    {
        put(id, tok.clone(), NORMAL)?;
    }
    for t in tokenizer_json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let ty = if t["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        put(
            &t["id"],
            t["content"].as_str().unwrap_or_default().to_string(),
            ty,
        )?;
    }
    let (tokens, types): (Vec<Value>, Vec<Value>) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (tok, ty) = t.unwrap_or((format!("[PAD{i}]"), UNUSED));
            (Value::String(tok), Value::I32(ty as i32))
        })
        .unzip();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Value::String(s.clone()),
            Json::Array(p) => {
                let part = |i: usize| p.get(i).and_then(Json::as_str).unwrap_or("");
                Value::String(format!("{} {}", part(0), part(1)))
            }
            other => Value::String(other.to_string()),
        })
        .collect();
    let pre = detect_pre(&tokenizer_json["pre_tokenizer"]);
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ])
}

/// The llama.cpp pre-tokenizer name of an HF pre-tokenizer (the inverse of [`pre_tokenizer`]).
fn detect_pre(pre: &Json) -> &'static str {
    let text = pre.to_string();
    if text.contains("Digits") {
        "smollm"
    } else if text.contains(r"\\p{N}{1,3}") {
        "llama-bpe"
    } else if text.contains("Split") {
        "qwen2"
    } else {
        "gpt-2"
    }
}
