//! A byte-level BPE tokenizer trained on the training text with the `tokenizers` trainer (GPT-2 style: byte
//! alphabet, regex pre-split, no normalisation), so any text encodes without unknown tokens.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::error::{Error, Result};
use crate::io::Tokenizer;

/// The end-of-text token, id 0.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a tokenizer of `vocab_size` entries (the 256 bytes, merges, and [`END_OF_TEXT`]) on `texts`.
pub fn train_bpe(texts: &[&str], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < 258 {
        return Err(Error::Invalid(format!(
            "a byte-level BPE vocabulary needs more than 257 entries (got {vocab_size})"
        )));
    }
    if texts.iter().all(|t| t.trim().is_empty()) {
        return Err(Error::Invalid(
            "the tokenizer's training text is empty".into(),
        ));
    }
    // Each merge joins two tokens of the text: there are fewer than its bytes (the trainer reserves room for
    // the whole vocabulary up front, so an absurd size would exhaust memory).
    let most = 257 + texts.iter().map(|t| t.len()).sum::<usize>();
    if vocab_size > most {
        return Err(Error::Invalid(format!(
            "a vocabulary of {vocab_size} entries cannot be learned from {} bytes of text (at most {most})",
            most - 257
        )));
    }
    let fail = |e: tokenizers::Error| Error::Invalid(format!("tokenizer training failed: {e}"));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .build()
        .into();
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.train(&mut trainer, texts.iter()).map_err(fail)?;
    Ok(Tokenizer::from_inner(tok))
}
