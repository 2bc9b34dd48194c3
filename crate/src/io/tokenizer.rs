//! Text ↔ token ids through the HF `tokenizers` crate (built with its pure-Rust regex so it runs in wasm).

use crate::error::{Error, Result};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Parses `tokenizer.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json does not parse: {e}")))?;
        Ok(Self { inner })
    }

    /// Wraps a tokenizer built elsewhere (from GGUF metadata, or trained).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self { inner }
    }

    /// The underlying `tokenizers` object (to save it as `tokenizer.json`).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, no special tokens added (the perplexity protocol of methods.md §5).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            return Err(Error::Text("the text is empty".into()));
        }
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        if enc.get_ids().is_empty() {
            let mut start: String = text.chars().take(40).collect();
            if start.len() < text.len() {
                start.push('…');
            }
            return Err(Error::Text(format!(
                "the text {start:?} encodes to no token: the tokenizer drops every character of it (it has no \
                 unknown token or byte fallback)"
            )));
        }
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(format!("decoding failed: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Token ids from JSON: a flat array `[id, …]` or windows `[[id, …], …]` (concatenated in order).
pub fn ids_from_json(bytes: &[u8], what: &str) -> Result<Vec<u32>> {
    let json_err = |message: String| Error::Json {
        what: what.into(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| json_err(e.to_string()))?;
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value| -> Result<()> {
        let id = v.as_u64().filter(|&x| x <= u32::MAX as u64);
        out.push(id.ok_or_else(|| json_err(format!("{v} is not a token id")))? as u32);
        Ok(())
    };
    let serde_json::Value::Array(items) = &value else {
        return Err(json_err(
            "expected an array of token ids or of windows".into(),
        ));
    };
    for item in items {
        match item {
            serde_json::Value::Array(window) => window.iter().try_for_each(&mut push)?,
            v => push(v)?,
        }
    }
    if out.is_empty() {
        return Err(Error::Text(format!("{what} holds no token ids")));
    }
    Ok(out)
}
