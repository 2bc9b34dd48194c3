//! The compute backends, chosen once at the edge (CLI `main`, the page's worker). Everything below is generic
//! over `B: Backend`; this file only names the concrete types.

use crate::error::{Error, Result};

/// CPU backend (burn's pure-Rust `flex`; also the browser's fallback).
pub type Cpu = burn::backend::Flex;
/// GPU through wgpu: Vulkan/Metal natively, WebGPU in a browser.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
/// NVIDIA GPUs through CUDA.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// Which backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendKind {
    /// Parses `cpu`, `wgpu` or `cuda`, and checks the binary was built with it.
    pub fn parse(name: &str) -> Result<Self> {
        let kind = match name {
            "cpu" | "flex" => BackendKind::Cpu,
            "wgpu" | "vulkan" | "webgpu" => BackendKind::Wgpu,
            "cuda" => BackendKind::Cuda,
            other => {
                return Err(Error::Invalid(format!(
                    "--backend {other:?}: expected cpu, wgpu or cuda"
                )))
            }
        };
        kind.check_compiled()?;
        Ok(kind)
    }

    /// Errors when this build lacks the backend's cargo feature.
    pub fn check_compiled(self) -> Result<()> {
        let compiled = match self {
            BackendKind::Cpu => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        };
        match compiled {
            true => Ok(()),
            false => Err(Error::Invalid(format!(
                "this build has no {} backend (rebuild with `--features {}`)",
                self.name(),
                self.name()
            ))),
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// Work that runs on whichever backend the edge picked: implement `run` once, generic over the backend.
pub trait BackendJob {
    type Output;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<Self::Output>;
}

/// Runs `job` on `kind` in `precision` (wrapped in burn's Autodiff, so jobs can take gradients when they need
/// them).
pub fn run_on<J: BackendJob>(kind: BackendKind, precision: Precision, job: J) -> Result<J::Output> {
    kind.check_compiled()?;
    fn go<B: burn::tensor::backend::AutodiffBackend, J: BackendJob>(
        kind: BackendKind,
        precision: Precision,
        job: J,
    ) -> Result<J::Output> {
        let device = B::Device::default();
        if kind != BackendKind::Cpu {
            probe::<B>(&device, kind)?;
        }
        precision.apply::<B>(&device, kind)?;
        job.run::<B>(device)
    }
    match kind {
        BackendKind::Cpu => go::<burn::backend::Autodiff<Cpu>, J>(kind, precision, job),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => go::<burn::backend::Autodiff<Wgpu>, J>(kind, precision, job),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => go::<burn::backend::Autodiff<Cuda>, J>(kind, precision, job),
        #[allow(unreachable_patterns)]
        _ => unreachable!("check_compiled rejects backends this build lacks"),
    }
}

/// Touches `device` once, so that a backend that cannot start (no CUDA driver library, no Vulkan adapter: the
/// runtime panics on its server thread) ends in an error naming the cause instead of a panic.
fn probe<B: burn::tensor::backend::Backend>(device: &B::Device, kind: BackendKind) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = std::panic::take_hook();
    let record = first.clone();
    std::panic::set_hook(Box::new(move |info| {
        let mut first = record.lock().unwrap_or_else(|e| e.into_inner());
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()));
        if first.is_none() {
            *first = message;
        }
    }));
    let touched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::zeros([1], device).into_data()
    }));
    std::panic::set_hook(hook);
    match touched {
        Ok(_) => Ok(()),
        Err(_) => {
            let why = first.lock().unwrap_or_else(|e| e.into_inner()).take();
            // cudarc's message lists every library name it tried after " - ".
            let why = why.unwrap_or_default();
            let why = why.split(" - ").next().unwrap_or_default();
            Err(Error::Backend(format!(
                "{} cannot start on this machine: {why}",
                kind.name()
            )))
        }
    }
}

/// The float type a run stores its model in and computes with. Statistics, scores, solves, norms, softmaxes
/// and losses stay in f32 or wider either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Half the memory of f32 (a 7B model's weights and gradients fit where f32's would not) and the GPU's
    /// tensor cores.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// Makes `self` the float type of every tensor later created on `device` of backend `kind`. Call it before
    /// anything touches the device; once per process.
    pub fn apply<B: burn::tensor::backend::Backend>(
        self,
        device: &B::Device,
        kind: BackendKind,
    ) -> Result<()> {
        use burn::tensor::{DType, Element};
        let dtype = match self {
            Precision::F32 => return Ok(()),
            Precision::Bf16 => DType::BF16,
        };
        if !B::supports_dtype(device, dtype) {
            return Err(Error::Invalid(format!(
                "--backend {} cannot compute in bf16 on this machine (use --precision f32)",
                kind.name()
            )));
        }
        burn::tensor::set_default_dtypes::<B>(device, dtype, <B::IntElem as Element>::dtype())
            .map_err(|e| Error::Backend(format!("cannot switch {} to bf16: {e:?}", kind.name())))
    }
}
