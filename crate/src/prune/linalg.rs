//! Where the statistics' linear algebra runs (scores, least squares, reconstruction errors): on the host in
//! f64 (burn's CPU backend with f64 tensors: exact, for models whose Gram matrices are small) or on the compute
//! device in its float type (f32 on CUDA: for 7B models, where the host would dominate the run). The formulas
//! are written once, generic over the backend; this file names the choice and moves tensors between the two.

use burn::tensor::{
    backend::Backend, DType, IndexingUpdateOp, Int, Tensor, TensorCreationOptions, TensorData,
};
use serde::{Deserialize, Serialize};

use super::plan::index;
use crate::error::{Error, Result};
use crate::products::product;
use crate::readback::to_vec_f64;

/// The host backend of [`Linalg::HostF64`].
pub type Host = burn::backend::Flex;

/// Where the linear algebra of scores and compensation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linalg {
    /// f64 on the CPU (statistics and weights are read back once per module).
    #[default]
    HostF64,
    /// Where the model lives, in its float type; only Cholesky's diagonal blocks visit the host.
    Device,
}

impl Linalg {
    pub const ALL: [Linalg; 2] = [Linalg::HostF64, Linalg::Device];
}

/// `t` in f32 if it is in a half type (bf16/f16 runs keep statistics, scores and solves out of 8-bit
/// mantissas); f32 and f64 tensors pass unchanged.
pub fn at_least_f32<C: Backend, const D: usize>(t: Tensor<C, D>) -> Tensor<C, D> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.cast(DType::F32),
        _ => t,
    }
}

/// Column sums of `t` `[rows, cols]` → `[cols]`, as a product with a row of ones: the CPU backend sums down
/// columns element by element, a product reads whole rows.
pub fn column_sums<C: Backend>(t: Tensor<C, 2>) -> Tensor<C, 1> {
    let [rows, cols] = t.dims();
    product(Tensor::ones([1, rows], like(&t)), t).reshape([cols])
}

/// Options creating a tensor on `t`'s device with `t`'s float type.
pub fn like<C: Backend, const D: usize>(t: &Tensor<C, D>) -> TensorCreationOptions<C> {
    TensorCreationOptions::new(t.device()).with_dtype(t.dtype())
}

/// The flat positions of an `n × n` matrix's diagonal, as an index tensor on `t`'s device.
fn diagonal_entries<C: Backend, const D: usize>(n: usize, t: &Tensor<C, D>) -> Tensor<C, 1, Int> {
    let entries: Vec<usize> = (0..n).map(|j| j * (n + 1)).collect();
    index::<C>(&entries, &t.device())
}

/// `diag(a)` `[n]` of `a` `[n, n]`: every `n + 1`-th entry read as a vector (no `n × n` identity).
pub fn diagonal<C: Backend>(a: &Tensor<C, 2>) -> Tensor<C, 1> {
    let n = a.dims()[0];
    a.clone().reshape([n * n]).select(0, diagonal_entries(n, a))
}

/// `a + δI` for `a` `[n, n]`, adding to the diagonal entries only (no `n × n` identity).
pub fn plus_diagonal<C: Backend>(a: Tensor<C, 2>, delta: f64) -> Tensor<C, 2> {
    let n = a.dims()[0];
    let entries = diagonal_entries(n, &a);
    let deltas = Tensor::<C, 1>::ones([n], like(&a)).mul_scalar(delta);
    a.reshape([n * n])
        .select_assign(0, entries, deltas, IndexingUpdateOp::Add)
        .reshape([n, n])
}

/// An f64 tensor on the host.
pub fn host<const D: usize>(values: Vec<f64>, shape: [usize; D]) -> Tensor<Host, D> {
    Tensor::from_data(
        TensorData::new(values, shape),
        TensorCreationOptions::new(Default::default()).with_dtype(DType::F64),
    )
}

/// `t` copied to the host as f64.
pub async fn to_host<C: Backend, const D: usize>(t: Tensor<C, D>) -> Result<Tensor<Host, D>> {
    let shape: [usize; D] = t.dims();
    Ok(host(to_vec_f64(t).await?, shape))
}

/// `t` copied onto `device` of backend `B`, in `B`'s default float type.
pub async fn onto<C: Backend, B: Backend, const D: usize>(
    t: Tensor<C, D>,
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(Tensor::from_data(data.convert::<f32>(), device))
}
