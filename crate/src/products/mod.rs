//! Matrix products that keep f32's precision where burn 0.21's CUDA backend rounds f32 matmul operands to TF32
//! (11 significant bits) on tensor cores: in its default kernel (`SimpleCyclicCmma`, every matmul's without
//! autotune) and wherever autotune picks a tensor-core one: neither an f32 forward (the golden
//! tolerances, PyTorch's f32 default) nor the solver's trailing updates can afford that. There each operand is
//! split into a bf16 head, exact in TF32, and an f32 tail 2⁸ times smaller, so the rounding TF32 applies lands
//! on the tails only: three products `a₁b₁ + a₁b₂ + a₂b` keep about 19 bits. Elsewhere a product is one
//! matmul. Under autodiff the split product is one operation whose backward products are split as well
//! ([`tracked`]).

mod tracked;

use burn::tensor::{backend::Backend, DType, Tensor};

/// How a backend's f32 matmul treats its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Matmul {
    /// Full f32 operands (the CPU, WebGPU).
    Exact,
    /// Operands may be rounded to TF32's 11 significant bits: burn 0.21's CUDA backend, whose default kernel
    /// runs on tensor cores and whose autotune picks per shape among exact f32 kernels and tensor-core ones that
    /// round (cubek-matmul's `adjust_dtypes`; no setting excludes them).
    Tf32,
    /// An exact backend made to round every matmul operand as TF32 does, so a CPU measures what a CUDA run
    /// computes (tests and experiments; [`round_tf32`]).
    Tf32Emulated,
}

impl F32Matmul {
    /// The behaviour of `C`'s f32 matmul on `device` (autodiff wrappers included: their names contain the
    /// inner backend's).
    pub fn of<C: Backend>(device: &C::Device) -> Self {
        match C::name(device).contains("cuda") {
            true => F32Matmul::Tf32,
            false => F32Matmul::Exact,
        }
    }

    /// One matmul as this backend forms it.
    fn matmul<C: Backend, const D: usize>(self, a: Tensor<C, D>, b: Tensor<C, D>) -> Tensor<C, D> {
        match self {
            F32Matmul::Tf32Emulated => round_tf32(a).matmul(round_tf32(b)),
            F32Matmul::Exact | F32Matmul::Tf32 => a.matmul(b),
        }
    }
}

/// `t` rounded to nearest with 11 significant bits, TF32's precision, by Veltkamp's splitting
/// (`c = (2¹³ + 1)·t`, `c − (c − t)`): exact where f32 operations are each rounded once, as on the CPU.
pub fn round_tf32<C: Backend, const D: usize>(t: Tensor<C, D>) -> Tensor<C, D> {
    let c = t.clone() * 8193.0;
    c.clone() - (c - t)
}

/// `t = head + tail` exactly: `head` is `t` rounded to bf16 (8 significant bits, exact in TF32), `tail = t −
/// head` (`|tail| ≤ 2⁻⁸ |t|`, exact in f32), both in `t`'s type.
pub fn split<C: Backend, const D: usize>(t: Tensor<C, D>) -> (Tensor<C, D>, Tensor<C, D>) {
    let head = t.clone().cast(DType::BF16).cast(t.dtype());
    (head.clone(), t - head)
}

/// `a · b` (`[.., m, k] · [.., k, n]`) at f32's precision on any backend: [`product_with`] for `a`'s backend.
pub fn product<C: Backend, const D: usize>(a: Tensor<C, D>, b: Tensor<C, D>) -> Tensor<C, D> {
    if a.dtype() != DType::F32 {
        return a.matmul(b);
    }
    let matmul = F32Matmul::of::<C>(&a.device());
    product_with(a, b, matmul)
}

/// `a · b` (`[.., m, k] · [.., k, n]`) where `matmul` would round f32 operands to TF32: both are [`split`] and
/// `a₁b₁ + a₁b₂ + a₂b` summed. `a₁b₁` is exact, and TF32 rounds only `b₂` and `a₂` (2⁸ times smaller than `b`
/// and `a`) and `b` where it meets `a₂`: the error is within about 3·2⁻¹⁹ `|a||b|` (plus f32 accumulation)
/// instead of TF32's 2⁻¹⁰. On an autodiff backend the gradients are formed the same way (for equal batch
/// dimensions; broadcast ones take burn's matmul backward). One matmul otherwise (and for every type but f32).
pub fn product_with<C: Backend, const D: usize>(
    a: Tensor<C, D>,
    b: Tensor<C, D>,
    matmul: F32Matmul,
) -> Tensor<C, D> {
    if matmul == F32Matmul::Exact || a.dtype() != DType::F32 {
        return a.matmul(b);
    }
    match tracked::product(a, b, matmul) {
        Ok(product) => product,
        Err((a, b)) => split_product(a, b, matmul),
    }
}

/// `a₁b₁ + a₁b₂ + a₂b` from the [`split`] parts of `a` and `b`, each product formed as `matmul` forms it.
fn split_product<C: Backend, const D: usize>(
    a: Tensor<C, D>,
    b: Tensor<C, D>,
    matmul: F32Matmul,
) -> Tensor<C, D> {
    let ((a1, a2), (b1, b2)) = (split(a), split(b.clone()));
    matmul.matmul(a1.clone(), b1) + matmul.matmul(a1, b2) + matmul.matmul(a2, b)
}
