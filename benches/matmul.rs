//! Matrix-product throughput on a cubecl backend (not a test): burn's matmul autotuned (the `autotune` feature:
//! cubek's kernels — tensor-core ones with and without TMA, double-buffered, unit — timed on a shape's first call,
//! the fastest kept) against the one kernel burn launches without autotune (`SimpleCyclicCmma`, or `SimpleUnit`
//! where the device has no tensor cores), at the products of a forward and a backward, in f32 and, on CUDA,
//! bf16. Each line gives both throughputs, their ratio, each first call's time (kernel compilation, and tuning)
//! and how far the two results are apart.
//!
//! Run: `cargo bench --features cuda,autotune --bench matmul [-- cuda|wgpu] [--shape 7b|30m]` (default:
//! LLaMA-7B's shapes on CUDA, the random 30M model's on wgpu, as in `benches/forward.rs`).

use std::time::Instant;

use burn::tensor::{backend::Backend, DType, Distribution, Tensor, TensorPrimitive};
use burn_cubecl::kernel::matmul::{matmul, MatmulStrategy};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use prunelab::readback::scalar;

/// One product `x · Wᵀ` (or a weight gradient `xᵀ · dy`) of a model's shape: `m × k` by `k × n`.
struct Case {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    /// `lhs` is a transposed view (`xᵀ`, a weight gradient); otherwise `rhs` is (`Wᵀ`, as `Linear` multiplies).
    lhs_transposed: bool,
}

/// The products of a forward and backward over `tokens` positions of a model with these widths.
fn cases(tokens: usize, hidden: usize, mlp: usize, vocab: usize) -> Vec<Case> {
    let case = |name, m, k, n, lhs_transposed| Case {
        name,
        m,
        k,
        n,
        lhs_transposed,
    };
    vec![
        case("attention projection", tokens, hidden, hidden, false),
        case("gate / up", tokens, hidden, mlp, false),
        case("down", tokens, mlp, hidden, false),
        case("head", tokens, hidden, vocab, false),
        case("gate / up gradient", hidden, tokens, mlp, true),
    ]
}

/// `a · b` launched with `strategy`, in `a`'s float type.
fn product<R: CubeRuntime, BT: BoolElement>(
    strategy: MatmulStrategy,
    a: Tensor<CubeBackend<R, f32, i32, BT>, 2>,
    b: Tensor<CubeBackend<R, f32, i32, BT>, 2>,
) -> Tensor<CubeBackend<R, f32, i32, BT>, 2> {
    let dtype = a.dtype();
    let out = matmul::<R>(
        a.into_primitive().tensor(),
        b.into_primitive().tensor(),
        None,
        strategy,
        dtype,
    )
    .expect("the matmul launches");
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// What one strategy did on one case: seconds of its first call and of a warm call, and its result.
struct Timing<B: Backend> {
    first: f64,
    warm: f64,
    out: Tensor<B, 2>,
}

fn time<R: CubeRuntime, BT: BoolElement>(
    strategy: fn() -> MatmulStrategy,
    a: &Tensor<CubeBackend<R, f32, i32, BT>, 2>,
    b: &Tensor<CubeBackend<R, f32, i32, BT>, 2>,
    iters: usize,
) -> Timing<CubeBackend<R, f32, i32, BT>> {
    let device = a.device();
    let sync = || CubeBackend::<R, f32, i32, BT>::sync(&device).expect("the device syncs");
    sync();
    let start = Instant::now();
    let out = product(strategy(), a.clone(), b.clone());
    sync();
    let first = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..iters {
        let _ = product(strategy(), a.clone(), b.clone());
    }
    sync();
    Timing {
        first,
        warm: start.elapsed().as_secs_f64() / iters as f64,
        out,
    }
}

fn run<R: CubeRuntime, BT: BoolElement>(
    backend: &str,
    dtypes: &[DType],
    cases: &[Case],
    iters: usize,
) {
    let device = R::Device::default();
    for &dtype in dtypes {
        for case in cases {
            let random = |rows, cols| {
                Tensor::<CubeBackend<R, f32, i32, BT>, 2>::random(
                    [rows, cols],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
                .cast(dtype)
            };
            let (a, b) = match case.lhs_transposed {
                true => (random(case.k, case.m).transpose(), random(case.k, case.n)),
                false => (random(case.m, case.k), random(case.n, case.k).transpose()),
            };
            // The default kernel first: tuning compiles it among the others, which would hide its compilation.
            let fixed = time(|| MatmulStrategy::Cube, &a, &b, iters);
            let tuned = time(|| MatmulStrategy::Autotune, &a, &b, iters);
            let (tuned_out, fixed_out) = (tuned.out.cast(DType::F32), fixed.out.cast(DType::F32));
            let apart = pollster::block_on(scalar((tuned_out - fixed_out.clone()).abs().max()))
                .expect("read back")
                / pollster::block_on(scalar(fixed_out.abs().max())).expect("read back");
            let tflops = |secs: f64| 2.0 * (case.m * case.k * case.n) as f64 / secs / 1e12;
            println!(
                "{backend} {:<4} {:<21} {:>5} × {:>5} × {:>5}  default kernel {:>7.3} TFLOP/s (first call {:>6.2} s)  \
                 autotuned {:>7.3} TFLOP/s (first call {:>6.2} s), {:>5.2}× faster  max |Δ| / max |y| {apart:.1e}",
                format!("{dtype:?}").to_lowercase(),
                case.name,
                case.m,
                case.k,
                case.n,
                tflops(fixed.warm),
                fixed.first,
                tflops(tuned.warm),
                tuned.first,
                fixed.warm / tuned.warm,
            );
        }
    }
}

/// `cargo bench --features cuda,autotune --bench matmul [-- cuda|wgpu] [--shape 7b|30m]`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shape = args
        .iter()
        .position(|a| a == "--shape")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted =
        |b: &str| !args.iter().any(|a| a == "cuda" || a == "wgpu") || args.iter().any(|a| a == b);
    let shapes = |default: &str| match shape.as_deref().unwrap_or(default) {
        // LLaMA-7B over the GPU bench's 10 × 128 Taylor windows.
        "7b" => (cases(1280, 4096, 11008, 32000), 10),
        // benches/forward.rs's random 30M model over 8 × 128 tokens.
        "30m" => (cases(1024, 512, 1536, 8192), 3),
        other => panic!("--shape {other}: 7b or 30m"),
    };
    if wanted("cuda") {
        let (cases, iters) = shapes("7b");
        run::<burn::cubecl::cuda::CudaRuntime, u8>(
            "cuda",
            &[DType::F32, DType::BF16],
            &cases,
            iters,
        );
    }
    if wanted("wgpu") {
        let (cases, iters) = shapes("30m");
        run::<burn::cubecl::wgpu::WgpuRuntime, u32>("wgpu", &[DType::F32], &cases, iters);
    }
}
