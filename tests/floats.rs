//! Float conversions split over threads give exactly what the per-element conversions give, across chunk
//! boundaries (uneven chunks, more values than one thread takes) and for every stored type; tensor data made
//! for a bf16/f16 device carries that type and reads back to the same values.

use burn::tensor::DType;
use half::{bf16, f16};
use prunelab::io::floats;

/// More values than one thread takes, not a multiple of anything, spanning normal, tiny and special values.
fn values() -> Vec<f32> {
    let n = 3 * (1 << 20) + 7;
    let mut v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.618_034).sin() * 1e3) / (1 + i % 97) as f32)
        .collect();
    v[..6].copy_from_slice(&[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, 65504.0]);
    v
}

#[test]
fn threaded_conversions_equal_per_element_ones() {
    let v = values();
    let bf: Vec<u8> = v
        .iter()
        .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
        .collect();
    assert_eq!(floats::encode(&v, |x| bf16::from_f32(x).to_le_bytes()), bf);
    let back: Vec<f32> = bf
        .chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let ours = floats::decode(&bf, |c| bf16::from_le_bytes(c).to_f32());
    assert!(ours
        .iter()
        .zip(&back)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let h: Vec<u8> = v
        .iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect();
    assert_eq!(floats::encode(&v, |x| f16::from_f32(x).to_le_bytes()), h);
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let f = floats::decode(&raw, f32::from_le_bytes);
    assert!(f.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn tensor_data_for_a_half_device_round_trips() {
    let v = values();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let data = floats::tensor_data(v.clone(), [v.len()], dtype);
        assert_eq!(data.dtype, dtype);
        let burn = data.clone().convert::<f32>().into_vec::<f32>().unwrap();
        let ours = floats::f32s(data).unwrap();
        assert!(
            ours.iter()
                .zip(&burn)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{dtype:?}"
        );
    }
}
