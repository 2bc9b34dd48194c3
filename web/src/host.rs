//! What the worker hands the core: a progress sink with checkpoints (where a Cancel from the page is seen) and
//! a sink for the files of a download, in parts.

use std::cell::Cell;

use prunelab::error::{Error, Result};
use prunelab::progress::{Progress, ProgressEvent, Turn};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

/// `progress(stage, done, total, message)` as work goes; `checkpoint()` returns a promise that resolves after the worker
/// had a turn, to whether the page asked to cancel.
pub struct JsProgress {
    progress: js_sys::Function,
    checkpoint: Option<js_sys::Function>,
    cancelled: Cell<bool>,
}

impl JsProgress {
    pub fn new(progress: js_sys::Function, checkpoint: Option<js_sys::Function>) -> Self {
        Self {
            progress,
            checkpoint,
            cancelled: Cell::new(false),
        }
    }
}

impl Progress for JsProgress {
    fn report(&self, e: ProgressEvent<'_>) {
        let args = js_sys::Array::new();
        args.push(&e.stage.into());
        args.push(&(e.done as u32).into());
        args.push(&(e.total as u32).into());
        args.push(&e.message.into());
        let _ = self.progress.apply(&JsValue::NULL, &args);
    }

    fn cancelled(&self) -> bool {
        self.cancelled.get()
    }

    fn turn(&self) -> Turn<'_> {
        Box::pin(async move {
            let Some(f) = &self.checkpoint else {
                return self.cancelled.get();
            };
            let asked = match f.call0(&JsValue::NULL) {
                Ok(p) => JsFuture::from(js_sys::Promise::resolve(&p))
                    .await
                    .is_ok_and(|v| v.is_truthy()),
                Err(_) => false,
            };
            self.cancelled.set(self.cancelled.get() || asked);
            self.cancelled.get()
        })
    }
}

/// Files to the page: `emit(file, bytes)`, called several times per file for the weights.
pub struct Emit(pub js_sys::Function);

impl Emit {
    pub fn part(&self, file: &str, bytes: &[u8]) -> Result<()> {
        self.0
            .call2(
                &JsValue::NULL,
                &file.into(),
                &js_sys::Uint8Array::from(bytes),
            )
            .map(|_| ())
            .map_err(|e| Error::Invalid(format!("the page refused {file}: {e:?}")))
    }
}
