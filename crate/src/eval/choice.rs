//! Multiple-choice accuracy, scored as lm-evaluation-harness scores the zero-shot tasks pruning papers report
//! (BoolQ, PIQA, HellaSwag, ARC, …): every choice is a continuation of its item's context, its log-likelihood
//! the sum of its tokens' log-probabilities after the context; `acc` counts the items whose real answer scores
//! highest, `acc_norm` the items whose real answer scores highest per character.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::eval::perplexity::{batch_tensor, check_ids};
use crate::io::tokenizer::Tokenizer;
use crate::model::footprint::Footprint;
use crate::model::llama::target_nll;
use crate::model::{Llama, ModelConfig};
use crate::progress::{checkpoint, Progress, ProgressEvent};
use crate::readback;

/// One item of a task file, one JSON object per line: `{"context": "…", "choices": ["…", …], "gold": i}`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceItem {
    /// The text every choice continues (a question and "Answer:", a sentence to complete, …).
    pub context: String,
    /// The candidate continuations, each with the separator it needs (usually a leading space).
    pub choices: Vec<String>,
    /// Index of the real answer in `choices`.
    pub gold: usize,
}

/// One choice to score: (item, choice, its sequence, how many tokens at its end are scored).
type Request = (usize, usize, Vec<u32>, usize);

/// Reads a task file: JSON lines of [`ChoiceItem`]s (blank lines skipped), each checked; `what` names the file
/// in errors, with the line.
pub fn parse_items(bytes: &[u8], what: &str) -> Result<Vec<ChoiceItem>> {
    let mut items = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = format!("{what} line {}", n + 1);
        let item: ChoiceItem = crate::error::parse_json(line, &at)?;
        check_item(&item).map_err(|reason| Error::Text(format!("{at}: {reason}")))?;
        items.push(item);
    }
    if items.is_empty() {
        return Err(Error::Text(format!(
            "{what} holds no items (one JSON object per line: {{\"context\": …, \"choices\": […], \"gold\": i}})"
        )));
    }
    Ok(items)
}

fn check_item(item: &ChoiceItem) -> std::result::Result<(), String> {
    if item.context.trim().is_empty() {
        return Err("the context is empty".into());
    }
    if item.choices.len() < 2 {
        return Err(format!(
            "{} choice(s): an item needs at least two",
            item.choices.len()
        ));
    }
    if let Some(k) = item.choices.iter().position(|c| c.trim().is_empty()) {
        return Err(format!("choice {k} is empty"));
    }
    if item.gold >= item.choices.len() {
        return Err(format!(
            "gold {} is not an index of its {} choices",
            item.gold,
            item.choices.len()
        ));
    }
    Ok(())
}

/// The ids one choice is scored on: the context's, then the continuation's (whose tokens are scored).
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// lm-evaluation-harness's split: whitespace that ends the context moves to the start of the continuation, the
/// pair is encoded as one text, and the continuation is what follows as many ids as the context alone encodes to.
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> Result<Continuation> {
    let trimmed = context.trim_end();
    let moved = format!("{}{continuation}", &context[trimmed.len()..]);
    let context_ids = tok.encode(trimmed)?;
    let mut whole = tok.encode(&format!("{trimmed}{moved}"))?;
    if whole.len() <= context_ids.len() {
        return Err(Error::Text(format!(
            "the choice {continuation:?} adds no token to its context"
        )));
    }
    let continuation_ids = whole.split_off(context_ids.len());
    Ok(Continuation {
        context: context_ids,
        continuation: continuation_ids,
    })
}

/// How to batch the scoring.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChoiceOptions {
    /// Sequences (one per choice) per forward pass; shorter ones are padded at the end.
    pub batch: usize,
    /// Score only the first N items.
    pub max_items: Option<usize>,
}

impl Default for ChoiceOptions {
    fn default() -> Self {
        Self {
            batch: 8,
            max_items: None,
        }
    }
}

/// Accuracy on a task, with lm-evaluation-harness's standard errors (sample standard deviation / √n; absent
/// for a single item).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChoiceAccuracy {
    pub acc: f64,
    pub acc_stderr: Option<f64>,
    pub acc_norm: f64,
    pub acc_norm_stderr: Option<f64>,
    pub items: usize,
    /// Choices scored (one sequence each).
    pub choices: usize,
    /// Continuation tokens scored over all choices.
    pub tokens: usize,
}

