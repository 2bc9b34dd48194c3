//! Progress of long stages, reported to a sink (indicatif bars in the CLI, `postMessage` in the page), and the
//! checkpoints between layers, windows and steps where a run can be cancelled.

use std::future::Future;
use std::pin::Pin;

use crate::error::{Error, Result};

/// The host's turn at a checkpoint; resolves to whether the run should stop.
pub type Turn<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

/// One progress report: `done` of `total` units of `stage`, and what the stage has found so far.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgressEvent<'a> {
    pub stage: &'a str,
    pub done: usize,
    pub total: usize,
    /// The stage's news for a person watching (the layer at work, the running perplexity, the best loss so
    /// far); empty when there is none.
    pub message: String,
}

impl<'a> ProgressEvent<'a> {
    /// `done` of `total` units of `stage`, without a message.
    pub fn new(stage: &'a str, done: usize, total: usize) -> Self {
        Self {
            stage,
            done,
            total,
            message: String::new(),
        }
    }

    /// The same report with `message`.
    pub fn saying(self, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..self
        }
    }
}

/// Receives progress and answers whether the run should stop.
pub trait Progress {
    /// Called at the start of a stage (`done = 0`) and after each unit of work.
    fn report(&self, event: ProgressEvent<'_>);
    /// Checked between units of work in synchronous loops; a `true` stops the run with [`Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
    /// At a checkpoint of an async stage: gives the host a turn (a browser worker handles the messages that
    /// arrived meanwhile, such as Cancel), then answers whether to stop. Natively there is nothing to wait for.
    fn turn(&self) -> Turn<'_> {
        Box::pin(std::future::ready(self.cancelled()))
    }
}

/// A checkpoint between units of work in an async stage: the host's turn, then [`Error::Cancelled`] if asked.
pub async fn checkpoint(progress: &dyn Progress) -> Result<()> {
    match progress.turn().await {
        true => Err(Error::Cancelled),
        false => Ok(()),
    }
}

/// A sink that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn report(&self, _: ProgressEvent<'_>) {}
}
