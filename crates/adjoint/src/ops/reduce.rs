//! Reductions over axes, with or without keeping the reduced axes: sum, mean, max (the
//! gradient routed to the first argmax, recorded in the forward pass).

use ndarray::{Array2, ArrayD, Axis, IxDyn};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::ops::kernel::{lit, threads_for, PARALLEL_MIN};
use crate::tensor::shape::Axes;
use crate::tensor::{Data, Element, Tensor};

/// The shape with each reduced axis set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
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
        [Some(g.broadcast_to(&self.from))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let axes: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        t[0].as_ref().map(|t| t.sum(&axes, self.keepdims))
    }
}

struct Max<T: Element> {
    from: Vec<usize>,
    axes: Vec<usize>,
    keepdims: bool,
    /// Over the reduced axes: 1/k at each of the k maximal elements (ties share evenly, as
    /// PyTorch's `amax` and JAX's `max` do), 0 elsewhere.
    share: Tensor<T>,
}
impl<T: Element> Primitive<T> for Max<T> {
    fn name(&self) -> &'static str {
        "amax"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let g = if self.keepdims { g.clone() } else { g.reshape(&kept_shape(&self.from, &self.axes)) };
        [Some(g.broadcast_to(&self.from) * &self.share)].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let axes: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        t[0].as_ref().map(|t| (t * &self.share).sum(&axes, self.keepdims))
    }
}

struct Prod {
    from: Vec<usize>,
    axes: Vec<usize>,
    keepdims: bool,
}
impl<T: Element> Primitive<T> for Prod {
    fn name(&self) -> &'static str {
        "prod"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(self.expand(g) * self.others(&x[0], out))].into()
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let axes: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        t[0].as_ref().map(|t| (t * &self.others(&x[0], out)).sum(&axes, self.keepdims))
    }
}
impl Prod {
    /// A value of the reduced shape broadcast back over the reduced axes.
    fn expand<T: Element>(&self, v: &Tensor<T>) -> Tensor<T> {
        let v = if self.keepdims { v.clone() } else { v.reshape(&kept_shape(&self.from, &self.axes)) };
        v.broadcast_to(&self.from)
    }
    /// ∂prod/∂xᵢ = the product of the other elements of xᵢ's group: prod/xᵢ where no element
    /// is 0 (differentiable again); otherwise per group from its count of zeros.
    fn others<T: Element>(&self, x: &Tensor<T>, out: &Tensor<T>) -> Tensor<T> {
        if x.view().iter().all(|&v| v != T::zero()) {
            return self.expand(out) / x;
        }
        let groups = Groups::new(&self.from, &self.axes);
        let mut rows = groups.rows(&x.view());
        for mut row in rows.outer_iter_mut() {
            let zeros = row.iter().filter(|&&v| v == T::zero()).count();
            let rest = row.iter().filter(|&&v| v != T::zero()).fold(T::one(), |p, &v| p * v);
            row.mapv_inplace(|v| match (zeros, v == T::zero()) {
                (0, _) => rest / v,
                (1, true) => rest,
                _ => T::zero(),
            });
        }
        Tensor::from_array(groups.unrows(rows))
    }
}

/// The sum of `view` over `axes` (in increasing order), reduced axes kept with length 1 if
/// `keepdims`: the value of [`Tensor::sum`] and [`Tensor::sum_to`], always row-major (so
/// that it can be reshaped).
pub(crate) fn sum_array<T: Element>(view: &ndarray::ArrayViewD<'_, T>, axes: &[usize], keepdims: bool) -> ArrayD<T> {
    let leading = axes.iter().enumerate().all(|(i, &a)| i == a) && axes.len() < view.ndim();
    match view.as_slice() {
        // A bias gradient: Σ over the batch axis of a contiguous array.
        Some(values) if leading && !axes.is_empty() => {
            let kept = &view.shape()[axes.len()..];
            let sums = sum_rows(values, kept.iter().product());
            let shape = if keepdims { kept_shape(view.shape(), axes) } else { kept.to_vec() };
            ArrayD::from_shape_vec(IxDyn(&shape), sums).expect("kept shape")
        }
        _ => {
            let mut a: Option<ArrayD<T>> = None;
            for &ax in axes.iter().rev() {
                let next = match &a {
                    Some(a) => a.sum_axis(Axis(ax)),
                    None => view.sum_axis(Axis(ax)),
                };
                a = Some(if keepdims { next.insert_axis(Axis(ax)) } else { next });
            }
            match a {
                // `sum_axis` keeps the input's layout, which may be column-major.
                Some(a) if a.is_standard_layout() => a,
                Some(a) => crate::tensor::pool::standard_copy(&a.view()),
                None => crate::tensor::pool::standard_copy(view),
            }
        }
    }
}

