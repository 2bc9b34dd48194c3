//! The one linear-algebra interface compensation and the `obs` / `numerical` scores need: solving `A X = B` for
//! a symmetric positive definite `A` by a blocked, right-looking Cholesky factorisation `A = L Lᵀ` wherever `A`
//! lives (the f64 host backend, or the GPU). Only the `b × b` diagonal blocks travel to the host, where faer
//! factors them in f64 and inverts their triangle; every panel, trailing update and substitution is a matmul
//! on `A`'s backend — in f64 wherever that backend has f64 arithmetic (the CPU), else in `A`'s own type (f32 on
//! WebGPU, and on CUDA, where burn 0.21 registers no f64). Never at the precision of the tensor-core type CUDA's
//! f32 matmul rounds its operands to (TF32 keeps 11 significant bits, and a trailing update in TF32 can make a
//! well-posed ridge system look indefinite): there every product is a split product ([`product_with`]).

use std::any::TypeId;

use burn::tensor::{backend::Backend, DType, Tensor};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{get_global_parallelism, Mat, MatRef, Side};

use crate::error::{Error, Result};
use crate::products::{product_with, F32Matmul};
use crate::prune::linalg::{column_sums, like, plus_diagonal, Host};
use crate::readback::to_vec_f64;

/// Diagonal block size on an accelerator: large enough that the panel matmuls keep a GPU busy, small enough
/// that faer factors a block in a millisecond.
pub const BLOCK: usize = 256;

/// The diagonal block size for an `n × n` matrix on backend `C`: [`BLOCK`] on an accelerator; on the CPU
/// backend, where every block is factored on the host anyway, the whole matrix, so faer factors and inverts it
/// in one call on every core (SmolLM2's 1536² `obs` system, factor and `diag(A⁻¹)`: 122 → 57 ms).
fn block_for<C: Backend>(n: usize) -> usize {
    match TypeId::of::<C>() == TypeId::of::<Host>() {
        true => n.max(1),
        false => BLOCK,
    }
}

/// One column block `[start, end)` of `L`.
struct Panel<C: Backend> {
    start: usize,
    end: usize,
    /// `L_kk⁻¹`, `[b, b]` lower triangular.
    inv: Tensor<C, 2>,
    /// `L` below the diagonal block, `[n − end, b]` (none for the last block).
    below: Option<Tensor<C, 2>>,
}

/// `A = L Lᵀ`, kept as its column panels (in the working type).
pub struct Cholesky<C: Backend> {
    n: usize,
    panels: Vec<Panel<C>>,
    /// The type the factor is computed and applied in.
    work: DType,
    /// What the backend's f32 matmul does to its operands.
    matmul: F32Matmul,
}

/// f64 where the backend has f64 arithmetic, else `t`'s own type.
fn working_type<C: Backend, const D: usize>(t: &Tensor<C, D>) -> DType {
    match C::supports_dtype(&t.device(), DType::F64) {
        true => DType::F64,
        false => t.dtype(),
    }
}

impl<C: Backend> Cholesky<C> {
    /// Factors `a` (`[n, n]`, symmetric positive definite) with the backend's diagonal blocks, in f64 where
    /// the backend has it.
    pub async fn factor(a: Tensor<C, 2>) -> Result<Self> {
        let (work, matmul) = (working_type(&a), F32Matmul::of::<C>(&a.device()));
        let block = block_for::<C>(a.dims()[0]);
        Self::factor_with(a, block, work, matmul).await
    }

    /// Factors `a` with diagonal blocks of `block` rows, computing in `work`, with products formed for a
    /// backend whose f32 matmul behaves as `matmul`.
    pub async fn factor_with(
        a: Tensor<C, 2>,
        block: usize,
        work: DType,
        matmul: F32Matmul,
    ) -> Result<Self> {
        let mm = |x: Tensor<C, 2>, y: Tensor<C, 2>| product_with(x, y, matmul);
        let n = a.dims()[0];
        let mut rest = a.cast(work); // the trailing matrix still to factor, [n − start, n − start]
        let mut panels = vec![];
        let mut start = 0;
        while start < n {
            let (b, m) = (block.max(1).min(n - start), n - start);
            let inv = inverse_factor(rest.clone().slice([0..b, 0..b]), start).await?;
            let below = (b < m).then(|| {
                let l21 = mm(rest.clone().slice([b..m, 0..b]), inv.clone().transpose());
                rest = rest.clone().slice([b..m, b..m]) - mm(l21.clone(), l21.clone().transpose());
                l21
            });
            panels.push(Panel {
                start,
                end: start + b,
                inv,
                below,
            });
            start += b;
        }
        Ok(Self {
            n,
            panels,
            work,
            matmul,
        })
    }

    fn mm(&self, x: Tensor<C, 2>, y: Tensor<C, 2>) -> Tensor<C, 2> {
        product_with(x, y, self.matmul)
    }

