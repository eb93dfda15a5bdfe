//! Elementwise kernels shared by the primitives: a scalar fast path (no allocation), a
//! same-shape path, and NumPy broadcasting. Large arrays are split across rayon's threads.

use ndarray::{ArrayD, IxDyn, Zip};

use crate::autodiff::graph::parallel;
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{Data, Element, Tensor};

/// Elements below which splitting work across threads costs more than it saves.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// How much more work a kernel needs before it is split when it is called from a thread
/// outside rayon's pool (a user's `main`): the pool's threads then do the work while the
/// caller sleeps, and handing it over and waking the caller again costs tens of µs, which
/// only work of some 100 µs repays. Measured from `main`, 2 threads: the lecture step
/// (kernels of 50,000 elements, no longer split there) 1.33–1.51 → 1.25–1.30 ms; a
/// 20-64-64-4 network on batches of 4000 (kernels of 256,000 elements, still split) 4.1–4.3
/// ms per step, against 6.7–7.3 ms with a factor of 16.
const OFF_POOL_FACTOR: usize = 4;

/// The threads a kernel of `work` units should be split over: all of the pool's from `min`
/// units on (4 × `min` when called from outside the pool), else 1. One thread never splits
/// (handing work to a one-thread pool only adds the hand-over: 2.29–2.32 → 2.11–2.16 ms per
/// lecture step from `main`).
pub(crate) fn threads_for(work: usize, min: usize) -> usize {
    // Small work is decided before asking rayon anything: asking starts the global pool.
    if work < min {
        return 1;
    }
    let min = if rayon::current_thread_index().is_some() { min } else { min.saturating_mul(OFF_POOL_FACTOR) };
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= min {
        threads
    } else {
        1
    }
}

/// `f` applied to every element.
pub(crate) fn map<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) -> Data<T> {
    match &x.data {
        Data::Scalar(v) => Data::Scalar(f(*v)),
        Data::Array(a) => {
            if threads_for(a.len(), PARALLEL_MIN) > 1 {
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
    if threads_for(len, PARALLEL_MIN) > 1 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_split_on_the_pool_from_the_threshold_and_off_it_only_when_much_larger() {
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        two.install(|| {
            assert_eq!(threads_for(PARALLEL_MIN - 1, PARALLEL_MIN), 1);
            assert_eq!(threads_for(PARALLEL_MIN, PARALLEL_MIN), 2);
        });
        // One thread never splits, however large the work.
        one.install(|| assert_eq!(threads_for(usize::MAX, PARALLEL_MIN), 1));
        // A thread outside any pool (as a user's `main`) splits only much larger work.
        std::thread::spawn(|| {
            let global = rayon::current_num_threads();
            assert_eq!(threads_for(PARALLEL_MIN, PARALLEL_MIN), 1);
            let big = threads_for(PARALLEL_MIN * OFF_POOL_FACTOR, PARALLEL_MIN);
            assert_eq!(big, if global > 1 { global } else { 1 });
        })
        .join()
        .unwrap();
    }
}