/// The sum of the rows of a row-major `[values.len() / cols, cols]` matrix, added in row
/// order, so that the result does not depend on the thread count; the columns are
/// split across threads. (ndarray's `sum_axis` took 45 µs for the lecture net's 500×100
/// bias gradient, adding rows as views.)
fn sum_rows<T: Element>(values: &[T], cols: usize) -> Vec<T> {
    if cols == 0 {
        return Vec::new();
    }
    // Starting from the first row rather than from 0 keeps the sign of a sum of −0s, as
    // NumPy and PyTorch do (0 + x = x for every other x).
    let mut out = match values.get(..cols) {
        Some(first) => {
            let mut out = crate::tensor::pool::vec_for(cols);
            out.extend_from_slice(first);
            out
        }
        None => crate::tensor::pool::zeros(cols),
    };
    let add_columns = |start: usize, out: &mut [T]| {
        let width = out.len();
        for row in values.chunks_exact(cols).skip(1) {
            for (o, &v) in out.iter_mut().zip(&row[start..start + width]) {
                *o += v;
            }
        }
    };
    let threads = threads_for(values.len(), PARALLEL_MIN);
    // Column blocks of at least 16 values, so that threads do not share cache lines much.
    let block = cols.div_ceil(threads).max(16);
    if threads > 1 && cols > block {
        crate::ops::kernel::for_each_run(&mut out, block, threads, |i, out| add_columns(i * block, out));
    } else {
        add_columns(0, &mut out);
    }
    out
}

/// A tensor seen as rows, one per group of elements a reduction over `axes` combines.
struct Groups {
    shape: Vec<usize>,
    /// The kept axes, then the reduced ones.
    order: Vec<usize>,
    reduced: usize,
}

impl Groups {
    fn new(shape: &[usize], axes: &[usize]) -> Self {
        let mut order: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
        order.extend(axes);
        Groups { shape: shape.to_vec(), order, reduced: axes.len() }
    }

    /// The shape without the reduced axes.
    fn reduced_shape(&self) -> Vec<usize> {
        self.order[..self.order.len() - self.reduced].iter().map(|&a| self.shape[a]).collect()
    }

    fn rows<T: Element>(&self, x: &ndarray::ArrayViewD<'_, T>) -> Array2<T> {
        let group: usize = self.order[self.order.len() - self.reduced..].iter().map(|&a| self.shape[a]).product();
        let count = self.shape.iter().product::<usize>() / group.max(1);
        let moved = x.clone().permuted_axes(IxDyn(&self.order));
        crate::tensor::pool::standard_copy(&moved).into_shape_with_order((count, group)).expect("contiguous")
    }

    fn unrows<T: Element>(&self, rows: Array2<T>) -> ArrayD<T> {
        let moved: Vec<usize> = self.order.iter().map(|&a| self.shape[a]).collect();
        let a = rows.into_shape_with_order(IxDyn(&moved)).expect("same size");
        let mut inverse = vec![0; self.order.len()];
        for (i, &ax) in self.order.iter().enumerate() {
            inverse[ax] = i;
        }
        crate::tensor::pool::standard_copy(&a.view().permuted_axes(IxDyn(&inverse)))
    }
}

