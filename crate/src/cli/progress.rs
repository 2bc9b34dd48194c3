//! Progress bars on stderr (indicatif), one per stage, and Ctrl-C / SIGTERM as a cancel request: the run stops
//! at its next checkpoint and writes nothing (a half-written output is removed); a second signal removes it and
//! ends the process at once.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::{Progress, ProgressEvent};

/// Draws a bar per stage, followed by the stage's latest message; hidden when stderr is not a terminal.
#[derive(Default)]
pub struct Bars {
    current: RefCell<Option<(String, ProgressBar)>>,
}

/// Set by the first Ctrl-C or SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns Ctrl-C and SIGTERM into a cancel request for every [`Bars`] (once per process; a second signal removes
/// the partial output and exits with status 130 at once).
pub fn catch_interrupts() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            super::output::remove_partial();
            std::process::exit(130);
        }
        note!("\nstopping at the next checkpoint; nothing will be written (again to quit at once)");
    });
}

impl Progress for Bars {
    fn cancelled(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    fn report(&self, e: ProgressEvent<'_>) {
        let mut cur = self.current.borrow_mut();
        if cur.as_ref().map(|(s, _)| s != e.stage).unwrap_or(true) {
            if let Some((_, bar)) = cur.take() {
                bar.finish();
            }
            let bar = ProgressBar::new(e.total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:40}] {pos}/{len} {elapsed_precise} {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_prefix(e.stage.to_string());
            *cur = Some((e.stage.to_string(), bar));
        }
        if let Some((_, bar)) = cur.as_ref() {
            bar.set_length(e.total as u64);
            bar.set_position(e.done as u64);
            bar.set_message(e.message);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some((_, bar)) = self.current.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}
