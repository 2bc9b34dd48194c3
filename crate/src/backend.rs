//! The compute backends, chosen once at the edge (the CLI's `cli/run_on.rs`, the page's worker). Everything below
//! is generic over `B: Backend`; this file only names the concrete types, the choice and the float type.

use crate::error::{Error, Result};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use crate::model::footprint::DeviceLimit;

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

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision of tensors of `dtype`: a half type is [`Precision::Bf16`]'s size, anything else f32's.
    pub fn of(dtype: burn::tensor::DType) -> Self {
        use burn::tensor::DType;
        match dtype {
            DType::BF16 | DType::F16 => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// Bytes a value takes.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
        }
    }

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

/// The largest buffer cubecl allocates on `device` of runtime `R` (its `max_page_size`: on wgpu the storage
/// binding limit or a quarter of the Vulkan heap, on CUDA a quarter of the memory); `name` names the backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn largest_buffer<R: burn::cubecl::Runtime>(device: &R::Device, name: &str) -> DeviceLimit {
    DeviceLimit {
        bytes: R::client(device).properties().memory.max_page_size,
        source: format!("the largest buffer {name} allocates on this device"),
    }
}

/// The memory of the CUDA device `device`: cubecl 0.10 sets its largest buffer to a quarter of
/// `cuDeviceTotalMem` (`cubecl-cuda`'s `runtime.rs`), so this is that total, exactly.
#[cfg(feature = "cuda")]
pub fn cuda_memory(device: &burn::backend::cuda::CudaDevice) -> DeviceLimit {
    use burn::cubecl::Runtime;
    let page = burn::cubecl::cuda::CudaRuntime::client(device)
        .properties()
        .memory
        .max_page_size;
    DeviceLimit {
        bytes: page.saturating_mul(4),
        source: "the memory of this CUDA device".into(),
    }
}