impl<T: Element> Tensor<T> {
    /// The sum over `axes` (negative counts from the end); reduced axes are kept with
    /// length 1 if `keepdims`.
    pub fn sum<A: Axes + ?Sized>(&self, axes: &A, keepdims: bool) -> Tensor<T> {
        let axes = axes.resolve("sum", self.ndim());
        let a = sum_array(&self.view(), &axes, keepdims);
        record_rule(Sum { from: self.shape().to_vec(), axes, keepdims }, &[self], Data::from_array(a))
    }

    /// The sum of all elements, as a scalar.
    pub fn sum_all(&self) -> Tensor<T> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.sum(&axes, false)
    }

    /// The mean over `axes`.
    pub fn mean<A: Axes + ?Sized>(&self, axes: &A, keepdims: bool) -> Tensor<T> {
        let count: usize = axes.resolve("mean", self.ndim()).iter().map(|&a| self.shape()[a]).product();
        self.sum(axes, keepdims) * lit::<T>(1.0 / count as f64)
    }

    /// The mean of all elements, as a scalar.
    pub fn mean_all(&self) -> Tensor<T> {
        self.sum_all() * lit::<T>(1.0 / self.len().max(1) as f64)
    }

    /// The maximum along `axis`; see [`Tensor::amax`].
    ///
    /// # Panics
    /// If the axis is out of range or empty.
    #[track_caller]
    pub fn max(&self, axis: isize, keepdims: bool) -> Tensor<T> {
        self.amax(&[axis][..], keepdims)
    }

    /// The maximum over `axes` (negative counts from the end). NaN propagates; the gradient
    /// is shared evenly between tied maxima, as in PyTorch's `amax` and JAX.
    ///
    /// # Panics
    /// If an axis is out of range or a reduced axis is empty.
    #[track_caller]
    pub fn amax<A: Axes + ?Sized>(&self, axes: &A, keepdims: bool) -> Tensor<T> {
        let axes = axes.resolve("amax", self.ndim());
        for &a in &axes {
            assert!(self.shape()[a] > 0, "amax: axis {a} of shape {:?} is empty", self.shape());
        }
        let kept = kept_shape(self.shape(), &axes);
        let groups = Groups::new(self.shape(), &axes);
        let rows = groups.rows(&self.view());
        let mut best = Vec::with_capacity(rows.nrows());
        let mut share = Array2::<T>::zeros(rows.raw_dim());
        for (row, mut share) in rows.outer_iter().zip(share.outer_iter_mut()) {
            let top = if row.iter().any(|v| v.is_nan()) {
                T::nan()
            } else {
                row.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
            };
            let is_top = |v: T| v == top || (v.is_nan() && top.is_nan());
            let part = T::one() / T::from_f64_lossy(row.iter().filter(|&&v| is_top(v)).count().max(1) as f64);
            for (s, &v) in share.iter_mut().zip(row.iter()) {
                if is_top(v) {
                    *s = part;
                }
            }
            best.push(top);
        }
        let out = ArrayD::from_shape_vec(IxDyn(&kept), best).expect("one maximum per group");
        let out =
            if keepdims { out } else { out.into_shape_with_order(IxDyn(&groups.reduced_shape())).expect("same size") };
        let rule = Max { from: self.shape().to_vec(), axes, keepdims, share: Tensor::from_array(groups.unrows(share)) };
        record_rule(rule, &[self], Data::from_array(out))
    }

    /// The largest element, as a scalar (NaN if any element is NaN).
    #[track_caller]
    pub fn max_all(&self) -> Tensor<T> {
        let axes: Vec<isize> = (0..self.ndim() as isize).collect();
        self.amax(&axes, false)
    }

    /// The product over `axes`; the gradient is the product of the other elements (exact where
    /// elements are 0 too).
    ///
    /// # Panics
    /// If an axis is out of range.
    #[track_caller]
    pub fn prod<A: Axes + ?Sized>(&self, axes: &A, keepdims: bool) -> Tensor<T> {
        let axes = axes.resolve("prod", self.ndim());
        let mut a: ArrayD<T> = self.view().to_owned();
        for &ax in axes.iter().rev() {
            a = a.map_axis(Axis(ax), |lane| lane.iter().fold(T::one(), |p, &v| p * v));
            if keepdims {
                a = a.insert_axis(Axis(ax));
            }
        }
        record_rule(Prod { from: self.shape().to_vec(), axes, keepdims }, &[self], Data::from_array(a))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_to_of_a_column_major_view_is_reshaped_not_refused() {
        // A slice to length 1 then a permute makes a column-major view ([1, 3, 4] with
        // strides [0, 1, 3]); summing its first axis kept that layout, which a reshape refused
        // (found by an outside review).
        let x = Tensor::<f64>::from_vec((0..60).map(f64::from).collect(), &[5, 4, 3]);
        let v = x.narrow(0, 2, 1).permute(&[0, 2, 1]);
        let s = v.sum_to(&[3, 4]);
        let expected: Vec<f64> = (0..3).flat_map(|c| (0..4).map(move |r| (24 + r * 3 + c) as f64)).collect();
        assert_eq!(s.to_vec(), expected);
        assert_eq!(v.sum(&[0], false).to_vec(), expected);
    }

    /// Σ over `axes` by its definition, in f64.
    fn naive(x: &ArrayD<f64>, axes: &[usize]) -> ArrayD<f64> {
        let kept: Vec<usize> = kept_shape(x.shape(), axes);
        let mut out = ArrayD::<f64>::zeros(IxDyn(&kept));
        for (ix, &v) in x.indexed_iter() {
            let mut at = ndarray::Dimension::slice(&ix).to_vec();
            axes.iter().for_each(|&a| at[a] = 0);
            out[IxDyn(&at)] += v;
        }
        out
    }

    #[test]
    fn sums_over_leading_axes_equal_the_definition_on_any_thread_count() {
        // 600 × 70 × 3 values: leading-axis sums of contiguous arrays take the row loop, split
        // across threads on a 2-thread pool; a transposed view and inner axes the general path.
        let x = ArrayD::from_shape_fn(IxDyn(&[600, 70, 3]), |i| ((i[0] * 31 + i[1] * 7 + i[2]) % 17) as f64 - 8.0);
        let t = Tensor::from_array(x.clone());
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                for axes in [vec![0], vec![0, 1], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
                    let expected = naive(&x, &axes);
                    let got = t.sum(&axes, true).to_array();
                    assert_eq!(got, expected, "axes {axes:?} on {threads} threads");
                    let dropped: Vec<usize> = (0..3).filter(|a| !axes.contains(a)).map(|a| x.shape()[a]).collect();
                    let got = t.sum(&axes, false).to_array();
                    assert_eq!(got, expected.into_shape_with_order(IxDyn(&dropped)).unwrap(), "axes {axes:?}");
                }
                let transposed = t.permute(&[2, 1, 0]);
                let expected = naive(&x, &[2]).permuted_axes(IxDyn(&[2, 1, 0]));
                assert_eq!(transposed.sum(&[0], true).to_array(), expected);
            });
        }
        // A column of −0 sums to −0 (as in NumPy and PyTorch); an empty one to +0.
        let negative_zeros = Tensor::<f32>::from_vec(vec![-0.0; 6], &[3, 2]).sum(&[0], false).to_vec();
        assert!(negative_zeros.iter().all(|v| *v == 0.0 && v.is_sign_negative()));
        // Empty axes: sums of nothing are 0, and the kept lengths stay.
        for (shape, axes, kept) in [
            (vec![0, 5], vec![0], vec![5]),
            (vec![5, 0], vec![0], vec![0]),
            (vec![3, 0, 4], vec![0, 1], vec![4]),
            (vec![0, 0], vec![0], vec![0]),
        ] {
            let z = Tensor::<f64>::zeros(&shape).sum(&axes, false);
            assert_eq!(z.shape(), kept.as_slice());
            assert!(z.to_vec().iter().all(|&v| v == 0.0));
        }
        // The f32 result does not depend on the thread count.
        let single = Tensor::from_array(x.mapv(|v| v as f32 * 0.37));
        let sums: Vec<Vec<f32>> = [1, 2]
            .iter()
            .map(|&n| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
                pool.install(|| single.sum(&[0], false).to_vec())
            })
            .collect();
        assert_eq!(sums[0], sums[1]);
    }
}
