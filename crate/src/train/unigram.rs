//! The baseline a language model must beat: a unigram model of the same tokenizer, fitted on the training
//! tokens (add-one smoothing), scored on exactly the tokens the perplexity protocol predicts.

/// Perplexity of the add-one unigram model of `train` on the predicted tokens of `windows` (every token but the
/// first of each window, as methods.md §5 counts them).
pub fn unigram_perplexity(train: &[u32], vocab_size: usize, windows: &[&[u32]]) -> f64 {
    let mut counts = vec![1.0f64; vocab_size];
    for &t in train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let (mut nll, mut n) = (0.0, 0usize);
    for w in windows {
        for &t in &w[1..] {
            nll -= (counts[t as usize] / total).ln();
            n += 1;
        }
    }
    (nll / n.max(1) as f64).exp()
}
