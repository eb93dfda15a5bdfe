//! Elementwise kernels shared by the primitives: a scalar fast path (no allocation), a
//! same-shape path, and NumPy broadcasting. Large arrays are split across rayon's threads.

use ndarray::{ArrayD, IxDyn, Zip};

use crate::autodiff::graph::parallel;
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{Data, Element, Tensor};

/// Elements below which splitting work across threads costs more than it saves.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// `f` applied to every element.
pub(crate) fn map<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) -> Data<T> {
    match &x.data {
        Data::Scalar(v) => Data::Scalar(f(*v)),
        Data::Array(a) => {
            if a.len() >= PARALLEL_MIN {
                Data::from_array(parallel(|| Zip::from(a.view()).par_map_collect(|&v| f(v))))
            } else {
                Data::from_array(a.mapv(f))
            }
        }
    }
}

/// `f` applied elementwise to `a` and `b`, broadcast together.
///
/// # Panics
/// If the shapes cannot be broadcast; `op` names the operation.
pub(crate) fn zip<T: Element>(op: &str, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T + Sync + Send) -> Data<T> {
    match (&a.data, &b.data) {
        (Data::Scalar(x), Data::Scalar(y)) => Data::Scalar(f(*x, *y)),
        (Data::Array(_), Data::Scalar(y)) => map(a, |v| f(v, *y)),
        (Data::Scalar(x), Data::Array(_)) => map(b, |v| f(*x, v)),
        (Data::Array(x), Data::Array(y)) => {
            let out: ArrayD<T> = if x.shape() == y.shape() {
                collect2(Zip::from(x.view()).and(y.view()), x.len(), &f)
            } else {
                let shape = broadcast_shapes(x.shape(), y.shape()).unwrap_or_else(|| {
                    panic!("{op}: shapes {:?} and {:?} cannot be broadcast together", x.shape(), y.shape())
                });
                let xv = x.broadcast(IxDyn(&shape)).expect("checked broadcast");
                let yv = y.broadcast(IxDyn(&shape)).expect("checked broadcast");
                collect2(Zip::from(&xv).and(&yv), shape.iter().product(), &f)
            };
            Data::from_array(out)
        }
    }
}

fn collect2<'a, T: Element>(
    z: Zip<(ndarray::ArrayViewD<'a, T>, ndarray::ArrayViewD<'a, T>), IxDyn>,
    len: usize,
    f: &(impl Fn(T, T) -> T + Sync + Send),
) -> ArrayD<T> {
    if len >= PARALLEL_MIN {
        parallel(|| z.par_map_collect(|&x, &y| f(x, y)))
    } else {
        z.map_collect(|&x, &y| f(x, y))
    }
}

/// Converts a literal to the element type.
pub(crate) fn lit<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

/// A constant scalar tensor.
pub(crate) fn c<T: Element>(x: f64) -> Tensor<T> {
    Tensor::scalar(lit(x))
}

/// Whether a recorded input wants a cotangent (constants do not).
pub(crate) fn wants<T: Element>(t: &Tensor<T>) -> bool {
    t.node.is_some()
}
