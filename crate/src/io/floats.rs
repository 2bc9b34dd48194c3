//! f32 values ↔ little-endian stored floats (F32, F16, BF16): a 7B checkpoint is 13 GB of bf16 each way, so
//! natively the conversion is split over the machine's cores in contiguous chunks; in wasm it runs on the one
//! thread there is. The same goes for tensor data moving between f32 host values and a bf16/f16 device.
//! `benches/floats.rs` measures it against the per-element iterators and burn's conversion it replaced.

use burn::tensor::{DType, Shape, TensorData};
use half::{bf16, f16};

/// Values per thread below which splitting does not pay.
const MIN_PER_THREAD: usize = 1 << 20;

/// Threads for `n` values: one per core, each with at least [`MIN_PER_THREAD`] values.
fn threads(n: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    #[cfg(target_arch = "wasm32")]
    let cores = 1;
    cores.min(n / MIN_PER_THREAD).max(1)
}

/// Runs `f` on matching chunks of `input` (`a` elements per value) and `output` (`b` per value), one chunk per
/// thread.
fn chunked<I: Sync, O: Send>(
    input: &[I],
    a: usize,
    output: &mut [O],
    b: usize,
    f: impl Fn(&[I], &mut [O]) + Sync,
) {
    let n = input.len() / a;
    let t = threads(n);
    if t == 1 {
        return f(input, output);
    }
    let per = n.div_ceil(t);
    std::thread::scope(|s| {
        for (i, o) in input.chunks(per * a).zip(output.chunks_mut(per * b)) {
            let f = &f;
            s.spawn(move || f(i, o));
        }
    });
}

/// `f` of every value of `input`.
pub fn map<I: Copy + Sync, O: Copy + Default + Send>(
    input: &[I],
    f: impl Fn(I) -> O + Sync,
) -> Vec<O> {
    let mut out = vec![O::default(); input.len()];
    chunked(input, 1, &mut out, 1, |i, o| {
        for (x, y) in i.iter().zip(o) {
            *y = f(*x);
        }
    });
    out
}

/// f32 values of `bytes`, `N` bytes each, decoded by `f`.
pub fn decode<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; bytes.len() / N];
    chunked(bytes, N, &mut out, 1, |i, o| {
        for (c, v) in i.chunks_exact(N).zip(o) {
            *v = f(c.try_into().expect("N-byte chunks"));
        }
    });
    out
}

/// `values` encoded by `f`, `N` bytes each.
pub fn encode<const N: usize>(values: &[f32], f: impl Fn(f32) -> [u8; N] + Sync) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * N];
    chunked(values, 1, &mut out, N, |i, o| {
        for (v, c) in i.iter().zip(o.chunks_exact_mut(N)) {
            c.copy_from_slice(&f(*v));
        }
    });
    out
}

/// `values` as burn tensor data of `dtype` (F32, F16 or BF16; anything else stays f32), converted here in
/// parallel (burn's `convert_dtype` works on one thread).
pub fn tensor_data<S: Into<Shape>>(values: Vec<f32>, shape: S, dtype: DType) -> TensorData {
    // Built as u16 bits (a zeroed u16 vector is allocated lazily, so the threads fault its pages in
    // parallel), then labelled with the half type of the same size.
    let bits = match dtype {
        DType::BF16 => map(&values, |v| bf16::from_f32(v).to_bits()),
        DType::F16 => map(&values, |v| f16::from_f32(v).to_bits()),
        _ => return TensorData::new(values, shape),
    };
    let mut data = TensorData::new(bits, shape);
    data.dtype = dtype;
    data
}

/// The values of float tensor data as f32 (half types converted here in parallel).
pub fn f32s(data: TensorData) -> Result<Vec<f32>, String> {
    let err = |e| format!("{e:?}");
    match data.dtype {
        DType::BF16 => Ok(map(data.as_slice::<bf16>().map_err(err)?, bf16::to_f32)),
        DType::F16 => Ok(map(data.as_slice::<f16>().map_err(err)?, f16::to_f32)),
        _ => data.convert::<f32>().into_vec::<f32>().map_err(err),
    }
}
