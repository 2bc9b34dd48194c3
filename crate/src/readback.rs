//! Reading tensors back to the host. Always asynchronous: in a browser every synchronous read panics, and the
//! native edge simply blocks on these futures.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::error::{Error, Result};

/// A tensor's values in its own float type (bf16 stays bf16), row-major, with its shape.
pub async fn to_data<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<TensorData> {
    t.into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// All values of a float tensor, row-major.
pub async fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let data = to_data(t).await?;
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// All values of a float tensor as f64 (exact for f64 tensors), row-major.
pub async fn to_vec_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f64>> {
    let data = to_data(t).await?;
    data.convert::<f64>()
        .into_vec::<f64>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// The single value of a one-element float tensor.
pub async fn scalar<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<f64> {
    to_vec_f64(t)
        .await?
        .first()
        .copied()
        .ok_or_else(|| Error::Readback("expected one value, got none".into()))
}
