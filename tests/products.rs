//! Products that keep f32 where CUDA's matmul rounds operands to TF32 (`products`), checked on the CPU with
//! TF32 emulated: the emulation rounds as TF32 does, the split parts are exact, the split product is far
//! closer to the exact one than a TF32 product, and under autodiff both gradients are split products too (not
//! burn's matmul backward, which would hand the output gradient to the matmul whole).

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use prunelab::backend::Cpu;
use prunelab::products::{product_with, round_tf32, split, F32Matmul};
use rand::{Rng, SeedableRng};

/// Values spanning six decades with all 24 mantissa bits in play.
fn draw(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.random::<f32>() - 0.5) * 10f32.powi(rng.random_range(-3..3)))
        .collect()
}

fn tensor<B: Backend, const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

fn host<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// TF32 rounding as `round_tf32` computes it (Veltkamp's splitting in f32 arithmetic).
fn tf32(x: f32) -> f32 {
    let c = x * 8193.0;
    c - (c - x)
}

/// bf16 head of `x` (round to nearest even, as a cast) and the f32 tail `x − head`.
fn parts(x: f32) -> (f32, f32) {
    let head = half::bf16::from_f32(x).to_f32();
    (head, x - head)
}

/// `Σ_l x_l y_l` as a split product forms it on a TF32 matmul (`x₁y₁ + x₁·tf32(y₂) + tf32(x₂)·tf32(y)`), the
/// exact sum, the sum of TF32-rounded products (one plain TF32 matmul), and the scale `Σ |x_l y_l|`, in f64.
fn dots(x: &[f32], y: &[f32]) -> [f64; 4] {
    let mut sums = [0f64; 4];
    for (&xl, &yl) in x.iter().zip(y) {
        let ((x1, x2), (y1, y2)) = (parts(xl), parts(yl));
        let f = |v: f32| v as f64;
        sums[0] += f(x1) * f(y1) + f(x1) * f(tf32(y2)) + f(tf32(x2)) * f(tf32(yl));
        sums[1] += f(xl) * f(yl);
        sums[2] += f(tf32(xl)) * f(tf32(yl));
        sums[3] += (f(xl) * f(yl)).abs();
    }
    sums
}

/// `round_tf32` keeps 11 significant bits (the low 13 of the f32 mantissa are zero) and moves a value by at
/// most half a unit in that place; `split` gives a bf16 head and a tail that add up to the value exactly, the
/// tail at most 2⁻⁸ of it.
#[test]
fn tf32_rounding_and_split_parts_are_exact() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let v = draw(&mut rng, 4096);
    let rounded = host(round_tf32(tensor::<Cpu, 1>(&v, [v.len()])));
    let (head, tail) = split(tensor::<Cpu, 1>(&v, [v.len()]));
    let (head, tail) = (host(head), host(tail));
    for i in 0..v.len() {
        let x = v[i];
        assert_eq!(
            rounded[i].to_bits() & 0x1FFF,
            0,
            "{x}: {} has more than 11 bits",
            rounded[i]
        );
        // Half a unit in the 11th significant bit is at most 2⁻¹¹ |x|.
        assert!(
            (rounded[i] as f64 - x as f64).abs() <= x.abs() as f64 * 2f64.powi(-11),
            "{x} rounded to {}",
            rounded[i]
        );
        assert_eq!(rounded[i], tf32(x));
        assert_eq!(head[i].to_bits() & 0xFFFF, 0, "head {} not bf16", head[i]);
        assert_eq!(
            head[i] as f64 + tail[i] as f64,
            x as f64,
            "{x}: parts do not add up"
        );
        assert!(
            tail[i].abs() <= x.abs() * 2f32.powi(-8),
            "{x}: tail {}",
            tail[i]
        );
    }
}

/// On a matmul that rounds operands to TF32, the split product is within 3·2⁻¹⁹ `|a||b|` of the exact one,
/// against 2⁻¹⁰ for a plain TF32 product (formulas in f64; measured 6.4e-7 against 3.4e-4); the CPU computes the
/// same product with TF32 emulated, and exactly without.
#[test]
fn split_products_survive_tf32_rounding() {
    let (m, k, n) = (24, 300, 16);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (av, bv) = (draw(&mut rng, m * k), draw(&mut rng, k * n));
    let (a, b) = (tensor::<Cpu, 2>(&av, [m, k]), tensor::<Cpu, 2>(&bv, [k, n]));
    let emulated = host(product_with(a.clone(), b.clone(), F32Matmul::Tf32Emulated));
    let exact_backend = host(product_with(a, b, F32Matmul::Tf32));
    // f32 evaluation of a length-k sum of three-term sums: within (k + 2)·2⁻²⁴ of the formula.
    let accumulation = (k + 2) as f64 * 2f64.powi(-24);
    let mut worst = [0f64; 4];
    for i in 0..m {
        for j in 0..n {
            let row = &av[i * k..][..k];
            let col: Vec<f32> = (0..k).map(|l| bv[l * n + j]).collect();
            let [split, exact, plain, scale] = dots(row, &col);
            let index = i * n + j;
            for (w, err) in worst.iter_mut().zip([
                (split - exact).abs(),
                (plain - exact).abs(),
                (emulated[index] as f64 - split).abs(),
                (exact_backend[index] as f64 - exact).abs(),
            ]) {
                *w = w.max(err / scale);
            }
        }
    }
    let [split_err, plain_err, emulated_err, exact_err] = worst;
    eprintln!(
        "relative to |a||b|: split products {split_err:e}, TF32 products {plain_err:e}; the CPU {emulated_err:e} \
         from the split formula (TF32 emulated), {exact_err:e} from the exact product (not emulated)"
    );
    assert!(
        split_err < 3.0 * 2f64.powi(-19),
        "split products: {split_err:e}"
    );
    assert!(
        plain_err > 64.0 * split_err,
        "TF32 {plain_err:e} vs split {split_err:e}"
    );
    assert!(emulated_err < accumulation, "emulated: {emulated_err:e}");
    assert!(exact_err < accumulation, "exact backend: {exact_err:e}");
}

