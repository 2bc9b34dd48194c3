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
                return Err(Error::Backend(format!(
                    "unknown backend {other:?} (cpu, wgpu, cuda)"
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
            false => Err(Error::Backend(format!(
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

/// Runs `job` on `kind` (wrapped in burn's Autodiff, so jobs can take gradients when they need them).
pub fn run_on<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    kind.check_compiled()?;
    match kind {
        BackendKind::Cpu => job.run::<burn::backend::Autodiff<Cpu>>(Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Autodiff<Wgpu>>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Autodiff<Cuda>>(Default::default()),
        #[allow(unreachable_patterns)]
        _ => unreachable!("check_compiled rejects backends this build lacks"),
    }
}
