//! The split product as one autodiff operation. Composed of burn's own operations, its backward would form
//! `G·bᵀ` and `aᵀ·G` with the output gradient `G` handed to the matmul whole, so rounded to TF32; here both
//! backward products are split products too, and the gradients keep the forward's precision.
//!
//! burn's model code is generic over `Backend`, so the operation is reached by recognising the backend at run
//! time: `Autodiff<Cuda>` (where the matmul rounds) and `Autodiff<Cpu>` (where tests emulate TF32, so the
//! operation is exercised and checked on every machine).

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use super::{split_product, F32Matmul};

/// `a · b` as a split product with split-product gradients when `B` is an autodiff backend this file knows;
/// the operands back, untouched, otherwise.
#[allow(clippy::type_complexity)]
pub(super) fn product<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    matmul: F32Matmul,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    let (a, b) = match on::<B, crate::backend::Cpu, D>(a, b, matmul, on_cpu) {
        Ok(product) => return Ok(product),
        Err(operands) => operands,
    };
    #[cfg(feature = "cuda")]
    let (a, b) = match on::<B, crate::backend::Cuda, D>(a, b, matmul, on_cuda) {
        Ok(product) => return Ok(product),
        Err(operands) => operands,
    };
    Err((a, b))
}

/// The operation on `Autodiff<C>` for operands of rank 2, 3 or 4 (given at run time).
type Apply<C> = fn(
    FloatTensor<Autodiff<C>>,
    FloatTensor<Autodiff<C>>,
    usize,
    F32Matmul,
) -> FloatTensor<Autodiff<C>>;

/// The operation when `B` is `Autodiff<C>`, the rank is 2 to 4 and the batch dimensions are equal (its gradients
/// do not reduce broadcast ones; burn's own operations do, so broadcast products are left to them).
#[allow(clippy::type_complexity)]
fn on<B: Backend, C: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    matmul: F32Matmul,
    apply: Apply<C>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    let batch = D.saturating_sub(2);
    if TypeId::of::<B>() != TypeId::of::<Autodiff<C>>()
        || !(2..=4).contains(&D)
        || a.dims()[..batch] != b.dims()[..batch]
    {
        return Err((a, b));
    }
    let (a, b) = (
        retype::<_, FloatTensor<Autodiff<C>>>(a.into_primitive().tensor()),
        retype::<_, FloatTensor<Autodiff<C>>>(b.into_primitive().tensor()),
    );
    let product = apply(a, b, D, matmul);
    Ok(Tensor::from_primitive(TensorPrimitive::Float(retype(
        product,
    ))))
}

/// [`Apply`] for burn's CPU backend. Not generic, so the autodiff operation is compiled once, here, and not
/// again in every crate whose generic code multiplies matrices.
fn on_cpu(
    a: FloatTensor<Autodiff<crate::backend::Cpu>>,
    b: FloatTensor<Autodiff<crate::backend::Cpu>>,
    rank: usize,
    matmul: F32Matmul,
) -> FloatTensor<Autodiff<crate::backend::Cpu>> {
    of_rank(a, b, rank, matmul)
}

/// [`Apply`] for CUDA (see [`on_cpu`]).
#[cfg(feature = "cuda")]
fn on_cuda(
    a: FloatTensor<Autodiff<crate::backend::Cuda>>,
    b: FloatTensor<Autodiff<crate::backend::Cuda>>,
    rank: usize,
    matmul: F32Matmul,
) -> FloatTensor<Autodiff<crate::backend::Cuda>> {
    of_rank(a, b, rank, matmul)
}

/// The operation for operands of `rank` 2, 3 or 4.
fn of_rank<C: Backend>(
    a: FloatTensor<Autodiff<C>>,
    b: FloatTensor<Autodiff<C>>,
    rank: usize,
    matmul: F32Matmul,
) -> FloatTensor<Autodiff<C>> {
    match rank {
        2 => SplitMatmul::<2>::apply::<C>(a, b, matmul),
        3 => SplitMatmul::<3>::apply::<C>(a, b, matmul),
        4 => SplitMatmul::<4>::apply::<C>(a, b, matmul),
        _ => unreachable!("`on` passes ranks 2 to 4 only"),
    }
}

/// `t` as the type it is (`From` and `To` are one type; the caller checked).
fn retype<From: 'static, To: 'static>(t: From) -> To {
    *(Box::new(t) as Box<dyn Any>)
        .downcast::<To>()
        .unwrap_or_else(|_| unreachable!("the backend's type was checked"))
}

/// `[.., m, k] · [.., k, n]` of rank `D`, split in the forward and in both gradients.
#[derive(Debug)]
struct SplitMatmul<const D: usize>;

impl<const D: usize> SplitMatmul<D> {
    fn apply<C: Backend>(
        lhs: FloatTensor<Autodiff<C>>,
        rhs: FloatTensor<Autodiff<C>>,
        matmul: F32Matmul,
    ) -> FloatTensor<Autodiff<C>> {
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        let forward = |lhs: FloatTensor<C>, rhs: FloatTensor<C>| {
            split_product::<C, D>(float(lhs), float(rhs), matmul)
                .into_primitive()
                .tensor()
        };
        match SplitMatmul::<D>
            .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // Each gradient needs the other operand.
                let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
                prep.finish(
                    (lhs_state, rhs_state, matmul),
                    forward(lhs.primitive, rhs.primitive),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(lhs.primitive, rhs.primitive)),
        }
    }
}

impl<C: Backend, const D: usize> Backward<C, 2> for SplitMatmul<D> {
    type State = (Option<NodeId>, Option<NodeId>, F32Matmul);

    /// `∂a = G·bᵀ`, `∂b = aᵀ·G`, both split products.
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let (lhs, rhs, matmul) = ops.state;
        let lhs = lhs.map(|id| float::<C, D>(cp.retrieve_node_output(id)));
        let rhs = rhs.map(|id| float::<C, D>(cp.retrieve_node_output(id)));
        let other =
            |t: Option<Tensor<C, D>>| t.expect("checkpointed when the other side is tracked");
        binary::<C, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                split_product(float::<C, D>(grad), other(rhs).transpose(), matmul)
                    .into_primitive()
                    .tensor()
            },
            |grad| {
                split_product(other(lhs).transpose(), float::<C, D>(grad), matmul)
                    .into_primitive()
                    .tensor()
            },
        );
    }
}

/// A float primitive as a rank-`D` tensor.
fn float<C: Backend, const D: usize>(t: FloatTensor<C>) -> Tensor<C, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}
