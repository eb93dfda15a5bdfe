//! softmax, log_softmax and logsumexp along an axis, computed after subtracting the maximum
//! so that they stay finite for logits of ±1e4.

use ndarray::{ArrayD, Axis, Zip};
use smallvec::smallvec;

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::tensor::shape::normalize_axis;
use crate::tensor::{Data, Element, Tensor};

/// log Σ exp along `axis`, kept as a length-1 axis.
fn logsumexp_kept<T: Element>(x: &Tensor<T>, axis: usize) -> ArrayD<T> {
    x.view()
        .map_axis(Axis(axis), |lane| {
            let m = lane.fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
            if m.is_infinite() {
                return m;
            }
            m + lane.fold(T::zero(), |s, &v| s + (v - m).exp()).ln()
        })
        .insert_axis(Axis(axis))
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
        smallvec![Some(g * (&x[0] - out).exp())]
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
        smallvec![Some(y * &(g - (g * y).sum(&[self.axis], true)))]
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
        smallvec![Some(g - out.exp() * g.sum(&[self.axis], true))]
    }
    fn jvp(&self, _: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t - (out.exp() * t).sum(&[self.axis], true))
    }
}

impl<T: Element> Tensor<T> {
    /// log Σ exp(x) along `axis`, stable for large |x|.
    pub fn logsumexp(&self, axis: isize, keepdims: bool) -> Tensor<T> {
        let ax = normalize_axis("logsumexp", axis, self.ndim());
        let kept = logsumexp_kept(self, ax);
        let out = if keepdims { kept } else { kept.remove_axis(Axis(ax)) };
        record_rule(LogSumExp { axis: ax, keepdims }, &[self], Data::from_array(out))
    }

    /// exp(x) / Σ exp(x) along `axis`.
    pub fn softmax(&self, axis: isize) -> Tensor<T> {
        let ax = normalize_axis("softmax", axis, self.ndim());
        let lse = logsumexp_kept(self, ax);
        let out = Zip::from(&self.view()).and_broadcast(&lse).map_collect(|&x, &l| {
            if l.is_infinite() && x == l {
                T::one()
            } else {
                (x - l).exp()
            }
        });
        record_rule(Softmax { axis: ax as isize }, &[self], Data::from_array(out))
    }

    /// x − log Σ exp(x) along `axis`: log-probabilities, finite for logits of ±1e4.
    pub fn log_softmax(&self, axis: isize) -> Tensor<T> {
        let ax = normalize_axis("log_softmax", axis, self.ndim());
        let lse = logsumexp_kept(self, ax);
        let out = Zip::from(&self.view()).and_broadcast(&lse).map_collect(|&x, &l| x - l);
        record_rule(LogSoftmax { axis: ax as isize }, &[self], Data::from_array(out))
    }
}
