//! Progress of long stages, reported to a sink (indicatif bars in the CLI, `postMessage` in the page), and the
//! cancel flag that long loops check between steps.

/// One progress report: `done` of `total` units of `stage`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgressEvent<'a> {
    pub stage: &'a str,
    pub done: usize,
    pub total: usize,
}

/// Receives progress and answers whether the run should stop.
pub trait Progress {
    /// Called at the start of a stage (`done = 0`) and after each unit of work.
    fn report(&self, event: ProgressEvent<'_>);
    /// Checked between units of work; a `true` stops the run with [`crate::Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// A sink that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn report(&self, _: ProgressEvent<'_>) {}
}
