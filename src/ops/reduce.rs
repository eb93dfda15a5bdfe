//! Reductions over axes, with or without keeping the reduced axes: sum, mean, max (the
//! gradient routed to the first argmax, recorded in the forward pass).

use ndarray::{ArrayD, Axis, IxDyn};
use smallvec::smallvec;

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::ops::kernel::lit;
use crate::tensor::shape::normalize_axis;
use crate::tensor::{Data, Element, Tensor};

/// The shape with each reduced axis set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
}

fn normalize_axes(op: &str, axes: &[isize], ndim: usize) -> Vec<usize> {
    let mut out: Vec<usize> = axes.iter().map(|&a| normalize_axis(op, a, ndim)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

struct Sum {
    from: Vec<usize>,
    axes: Vec<usize>,
    keepdims: bool,
}
impl<T: Element> Primitive<T> for Sum {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let g = if self.keepdims { g.clone() } else { g.reshape(&kept_shape(&self.from, &self.axes)) };
        smallvec![Some(g.broadcast_to(&self.from))]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let axes: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        t[0].as_ref().map(|t| t.sum(&axes, self.keepdims))
    }
}

struct Max<T: Element> {
    axis: usize,
    keepdims: bool,
    /// One-hot over the reduced axis at the first maximum.
    mask: Tensor<T>,
}
impl<T: Element> Primitive<T> for Max<T> {
    fn name(&self) -> &'static str {
        "max"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let g = if self.keepdims { g.clone() } else { g.reshape(&kept_shape(self.mask.shape(), &[self.axis])) };
        smallvec![Some(g.broadcast_to(self.mask.shape()) * &self.mask)]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| (t * &self.mask).sum(&[self.axis as isize], self.keepdims))
    }
}

impl<T: Element> Tensor<T> {
    /// The sum over `axes` (negative counts from the end); reduced axes are kept with
    /// length 1 if `keepdims`.
    pub fn sum(&self, axes: &[isize], keepdims: bool) -> Tensor<T> {
        let axes = normalize_axes("sum", axes, self.ndim());
        let mut a: ArrayD<T> = self.view().to_owned();
        for &ax in axes.iter().rev() {
            a = a.sum_axis(Axis(ax));
            if keepdims {
                a = a.insert_axis(Axis(ax));
            }
        }
        record_rule(Sum { from: self.shape().to_vec(), axes, keepdims }, &[self], Data::from_array(a))
    }

    /// The sum of all elements, as a scalar.
    pub fn sum_all(&self) -> Tensor<T> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&axes, false)
    }

    /// The mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdims: bool) -> Tensor<T> {
        let count: usize = normalize_axes("mean", axes, self.ndim()).iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdims) * lit::<T>(1.0 / count as f64)
    }

    /// The mean of all elements, as a scalar.
    pub fn mean_all(&self) -> Tensor<T> {
        self.sum_all() * lit::<T>(1.0 / self.len().max(1) as f64)
    }

    /// The maximum along `axis`; the gradient goes to the first maximal element.
    ///
    /// # Panics
    /// If the axis is empty.
    pub fn max(&self, axis: isize, keepdims: bool) -> Tensor<T> {
        let ax = normalize_axis("max", axis, self.ndim());
        assert!(self.shape()[ax] > 0, "max: axis {ax} of shape {:?} is empty", self.shape());
        let view = self.view();
        let mut mask = ArrayD::<T>::zeros(IxDyn(self.shape()));
        let mut out = ArrayD::<T>::zeros(IxDyn(&kept_shape(self.shape(), &[ax])));
        for ((lane, mut mask_lane), o) in
            view.lanes(Axis(ax)).into_iter().zip(mask.lanes_mut(Axis(ax))).zip(out.iter_mut())
        {
            let (mut best, mut at) = (lane[0], 0);
            for (i, &v) in lane.iter().enumerate() {
                if v > best || (best.is_nan() && !v.is_nan()) {
                    best = v;
                    at = i;
                }
            }
            mask_lane[at] = T::one();
            *o = best;
        }
        let out = if keepdims { out } else { out.remove_axis(Axis(ax)) };
        record_rule(Max { axis: ax, keepdims, mask: Tensor::from_array(mask) }, &[self], Data::from_array(out))
    }

    /// The largest element, as a scalar.
    pub fn max_all(&self) -> Tensor<T> {
        self.reshape(&[self.len()]).max(0, false)
    }

    /// The index of the largest element along the last axis, for each row (no gradient).
    pub fn argmax_rows(&self) -> Vec<usize> {
        let v = self.view();
        let last = Axis(self.ndim().saturating_sub(1));
        v.lanes(last)
            .into_iter()
            .map(|lane| {
                let mut at = 0;
                for (i, &x) in lane.iter().enumerate() {
                    if x > lane[at] {
                        at = i;
                    }
                }
                at
            })
            .collect()
    }
}