/// The log-likelihood of every choice of every item (`[item][choice]`), and the continuation tokens scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceScores {
    pub log_likelihoods: Vec<Vec<f64>>,
    pub tokens: usize,
}

impl ChoiceScores {
    /// The choice each item's log-likelihoods pick: the highest (`per_char`: the highest divided by the choice's
    /// length in characters), the first of equals.
    pub fn predictions(&self, items: &[ChoiceItem], per_char: bool) -> Vec<usize> {
        items
            .iter()
            .zip(&self.log_likelihoods)
            .map(|(item, lls)| {
                let score = |k: usize| match per_char {
                    true => lls[k] / item.choices[k].chars().count() as f64,
                    false => lls[k],
                };
                (1..lls.len()).fold(0, |best, k| if score(k) > score(best) { k } else { best })
            })
            .collect()
    }

    /// `acc` and `acc_norm` of these scores on `items`.
    pub fn accuracy(&self, items: &[ChoiceItem]) -> ChoiceAccuracy {
        let rate = |per_char: bool| {
            let hits: Vec<f64> = self
                .predictions(items, per_char)
                .iter()
                .zip(items)
                .map(|(&p, item)| f64::from(u8::from(p == item.gold)))
                .collect();
            let n = hits.len() as f64;
            let mean = hits.iter().sum::<f64>() / n;
            let var = hits.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean, (hits.len() > 1).then(|| (var / n).sqrt()))
        };
        let (acc, acc_stderr) = rate(false);
        let (acc_norm, acc_norm_stderr) = rate(true);
        ChoiceAccuracy {
            acc,
            acc_stderr,
            acc_norm,
            acc_norm_stderr,
            items: items.len(),
            choices: self.log_likelihoods.iter().map(Vec::len).sum(),
            tokens: self.tokens,
        }
    }
}

/// The log-likelihood of every choice of `items` under `model` ([`ChoiceBatches`]).
pub async fn score_choices<B: Backend>(
    model: &Llama<B>,
    tok: &Tokenizer,
    items: &[ChoiceItem],
    opts: &ChoiceOptions,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<ChoiceScores> {
    let batches = ChoiceBatches::new(tok, items, opts, &model.config)?;
    batches.score(model, device, progress).await
}

/// Every choice of a task's items (its first `max_items`) as a sequence to score, longest first, in forward
/// batches of `batch` (shorter ones padded at the end, so each batch pads little). A sequence is cut from the
/// front to the model's `max_position_embeddings` (as lm-evaluation-harness cuts to its maximum length); a
/// continuation that alone fills it is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceBatches {
    requests: Vec<Request>,
    /// The items scored.
    items: Vec<ChoiceItem>,
    batch: usize,
}

