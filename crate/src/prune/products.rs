//! Matrix products that do not fall to TF32 precision: burn 0.21's CUDA backend rounds f32 matmul operands to
//! TF32 (10 mantissa bits) on tensor cores, which the solver's trailing updates cannot afford. There each
//! operand is split into bf16-exact parts and three products of exact operands are summed (about 16 bits);
//! elsewhere a product is one matmul.

use burn::tensor::{backend::Backend, DType, Tensor};

/// How a backend's f32 matmul treats its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Matmul {
    /// Full f32 operands (the CPU, WebGPU).
    Exact,
    /// Operands rounded to TF32's 10 mantissa bits: burn 0.21's CUDA backend on tensor cores (cubek-matmul's
    /// `adjust_dtypes`; no setting turns it off).
    Tf32,
}

impl F32Matmul {
    /// The behaviour of `C`'s f32 matmul on `device`.
    pub fn of<C: Backend>(device: &C::Device) -> Self {
        match C::name(device).contains("cuda") {
            true => F32Matmul::Tf32,
            false => F32Matmul::Exact,
        }
    }
}

/// `t = head + tail + O(2⁻¹⁶ |t|)`, both parts bf16 values held in `t`'s type: exact in TF32.
pub fn split<C: Backend, const D: usize>(t: Tensor<C, D>) -> (Tensor<C, D>, Tensor<C, D>) {
    let dtype = t.dtype();
    let head = t.clone().cast(DType::BF16).cast(dtype);
    let tail = (t - head.clone()).cast(DType::BF16).cast(dtype);
    (head, tail)
}

/// `a · b` (`[m, k] · [k, n]`) never at TF32 precision: [`product_with`] for `a`'s backend.
pub fn product<C: Backend>(a: Tensor<C, 2>, b: Tensor<C, 2>) -> Tensor<C, 2> {
    let matmul = F32Matmul::of::<C>(&a.device());
    product_with(a, b, matmul)
}

/// `a · b` (`[m, k] · [k, n]`) where `matmul` would round f32 operands to TF32: both are [`split`] and three
/// exact products are summed, `a₁b₂ + a₂b₁ + a₁b₁`, keeping about 16 bits (error ≈ 2⁻¹⁵ `|a||b|` instead of
/// TF32's 2⁻¹¹). One matmul otherwise (and for every type but f32).
pub fn product_with<C: Backend>(
    a: Tensor<C, 2>,
    b: Tensor<C, 2>,
    matmul: F32Matmul,
) -> Tensor<C, 2> {
    if matmul == F32Matmul::Exact || a.dtype() != DType::F32 {
        return a.matmul(b);
    }
    let ((a1, a2), (b1, b2)) = (split(a), split(b));
    a1.clone().matmul(b2) + a2.matmul(b1.clone()) + a1.matmul(b1)
}
