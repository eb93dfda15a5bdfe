//! Elementwise kernels shared by the primitives: a scalar fast path (no allocation), a
//! same-shape path, and NumPy broadcasting. Large arrays are split across rayon's threads.

use ndarray::{ArrayD, IxDyn, Zip};

use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{Data, Element, Tensor};

/// Elements below which splitting work across threads costs more than it saves.
const PARALLEL_MIN: usize = 1 << 15;

/// `f` applied to every element.
pub(crate) fn map<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) -> Data<T> {
    match &x.data {
        Data::Scalar(v) => Data::Scalar(f(*v)),
        Data::Array(a) => {
            if a.len() >= PARALLEL_MIN {
                Data::from_array(Zip::from(a.view()).par_map_collect(|&v| f(v)))
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
        z.par_map_collect(|&x, &y| f(x, y))
    } else {
        z.map_collect(|&x, &y| f(x, y))
    }
}

/// A constant tensor of `shape` holding 1 where `pred` holds for `x`, else 0.
pub(crate) fn indicator<T: Element>(x: &Tensor<T>, pred: impl Fn(T) -> bool + Sync + Send) -> Tensor<T> {
    Tensor::constant_data(map(x, |v| if pred(v) { T::one() } else { T::zero() }))
}

/// Converts a literal to the element type.
pub(crate) fn lit<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

/// A constant tensor holding the sign of each element (0 at 0).
pub(crate) fn sign<T: Element>(x: &Tensor<T>) -> Tensor<T> {
    Tensor::constant_data(map(x, |v| {
        if v > T::zero() {
            T::one()
        } else if v < T::zero() {
            -T::one()
        } else {
            T::zero()
        }
    }))
}

/// A constant tensor holding `yes` where `pred` holds for `x`, else `no`.
pub(crate) fn select_scalar<T: Element>(
    x: &Tensor<T>,
    pred: impl Fn(T) -> bool + Sync + Send,
    yes: T,
    no: T,
) -> Tensor<T> {
    Tensor::constant_data(map(x, |v| if pred(v) { yes } else { no }))
}