    /// `L⁻¹ B` for `B` `[n, m]`: `Y_k = L_kk⁻¹ (B_k − Σ_{i<k} L_ki Y_i)`, each block's update pushed down at once.
    fn forward(&self, b: Tensor<C, 2>) -> Tensor<C, 2> {
        let m = b.dims()[1];
        let mut rest = b;
        let mut ys = Vec::with_capacity(self.panels.len());
        for p in &self.panels {
            let (w, rows) = (p.end - p.start, rest.dims()[0]);
            let y = self.mm(p.inv.clone(), rest.clone().slice([0..w, 0..m]));
            if let Some(l21) = &p.below {
                rest = rest.slice([w..rows, 0..m]) - self.mm(l21.clone(), y.clone());
            }
            ys.push(y);
        }
        Tensor::cat(ys, 0)
    }

    /// `L⁻ᵀ Y` for `Y` `[n, m]`: `X_k = L_kk⁻ᵀ (Y_k − L_{>k,k}ᵀ X_{>k})`, from the last block up.
    fn backward(&self, y: Tensor<C, 2>) -> Tensor<C, 2> {
        let m = y.dims()[1];
        let mut below: Option<Tensor<C, 2>> = None; // X_{>k}
        for p in self.panels.iter().rev() {
            let yk = y.clone().slice([p.start..p.end, 0..m]);
            let rhs = match (&p.below, &below) {
                (Some(l21), Some(x)) => yk - self.mm(l21.clone().transpose(), x.clone()),
                _ => yk,
            };
            let xk = self.mm(p.inv.clone().transpose(), rhs);
            below = Some(match below {
                Some(x) => Tensor::cat(vec![xk, x], 0),
                None => xk,
            });
        }
        below.unwrap_or(y)
    }

    /// `X` with `A X = B`, for `B` `[n, m]` (returned in `B`'s type).
    pub fn solve(&self, b: Tensor<C, 2>) -> Tensor<C, 2> {
        let dtype = b.dtype();
        self.backward(self.forward(b.cast(self.work))).cast(dtype)
    }

    /// `diag(A⁻¹)` `[n]`: the column sums of squares of `L⁻¹` (`A⁻¹ = L⁻ᵀ L⁻¹`), from [`Self::forward`] on the
    /// identity. `L⁻¹` is lower triangular, so block row `k` only has columns `[0, end_k)`: each step works on that
    /// prefix (a third of the full product's work). Returned in `like_a`'s type.
    pub fn inverse_diagonal(&self, like_a: &Tensor<C, 2>) -> Tensor<C, 1> {
        let n = self.n;
        let mut diag = Tensor::<C, 1>::zeros([n], like(like_a)).cast(self.work);
        // The block rows still to do of the identity being reduced; `None` while it is untouched.
        let mut rest: Option<Tensor<C, 2>> = None;
        for p in &self.panels {
            let (w, end) = (p.end - p.start, p.end);
            // An untouched identity's first block row is `[I_w, 0]`: its product is `L_00⁻¹` itself.
            let y = match &rest {
                None => p.inv.clone(),
                Some(r) => self.mm(p.inv.clone(), r.clone().slice([0..w, 0..end])),
            };
            let sums = column_sums(y.clone().square());
            diag = diag.clone().slice_assign(0..end, diag.slice(0..end) + sums);
            if let Some(l21) = &p.below {
                let r = rest
                    .take()
                    .unwrap_or_else(|| plus_diagonal(Tensor::zeros([n, n], like(&y)), 1.0));
                let rows = r.dims()[0];
                let head = r.clone().slice([w..rows, 0..end]) - self.mm(l21.clone(), y);
                rest = Some(Tensor::cat(vec![head, r.slice([w..rows, end..n])], 1));
            }
        }
        diag.cast(like_a.dtype())
    }
}

/// `L⁻¹` of the Cholesky factor of the diagonal block `a` (`[b, b]`, rows from `start`), computed on the host in
/// f64 and returned with `a`'s device and float type.
async fn inverse_factor<C: Backend>(a: Tensor<C, 2>, start: usize) -> Result<Tensor<C, 2>> {
    let b = a.dims()[0];
    let opts = like(&a);
    let v = to_vec_f64(a).await?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "the calibration Gram matrix holds {} at row {} (non-finite statistics: check the weights and the ridge)",
            v[i],
            start + i / b
        )));
    }
    let llt = MatRef::from_row_major_slice(&v, b, b)
        .llt(Side::Lower)
        .map_err(|e| {
            Error::Invalid(format!(
                "the calibration Gram matrix is not positive definite near row {start} ({e:?}); raise the ridge"
            ))
        })?;
    // Written through a transposed view, the column-major result holds L⁻¹ row by row.
    let mut inv_t = Mat::<f64>::zeros(b, b);
    invert_lower_triangular(
        inv_t.as_mut().transpose_mut(),
        llt.L(),
        get_global_parallelism(),
    );
    let flat: Vec<f64> = (0..b)
        .flat_map(|j| inv_t.col_as_slice(j))
        .copied()
        .collect();
    Ok(Tensor::from_data(
        burn::tensor::TensorData::new(flat, [b, b]),
        opts,
    ))
}
