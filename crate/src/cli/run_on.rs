//! Runs a CLI job on the backend the user chose: the native edge, where a device may be touched synchronously
//! (the core never does; the page's worker has its own edge).

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use crate::backend::largest_buffer;
#[cfg(feature = "cuda")]
use crate::backend::Cuda;
#[cfg(feature = "wgpu")]
use crate::backend::Wgpu;
use crate::backend::{BackendKind, Cpu, Precision};
use crate::error::{Error, Result};
use crate::model::footprint::{DeviceLimit, Footprint};
use crate::model::resident::Resident;

/// `--backend` and `--precision`: where a command runs its model, and in which float type.
#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// The float type the model is held and computed in: f32, or bf16 (half the memory; statistics, scores,
    /// solves, norms and softmaxes stay in f32 or wider).
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

impl DeviceArgs {
    pub fn parse(&self) -> Result<(BackendKind, Precision)> {
        Ok((
            BackendKind::parse(&self.backend)?,
            super::parse_enum(&self.precision, "--precision", &Precision::ALL)?,
        ))
    }
}

/// Work that runs on whichever backend the edge picked: implement `run` once, generic over the backend.
pub trait BackendJob {
    type Output;
    /// The forwards the job will run with its model in `precision`, checked against the device before it
    /// starts (none by default); a note names those past the model's trained positions.
    fn footprints(&self, _precision: Precision) -> Vec<Footprint> {
        vec![]
    }
    /// What the job holds on the device in `precision` — its weights (a streamed run's layers at a time), and
    /// at its peak a backward, a search candidate's copy or the layer-wise calibration passes — checked
    /// against the device's memory where it is known (none by default: nothing resident).
    fn resident(&self, _precision: Precision) -> Option<Resident> {
        None
    }
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
        if let (Some(resident), Some(memory)) = (job.resident(precision), device_memory(kind)) {
            resident.check(&memory)?;
        }
        let limit = device_limit(kind);
        for footprint in job.footprints(precision) {
            if let Some(limit) = &limit {
                footprint.check(limit)?;
            }
            if let Some(past) = footprint.past_trained_positions() {
                note!("note: {past}");
            }
        }
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

/// The most bytes one tensor may take on `kind`'s default device: on a GPU, the largest buffer cubecl allocates
/// there; on the CPU, the memory the system has available (Linux; elsewhere no bound is known).
fn device_limit(kind: BackendKind) -> Option<DeviceLimit> {
    match kind {
        BackendKind::Cpu => available_memory().map(|bytes| DeviceLimit {
            bytes,
            source: "the memory this machine has available".into(),
        }),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Some(largest_buffer::<burn::cubecl::wgpu::WgpuRuntime>(
            &Default::default(),
            "wgpu",
        )),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Some(largest_buffer::<burn::cubecl::cuda::CudaRuntime>(
            &Default::default(),
            "cuda",
        )),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The memory of `kind`'s default device: on the CPU, what the system has available (Linux); on CUDA, the
/// device's; unknown on wgpu (WebGPU does not tell it, and wgpu reports no heap sizes).
fn device_memory(kind: BackendKind) -> Option<DeviceLimit> {
    match kind {
        BackendKind::Cpu => device_limit(kind),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Some(crate::backend::cuda_memory(&Default::default())),
        _ => None,
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
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