impl ChoiceBatches {
    /// Encodes the choices of `items` for a model of `cfg`, checking every id against its vocabulary.
    pub fn new(
        tok: &Tokenizer,
        items: &[ChoiceItem],
        opts: &ChoiceOptions,
        cfg: &ModelConfig,
    ) -> Result<Self> {
        if opts.batch == 0 || opts.max_items == Some(0) || items.is_empty() {
            return Err(Error::Invalid(format!(
                "multiple-choice scoring needs batch ≥ 1 and at least one item (got batch {}, {} items, \
                 max_items {:?})",
                opts.batch,
                items.len(),
                opts.max_items
            )));
        }
        let items = &items[..opts.max_items.unwrap_or(items.len()).min(items.len())];
        let max_len = cfg.max_position_embeddings;
        let mut requests: Vec<Request> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            for (k, choice) in item.choices.iter().enumerate() {
                let pair = encode_pair(tok, &item.context, choice)
                    .map_err(|e| Error::Text(format!("item {i}, choice {k}: {e}")))?;
                let scored = pair.continuation.len();
                if scored >= max_len {
                    return Err(Error::Text(format!(
                        "item {i}, choice {k}: {scored} tokens do not fit after a context in the model's \
                         {max_len} positions"
                    )));
                }
                let mut seq = pair.context;
                seq.extend(pair.continuation);
                let seq = seq.split_off(seq.len().saturating_sub(max_len));
                check_ids(&seq, cfg.vocab_size)?;
                requests.push((i, k, seq, scored));
            }
        }
        requests.sort_by_key(|r| std::cmp::Reverse(r.2.len()));
        Ok(ChoiceBatches {
            requests,
            items: items.to_vec(),
            batch: opts.batch,
        })
    }

    /// The largest batch's forward: the longest sequences (the first batch), and the most scored positions
    /// any batch runs the head on.
    pub fn footprint(&self, cfg: &ModelConfig) -> Footprint {
        let scored = self
            .requests
            .chunks(self.batch)
            .map(|c| c.iter().map(|r| r.3).sum())
            .max()
            .unwrap_or(0);
        let (rows, len) = (
            self.batch.min(self.requests.len()),
            self.requests[0].2.len(),
        );
        Footprint::scoring(cfg, "multiple-choice scoring", rows, len, scored)
    }

    /// The log-likelihood of every choice under `model`.
    pub async fn score<B: Backend>(
        &self,
        model: &Llama<B>,
        device: &B::Device,
        progress: &dyn Progress,
    ) -> Result<ChoiceScores> {
        let mut log_likelihoods: Vec<Vec<f64>> = (self.items.iter())
            .map(|it| vec![0.0; it.choices.len()])
            .collect();
        let total = self.requests.len();
        progress.report(ProgressEvent::new("choices", 0, total));
        for (b, chunk) in self.requests.chunks(self.batch).enumerate() {
            checkpoint(progress).await?;
            let len = chunk[0].2.len();
            let padded: Vec<Vec<u32>> = chunk
                .iter()
                .map(|r| {
                    let mut s = r.2.clone();
                    s.resize(len, 0);
                    s
                })
                .collect();
            let windows: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
            let nll = readback::to_vec_f64(scored_nll(model, &windows, chunk, device)).await?;
            let mut at = 0;
            for (i, k, _, scored) in chunk {
                log_likelihoods[*i][*k] = -nll[at..at + scored].iter().sum::<f64>();
                at += scored;
            }
            progress.report(ProgressEvent::new(
                "choices",
                (b * self.batch + chunk.len()).min(total),
                total,
            ));
        }
        Ok(ChoiceScores {
            log_likelihoods,
            tokens: self.requests.iter().map(|r| r.3).sum(),
        })
    }
}

/// The NLL of every scored token of a batch, request by request: the head runs only on the positions that
/// predict them (padding only follows, so no scored position sees it).
/// `windows [chunk][len]` → `[Σ scored]`
fn scored_nll<B: Backend>(
    model: &Llama<B>,
    windows: &[&[u32]],
    requests: &[Request],
    device: &B::Device,
) -> Tensor<B, 1> {
    let h = model.hidden(batch_tensor::<B>(windows, device));
    let [b, len, d] = h.dims();
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (row, (_, _, seq, scored)) in requests.iter().enumerate() {
        for p in seq.len() - 1 - scored..seq.len() - 1 {
            rows.push((row * len + p) as i64);
            targets.push(i64::from(seq[p + 1]));
        }
    }
    let n = rows.len();
    let int = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device);
    let h = h
        .reshape([b * len, d])
        .select(0, int(rows))
        .reshape([1, n, d]);
    target_nll(model.head(h), int(targets).reshape([1, n])).reshape([n])
}

/// A task a run scores before and after pruning (`prune --tasks`, the browser lab): its items, its name in the
/// report, and how to batch them.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    pub items: Vec<ChoiceItem>,
    pub opts: ChoiceOptions,
}

impl Task {
    /// Parses the task file `name` (see [`parse_items`]); `max_items` scores only its first items.
    pub fn parse(name: &str, bytes: &[u8], max_items: Option<usize>) -> Result<Self> {
        Ok(Task {
            name: name.into(),
            items: parse_items(bytes, name)?,
            opts: ChoiceOptions {
                max_items,
                ..ChoiceOptions::default()
            },
        })
    }

    /// The task's choices encoded with `tok` for a model of `cfg` (before anything runs, so a bad item or a
    /// batch the device cannot hold is refused up front).
    pub fn encode(self, tok: &Tokenizer, cfg: &ModelConfig) -> Result<EncodedTask> {
        Ok(EncodedTask {
            batches: ChoiceBatches::new(tok, &self.items, &self.opts, cfg)?,
            name: self.name,
        })
    }
}

/// A [`Task`] ready to score: its name and its choices in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTask {
    pub name: String,
    pub batches: ChoiceBatches,
}

impl EncodedTask {
    /// The accuracy of `model` on the task.
    pub async fn accuracy<B: Backend>(
        &self,
        model: &Llama<B>,
        device: &B::Device,
        progress: &dyn Progress,
    ) -> Result<ChoiceAccuracy> {
        let scores = self.batches.score(model, device, progress).await?;
        Ok(scores.accuracy(&self.batches.items))
    }
}
