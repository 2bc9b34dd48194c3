//! Float conversion throughput (not a test): bf16 bytes → f32 and f32 → bf16, as a streamed 7B prune does for
//! 13 GB each way (safetensors in and out, and tensor data to and from a bf16 device), with `io::floats`
//! against the per-element iterators and burn's `TensorData` conversion it replaced, and a memcpy of the same
//! values, all measured in the same run. Run: `cargo bench --bench floats`.

use std::hint::black_box;
use std::time::Instant;

use burn::tensor::{DType, TensorData};
use prunelab::io::floats;

/// Best of three runs of `f`, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n = 1 << 27; // 134M values: 256 MiB of bf16, 512 MiB of f32
    let values: Vec<f32> = (0..n)
        .map(|i| ((i % 9973) as f32 - 4986.0) * 1e-3)
        .collect();
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let gb = |bytes: usize, s: f64| bytes as f64 / s / 1e9;
    let copy = best(|| {
        black_box(values.clone());
    });
    let iter_decode = best(|| {
        let v: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        black_box(v);
    });
    let ours_decode = best(|| {
        black_box(floats::decode(&bytes, |c| {
            half::bf16::from_le_bytes(c).to_f32()
        }));
    });
    let iter_encode = best(|| {
        let b: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        black_box(b);
    });
    let ours_encode = best(|| {
        black_box(floats::encode(&values, |v| {
            half::bf16::from_f32(v).to_le_bytes()
        }));
    });
    let data = TensorData::from_bytes_vec(bytes.clone(), [n], DType::BF16);
    let burn_decode = best(|| {
        black_box(data.clone().convert::<f32>());
    });
    let ours_data_decode = best(|| {
        black_box(floats::f32s(data.clone()).unwrap());
    });
    let burn_encode = best(|| {
        black_box(TensorData::new(values.clone(), [n]).convert_dtype(DType::BF16));
    });
    let ours_data_encode = best(|| {
        black_box(floats::tensor_data(values.clone(), [n], DType::BF16));
    });
    let iter_typed = best(|| {
        black_box(
            values
                .iter()
                .map(|v| half::bf16::from_f32(*v))
                .collect::<Vec<_>>(),
        );
    });
    let ours_typed = best(|| {
        black_box(floats::map(&values, |v| half::bf16::from_f32(v).to_bits()));
    });
    let f32_bytes = n * 4;
    let row = |what: &str, base: &str, slow: f64, fast: f64| {
        println!(
            "{what:<34} {base} {:6.2} GB/s  io::floats {:6.2} GB/s  ({:.1}× faster; {:.2}× memcpy's time)",
            gb(f32_bytes, slow),
            gb(f32_bytes, fast),
            slow / fast,
            fast / copy
        )
    };
    println!(
        "{} threads, {n} values ({} MiB as f32); memcpy {:.2} GB/s",
        std::thread::available_parallelism().map_or(1, |c| c.get()),
        f32_bytes >> 20,
        gb(f32_bytes, copy)
    );
    row(
        "safetensors bf16 → f32",
        "iterator",
        iter_decode,
        ours_decode,
    );
    row(
        "f32 → safetensors bf16",
        "iterator",
        iter_encode,
        ours_encode,
    );
    row("f32 → bf16 bits", "iterator", iter_typed, ours_typed);
    row(
        "bf16 tensor data → f32 (+ clone)",
        "burn    ",
        burn_decode,
        ours_data_decode,
    );
    row(
        "f32 → bf16 tensor data (+ clone)",
        "burn    ",
        burn_encode,
        ours_data_encode,
    );
}