/// A batched product `[6, 8, m, k] · [6, 8, k, n]` on `Autodiff<Cpu>` with TF32 emulated: the forward and both
/// gradients (upstream gradient `g`, from `loss = Σ y ⊙ g`) equal the split-product formula in f64 to f32
/// rounding, so every backward product was split too. burn's matmul backward is not emulated on the CPU and
/// would land on the exact product, which the short contractions here put well outside that rounding.
#[test]
fn split_product_gradients_are_split_products() {
    type Ad = Autodiff<Cpu>;
    let (batch, m, k, n) = (48, 3, 4, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (av, bv, gv) = (
        draw(&mut rng, batch * m * k),
        draw(&mut rng, batch * k * n),
        draw(&mut rng, batch * m * n),
    );
    let shaped = |v: &[f32], rows: usize, cols: usize| tensor::<Ad, 4>(v, [6, 8, rows, cols]);
    let (a, b) = (
        shaped(&av, m, k).require_grad(),
        shaped(&bv, k, n).require_grad(),
    );
    let y = product_with(a.clone(), b.clone(), F32Matmul::Tf32Emulated);
    let grads = (y.clone() * shaped(&gv, m, n)).sum().backward();
    let (y, da, db) = (
        host(y.inner()),
        host(a.grad(&grads).unwrap()),
        host(b.grad(&grads).unwrap()),
    );

    // Entry `[i, j]` of the `p`-th `[rows, cols]` matrix of a batch.
    let at = |x: &[f32], rows: usize, cols: usize, p: usize, i: usize, j: usize| {
        x[(p * rows + i) * cols + j]
    };
    // For a result `got` `[batch, rows, cols]` whose entry `(p, r, c)` is `Σ_l x(p, r, c, l) · z(p, r, c, l)`
    // over `len` terms: the worst |got − split formula|, |got − exact| and |split formula − exact|, over scale.
    type Term<'a> = &'a dyn Fn(usize, usize, usize, usize) -> f32;
    let worst = |got: &[f32], [rows, cols, len]: [usize; 3], x: Term, z: Term| {
        let mut worst = [0f64; 3];
        for p in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    let xs: Vec<f32> = (0..len).map(|l| x(p, r, c, l)).collect();
                    let zs: Vec<f32> = (0..len).map(|l| z(p, r, c, l)).collect();
                    let [split, exact, _, scale] = dots(&xs, &zs);
                    let got = got[(p * rows + r) * cols + c] as f64;
                    for (w, err) in worst
                        .iter_mut()
                        .zip([got - split, got - exact, split - exact])
                    {
                        *w = w.max(err.abs() / scale);
                    }
                }
            }
        }
        worst
    };
    // y[p,i,j] = Σ_l a[p,i,l] b[p,l,j]; ∂a[p,i,l] = Σ_j g[p,i,j] b[p,l,j]; ∂b[p,l,j] = Σ_i a[p,i,l] g[p,i,j].
    let forward = worst(
        &y,
        [m, n, k],
        &|p, i, _, l| at(&av, m, k, p, i, l),
        &|p, _, j, l| at(&bv, k, n, p, l, j),
    );
    let lhs_grad = worst(
        &da,
        [m, k, n],
        &|p, i, _, j| at(&gv, m, n, p, i, j),
        &|p, _, l, j| at(&bv, k, n, p, l, j),
    );
    let rhs_grad = worst(
        &db,
        [k, n, m],
        &|p, l, _, i| at(&av, m, k, p, i, l),
        &|p, _, j, i| at(&gv, m, n, p, i, j),
    );
    // f32 evaluation of three length-`L` dot products and their sum: within (L + 2)·2⁻²⁴ of the formula.
    let bound = |len: usize| (len + 2) as f64 * 2f64.powi(-24);
    for (what, [to_split, to_exact, gap], len) in [
        ("forward", forward, k),
        ("∂a", lhs_grad, n),
        ("∂b", rhs_grad, m),
    ] {
        eprintln!(
            "{what}: relative to |x||y|, {to_split:e} from the split formula, {to_exact:e} from the exact \
             product (the formulas {gap:e} apart; f32 bound {:e})",
            bound(len)
        );
        assert!(
            to_split < bound(len),
            "{what}: {to_split:e} from the split formula"
        );
        assert!(
            to_exact < 3.0 * 2f64.powi(-19),
            "{what}: {to_exact:e} from the exact product"
        );
        assert!(
            gap > 4.0 * bound(len),
            "{what}: the formulas are only {gap:e} apart"
        );
    }
}

