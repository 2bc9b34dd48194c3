//! Weight I/O on the host (not a test): the seven matrices of one LLaMA-7B decoder layer as bf16 safetensors
//! (202M parameters, 405 MB) uploaded to a bf16 device and read back to bf16 safetensors bytes, by the typed path (the stored
//! type end to end: `WeightSource::read`, `StDtype::encode` of the read-back data) against the f32 detour it
//! replaced (decode to f32, convert to bf16 for the device; read back as f32, encode to bf16), measured in the
//! same run. Also the f32 device, where both paths convert once. Run: `cargo bench --bench weights_io`.

use std::time::Instant;

use burn::tensor::{DType, Tensor, TensorData};
use prunelab::backend::Cpu;
use prunelab::io::safetensors_out::StDtype;
use prunelab::io::SafetensorsWeights;
use prunelab::model::random::RandomWeights;
use prunelab::model::shapes::known_shape;
use prunelab::model::tensors::tensor_specs;
use prunelab::model::{ModelConfig, WeightSource};
use prunelab::readback::{to_data, to_vec};
use safetensors::tensor::TensorView;

/// The matrices of layer 0 of a synthetic LLaMA-7B as one bf16 safetensors file in memory.
fn layer_file() -> (Vec<String>, Vec<u8>) {
    let cfg =
        ModelConfig::from_json(&serde_json::to_vec(&known_shape("llama-7b").unwrap()).unwrap())
            .unwrap();
    let random = RandomWeights::new(&cfg, 0, 0.02);
    let specs: Vec<_> = tensor_specs(&cfg)
        .into_iter()
        .filter(|s| s.layer == Some(0) && s.shape.len() == 2)
        .collect();
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = specs
        .iter()
        .map(|s| {
            let data = random.read(&s.name).unwrap();
            let bytes = StDtype::BF16.encode(data).to_vec();
            (s.name.clone(), s.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            let view = TensorView::new(safetensors::Dtype::BF16, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    let names = specs.into_iter().map(|s| s.name).collect();
    (names, safetensors::serialize(views, None).unwrap())
}

/// Seconds of the fastest of three runs of `f`.
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
    let (names, file) = layer_file();
    let src = SafetensorsWeights::from_files(&[("layer.safetensors".into(), &file)], None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let gb = (file.len() as f64) / 1e9;
    let device = Default::default();
    let upload = |typed: bool, dtype: DType| {
        names
            .iter()
            .map(|n| {
                let data = match typed {
                    true => src.read_as(n, dtype).unwrap(),
                    // The replaced path: safetensors bf16 decoded to f32 values, converted again by burn.
                    false => {
                        let view = st.tensor(n).unwrap();
                        let values: Vec<f32> = view
                            .data()
                            .chunks_exact(2)
                            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                            .collect();
                        TensorData::new(values, view.shape().to_vec())
                    }
                };
                Tensor::<Cpu, 2>::from_data(data, (&device, dtype))
            })
            .collect::<Vec<_>>()
    };
    let download = |tensors: &[Tensor<Cpu, 2>], typed: bool| {
        for t in tensors {
            let data = match typed {
                true => pollster::block_on(to_data(t.clone())).unwrap(),
                false => {
                    let shape = t.dims().to_vec();
                    TensorData::new(pollster::block_on(to_vec(t.clone())).unwrap(), shape)
                }
            };
            std::hint::black_box(StDtype::BF16.encode(data));
        }
    };
    println!("one LLaMA-7B layer, {gb:.3} GB of bf16 safetensors, this machine's CPU backend:");
    for dtype in [DType::BF16, DType::F32] {
        let (typed_up, f32_up) = (
            best(|| drop(upload(true, dtype))),
            best(|| drop(upload(false, dtype))),
        );
        let tensors = upload(true, dtype);
        let (typed_down, f32_down) = (
            best(|| download(&tensors, true)),
            best(|| download(&tensors, false)),
        );
        for (what, typed, detour) in [
            ("upload", typed_up, f32_up),
            ("read back + encode", typed_down, f32_down),
        ] {
            println!(
                "  {dtype:?} device, {what:<18}: typed {:>6.2} GB/s, f32 detour {:>6.2} GB/s — {:.2}× faster",
                gb / typed,
                gb / detour,
                detour / typed
            );
        }
    }
}
