//! softmax, log_softmax and logsumexp along an axis, computed after subtracting the maximum
//! so that they stay finite for logits of ±1e4.

use ndarray::{ArrayD, Axis, Zip};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::tensor::shape::normalize_axis;
use crate::tensor::{Data, Element, Tensor};

/// The largest of `values`; −∞ for none, and NaN is never larger (a fold with `>`).
pub(crate) fn max_of<'a, T: Element>(values: impl IntoIterator<Item = &'a T>) -> T {
    values.into_iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// Per lane along `axis` (kept as a length-1 axis): the maximum m and log Σ exp(x − m).
/// Every result is formed from x − m, so huge logits (1e30) keep their differences.
fn shifted_log_sum<T: Element>(x: &Tensor<T>, axis: usize) -> (ArrayD<T>, ArrayD<T>) {
    let view = x.view();
    let m = view.map_axis(Axis(axis), |lane| max_of(lane));
    let m = m.insert_axis(Axis(axis));
    let log_sum = Zip::from(view.lanes(Axis(axis)))
        .and(m.lanes(Axis(axis)))
        .map_collect(|lane, top| {
            let top = top[0];
            lane.fold(T::zero(), |s, &v| s + (v - top).exp()).ln()
        })
        .insert_axis(Axis(axis));
    (m, log_sum)
}

/// `f(x, m, log_sum)` per element, `m` and `log_sum` broadcast along the reduced axis, into
/// a buffer from the pool.
fn shifted_map<T: Element>(x: &Tensor<T>, m: &ArrayD<T>, log_sum: &ArrayD<T>, f: impl Fn(T, T, T) -> T) -> ArrayD<T> {
    let mut out = crate::tensor::pool::array_uninit::<T>(x.shape());
    Zip::from(&mut out).and(&x.view()).and_broadcast(m).and_broadcast(log_sum).for_each(|o, &x, &m, &l| {
        o.write(f(x, m, l));
    });
    // SAFETY: the zip wrote every element.
    unsafe { out.assume_init() }
}

/// log Σ exp along `axis`, kept as a length-1 axis; ±∞ where the maximum is infinite.
fn logsumexp_kept<T: Element>(x: &Tensor<T>, axis: usize) -> ArrayD<T> {
    let (m, log_sum) = shifted_log_sum(x, axis);
    Zip::from(&m).and(&log_sum).map_collect(|&m, &l| if m.is_infinite() { m } else { m + l })
}

struct LogSumExp {
    axis: usize,
    keepdims: bool,
}
impl<T: Element> Primitive<T> for LogSumExp {
    fn name(&self) -> &'static str {
        "logsumexp"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (out, g) = self.kept(out, g);
        [Some(g * (&x[0] - out).exp())].into()
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (out, _) = self.kept(out, out);
        let p = (&x[0] - out).exp();
        t[0].as_ref().map(|t| (t * &p).sum(&[self.axis as isize], self.keepdims))
    }
}
impl LogSumExp {
    fn kept<T: Element>(&self, out: &Tensor<T>, g: &Tensor<T>) -> (Tensor<T>, Tensor<T>) {
        if self.keepdims {
            (out.clone(), g.clone())
        } else {
            let mut shape = out.shape().to_vec();
            shape.insert(self.axis, 1);
            (out.reshape(&shape), g.reshape(&shape))
        }
    }
}

struct Softmax {
    axis: isize,
}
impl<T: Element> Primitive<T> for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn vjp(&self, _: &[Tensor<T>], y: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        // J = diag(y) − y yᵀ per row, applied without building it: y ⊙ (g − ⟨g, y⟩).
        [Some(y * &(g - (g * y).sum(&[self.axis], true)))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], y: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| y * &(t - (t * y).sum(&[self.axis], true)))
    }
}

struct LogSoftmax {
    axis: isize,
}
impl<T: Element> Primitive<T> for LogSoftmax {
    fn name(&self) -> &'static str {
        "log_softmax"
    }
    fn vjp(&self, _: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g - out.exp() * g.sum(&[self.axis], true))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t - (out.exp() * t).sum(&[self.axis], true))
    }
}

impl<T: Element> Tensor<T> {
    /// log Σ exp(x) along `axis`, stable for large |x|.
    #[track_caller]
    pub fn logsumexp(&self, axis: isize, keepdims: bool) -> Tensor<T> {
        if self.ndim() == 0 {
            // A 0-d tensor is a single element along its one implicit axis (as PyTorch).
            return self.reshape(&[1]).logsumexp(axis, false);
        }
        let ax = normalize_axis("logsumexp", axis, self.ndim());
        let kept = logsumexp_kept(self, ax);
        let out = if keepdims { kept } else { kept.remove_axis(Axis(ax)) };
        record_rule(LogSumExp { axis: ax, keepdims }, &[self], Data::from_array(out))
    }

    /// exp(x) / Σ exp(x) along `axis`.
    ///
    /// A row of −∞ has no softmax: it gives NaN, as in PyTorch and JAX.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor<T> {
        if self.ndim() == 0 {
            return self.reshape(&[1]).softmax(axis).reshape(crate::tensor::shape::SCALAR);
        }
        let ax = normalize_axis("softmax", axis, self.ndim());
        let (m, log_sum) = shifted_log_sum(self, ax);
        let out = shifted_map(self, &m, &log_sum, |x, m, l| ((x - m) - l).exp_fast());
        record_rule(Softmax { axis: ax as isize }, &[self], Data::from_array(out))
    }

    /// x − log Σ exp(x) along `axis`: log-probabilities, finite for logits of ±1e4.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor<T> {
        if self.ndim() == 0 {
            return self.reshape(&[1]).log_softmax(axis).reshape(crate::tensor::shape::SCALAR);
        }
        let ax = normalize_axis("log_softmax", axis, self.ndim());
        let (m, log_sum) = shifted_log_sum(self, ax);
        let out = shifted_map(self, &m, &log_sum, |x, m, l| (x - m) - l);
        record_rule(LogSoftmax { axis: ax as isize }, &[self], Data::from_array(out))
    }
}