/// Worst errors, relative to `|x||y|`, of `product` on `Autodiff<B>` (the backend's own `F32Matmul`) against
/// the exact values, over 512 sampled entries of each result: `[forward, ∂a, ∂b]` for `[m, k] · [k, n]` with
/// upstream gradient `g`, and a plain matmul's forward for comparison. 2048 on every side: burn's default CUDA
/// kernel is a tensor-core (TF32) one at any size, and its autotune (the `autotune` feature) tries those first
/// from this size on.
fn product_errors<B: Backend>(device: &B::Device) -> ([f64; 3], f64) {
    use prunelab::products::product;
    let size = 2048;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let (av, bv, gv) = (
        draw(&mut rng, size * size),
        draw(&mut rng, size * size),
        draw(&mut rng, size * size),
    );
    let on = |v: &[f32]| {
        Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(v.to_vec(), [size, size]), device)
    };
    let (a, b) = (on(&av).require_grad(), on(&bv).require_grad());
    let y = product(a.clone(), b.clone());
    let grads = (y.clone() * on(&gv)).sum().backward();
    let back = |t: Tensor<B, 2>| -> Vec<f32> { t.into_data().convert::<f32>().into_vec().unwrap() };
    let plain = back(a.clone().inner().matmul(b.clone().inner()));
    let (y, da, db) = (
        back(y.inner()),
        back(a.grad(&grads).unwrap()),
        back(b.grad(&grads).unwrap()),
    );
    let row = |x: &[f32], i: usize| x[i * size..][..size].to_vec();
    let col =
        |x: &[f32], j: usize| -> Vec<f32> { x.iter().skip(j).step_by(size).copied().collect() };
    let err = |got: f32, x: Vec<f32>, y: Vec<f32>| {
        let [_, exact, _, scale] = dots(&x, &y);
        (got as f64 - exact).abs() / scale
    };
    // y = a·b, ∂a = g·bᵀ, ∂b = aᵀ·g.
    let mut worst = ([0f64; 3], 0f64);
    for _ in 0..512 {
        let (i, j) = (rng.random_range(0..size), rng.random_range(0..size));
        let cell = i * size + j;
        worst.0[0] = worst.0[0].max(err(y[cell], row(&av, i), col(&bv, j)));
        worst.1 = worst.1.max(err(plain[cell], row(&av, i), col(&bv, j)));
        worst.0[1] = worst.0[1].max(err(da[cell], row(&gv, i), row(&bv, j)));
        worst.0[2] = worst.0[2].max(err(db[cell], col(&av, i), col(&gv, j)));
    }
    worst
}

/// `product` keeps f32's precision where it runs, gradients included: within 2⁻¹⁶ of the exact values (3·2⁻¹⁹
/// from TF32's rounding of the tails, the rest f32 accumulation over 2048 terms). Where the backend's matmul
/// rounds to TF32 (`tf32`), a plain matmul is more than 16 times further off, which shows the rounding is
/// there to survive; elsewhere a plain matmul is as good.
fn check_products<B: Backend>(backend: &str, tf32: bool, device: &B::Device) {
    let ([forward, lhs, rhs], plain) = product_errors::<B>(device);
    eprintln!(
        "{backend}: products off by {forward:e} (forward), {lhs:e} (∂a), {rhs:e} (∂b) of |x||y|; a plain \
         matmul {plain:e}"
    );
    let bound = 2f64.powi(-16);
    for (what, err) in [("forward", forward), ("∂a", lhs), ("∂b", rhs)] {
        assert!(err < bound, "{backend} {what}: {err:e} of |x||y|");
    }
    match tf32 {
        true => assert!(
            plain > 16.0 * forward.max(lhs).max(rhs),
            "{backend}: a plain matmul is {plain:e} off: no TF32 rounding at this shape"
        ),
        false => assert!(plain < bound, "{backend}: a plain matmul is {plain:e} off"),
    }
}

#[test]
fn cpu_products_keep_f32() {
    check_products::<Cpu>("cpu", false, &Default::default());
}

/// Runs on a lent GPU (`benches/gpu/run.sh`, with `--ignored`), where burn's f32 matmul rounds to TF32; CI builds
/// it but has no GPU to run it on.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: benches/gpu/run.sh runs it"]
fn cuda_products_keep_f32() {
    check_products::<prunelab::backend::Cuda>("cuda", true, &Default::default());
}
