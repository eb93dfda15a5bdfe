//! Operations that move or copy elements without arithmetic: reshape, permute/transpose,
//! broadcast_to and its adjoint sum_to, concat and narrow (slicing).
//!
//! Permute, reshape of contiguous data and narrow share the input's buffer (no copy).

use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::ops::kernel::wants;
use crate::tensor::shape::{broadcasts_to, normalize_axis, Axes, Dims};
use crate::tensor::{Data, Element, Tensor};

struct Reshape {
    from: Vec<usize>,
    to: Vec<usize>,
}
impl<T: Element> Primitive<T> for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.reshape(&self.from))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.reshape(&self.to))
    }
}

struct Permute {
    axes: Vec<usize>,
}
impl<T: Element> Primitive<T> for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let mut inverse = vec![0; self.axes.len()];
        for (i, &a) in self.axes.iter().enumerate() {
            inverse[a] = i;
        }
        [Some(g.permute(&inverse))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.permute(&self.axes))
    }
}

/// Broadcasting: both rules are the identity, because the sweeps reduce (reverse) and widen
/// (forward) to the right shape in one place.
struct BroadcastTo;
impl<T: Element> Primitive<T> for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.clone())].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].clone()
    }
}

struct SumTo {
    from: Vec<usize>,
    to: Vec<usize>,
}
impl<T: Element> Primitive<T> for SumTo {
    fn name(&self) -> &'static str {
        "sum_to"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.broadcast_to(&self.from))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.sum_to(&self.to))
    }
}

struct Concat {
    axis: usize,
    lengths: Vec<usize>,
}
impl<T: Element> Primitive<T> for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let mut start = 0;
        let mut out = Cotangents::new();
        for (input, &len) in x.iter().zip(&self.lengths) {
            out.push(wants(input).then(|| g.narrow(self.axis as isize, start, len)));
            start += len;
        }
        out
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let parts: Vec<Tensor<T>> =
            x.iter().zip(t).map(|(x, t)| t.clone().unwrap_or_else(|| Tensor::zeros(x.shape()))).collect();
        Some(Tensor::concat(&parts.iter().collect::<Vec<_>>(), self.axis as isize))
    }
}

/// Every `step`-th element of `start..end` along `axis`.
struct SliceOp {
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
    from: Vec<usize>,
}
impl SliceOp {
    fn range(&self) -> Slice {
        Slice::new(self.start as isize, Some(self.end as isize), self.step as isize)
    }
}
impl<T: Element> Primitive<T> for SliceOp {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.unslice(self))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.slice_with(self))
    }
}

/// The adjoint of a slice: the values placed at the sliced positions of zeros.
struct Unslice(Arc<SliceOp>);
impl<T: Element> Primitive<T> for Unslice {
    fn name(&self) -> &'static str {
        "unslice"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.slice_with(&self.0))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.unslice(&self.0))
    }
}

impl<T: Element> Tensor<T> {
    fn slice_with(&self, op: &SliceOp) -> Tensor<T> {
        let data = match &self.data {
            Data::Scalar(_) => unreachable!("a scalar has no axis"),
            Data::Array(a) => {
                let mut b = (***a).clone();
                b.slice_axis_inplace(Axis(op.axis), op.range());
                Data::from_shared(b)
            }
        };
        let rule = SliceOp { axis: op.axis, start: op.start, end: op.end, step: op.step, from: op.from.clone() };
        record_rule(rule, &[self], data)
    }

    fn unslice(&self, op: &SliceOp) -> Tensor<T> {
        let mut out = crate::tensor::pool::array_zeros::<T>(&op.from);
        out.slice_axis_mut(Axis(op.axis), op.range()).assign(&self.view());
        let rule = Unslice(Arc::new(SliceOp {
            axis: op.axis,
            start: op.start,
            end: op.end,
            step: op.step,
            from: op.from.clone(),
        }));
        record_rule(rule, &[self], Data::from_array(out))
    }
}

impl<T: Element> Tensor<T> {
    /// The same elements in another shape with as many elements (row-major order); one
    /// length may be −1 and is then inferred (`x.reshape(&[2, -1])`).
    ///
    /// # Panics
    /// If the element counts differ.
    #[track_caller]
    pub fn reshape<D: Dims + ?Sized>(&self, shape: &D) -> Tensor<T> {
        let shape = shape.lengths("reshape", self.shape());
        let shape = &shape[..];
        if shape == self.shape() {
            return self.clone();
        }
        let data = match &self.data {
            Data::Scalar(v) => Data::from_array(ArrayD::from_elem(IxDyn(shape), *v)),
            Data::Array(a) => match (***a).clone().into_shape_with_order(IxDyn(shape)) {
                Ok(b) if shape.is_empty() => Data::from_array(b.to_owned()),
                Ok(b) => Data::from_shared(b),
                Err(_) => Data::from_array(
                    crate::tensor::pool::standard_copy(&a.view())
                        .into_shape_with_order(IxDyn(shape))
                        .expect("contiguous"),
                ),
            },
        };
        record_rule(Reshape { from: self.shape().to_vec(), to: shape.to_vec() }, &[self], data)
    }

    /// The axes reordered: axis i of the result is axis `axes[i]` of `self` (negative axes
    /// count from the end).
    ///
    /// # Panics
    /// If `axes` is not a permutation of the axes.
    #[track_caller]
    pub fn permute<A: Axes + ?Sized>(&self, axes: &A) -> Tensor<T> {
        let axes = axes.in_order("permute", self.ndim());
        let mut seen = vec![false; self.ndim()];
        let ok = axes.len() == self.ndim() && axes.iter().all(|&a| !std::mem::replace(&mut seen[a], true));
        assert!(ok, "permute: {axes:?} is not a permutation of the axes of a tensor of shape {:?}", self.shape());
        let data = match &self.data {
            Data::Scalar(v) => Data::Scalar(*v),
            Data::Array(a) => Data::from_shared((***a).clone().permuted_axes(IxDyn(&axes))),
        };
        record_rule(Permute { axes }, &[self], data)
    }

    /// The last two axes swapped (the matrix transpose, batched over leading axes).
    ///
    /// # Panics
    /// If the tensor has fewer than two axes.
    pub fn transpose(&self) -> Tensor<T> {
        let n = self.ndim();
        assert!(n >= 2, "transpose: needs at least 2 axes, got shape {:?}", self.shape());
        let mut axes: Vec<usize> = (0..n).collect();
        axes.swap(n - 2, n - 1);
        self.permute(&axes)
    }

    /// The tensor repeated along new or length-1 axes to fill `shape` (NumPy broadcasting).
    ///
    /// # Panics
    /// If the shape cannot be broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor<T> {
        assert!(broadcasts_to(self.shape(), shape), "broadcast_to: cannot broadcast {:?} to {shape:?}", self.shape());
        if shape == self.shape() {
            return self.clone();
        }
        let data = Data::from_array(crate::tensor::pool::standard_copy(
            &self.view().broadcast(IxDyn(shape)).expect("checked"),
        ));
        crate::autodiff::primitive::record(&BroadcastTo, &[self], data)
    }

    /// Sums over the axes that broadcasting `shape` to `self.shape()` would add or stretch:
    /// the adjoint of [`Tensor::broadcast_to`].
    ///
    /// # Panics
    /// If `shape` does not broadcast to this tensor's shape.
    pub fn sum_to(&self, shape: &[usize]) -> Tensor<T> {
        assert!(broadcasts_to(shape, self.shape()), "sum_to: cannot reduce {:?} to {shape:?}", self.shape());
        if shape == self.shape() {
            return self.clone();
        }
        // One sum over the leading axes broadcasting added and the axes it stretched.
        let lead = self.ndim() - shape.len();
        let axes: Vec<usize> =
            (0..self.ndim()).filter(|&a| a < lead || (shape[a - lead] == 1 && self.shape()[a] != 1)).collect();
        let a = crate::ops::reduce::sum_array(&self.view(), &axes, false)
            .into_shape_with_order(IxDyn(shape))
            .expect("the kept axes are the target's");
        record_rule(SumTo { from: self.shape().to_vec(), to: shape.to_vec() }, &[self], Data::from_array(a))
    }

    /// Joins tensors along `axis`; all other axes must agree.
    ///
    /// # Panics
    /// If `tensors` is empty or the other axes differ.
    pub fn concat(tensors: &[&Tensor<T>], axis: isize) -> Tensor<T> {
        assert!(!tensors.is_empty(), "concat: no tensors");
        let ndim = tensors[0].ndim();
        let ax = normalize_axis("concat", axis, ndim);
        for t in tensors {
            let same = t.ndim() == ndim
                && t.shape().iter().zip(tensors[0].shape()).enumerate().all(|(i, (a, b))| i == ax || a == b);
            assert!(same, "concat: shapes {:?} and {:?} differ outside axis {ax}", tensors[0].shape(), t.shape());
        }
        let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
        let out = ndarray::concatenate(Axis(ax), &views).expect("checked shapes");
        let lengths = tensors.iter().map(|t| t.shape()[ax]).collect();
        record_rule(Concat { axis: ax, lengths }, tensors, Data::from_array(out))
    }

    /// Elements `start..start + len` along `axis` (a slice; shares the buffer).
    ///
    /// # Panics
    /// If the range does not fit the axis.
    #[track_caller]
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor<T> {
        let ax = normalize_axis("narrow", axis, self.ndim());
        let size = self.shape()[ax];
        assert!(
            start + len <= size,
            "narrow: range {start}..{} is outside axis {ax} of length {size} (shape {:?})",
            start + len,
            self.shape()
        );
        let op = SliceOp { axis: ax, start, end: start + len, step: 1, from: self.shape().to_vec() };
        self.slice_with(&op)
    }

    /// Every `step`-th element from `start` up to `end` (exclusive; `None`: the end) along
    /// `axis`, as Python's `x[start:end:step]`: negative bounds count from the end and bounds
    /// past the ends are clipped. `x[1:-1:3]` is `x.slice(0, 1, Some(-1), 3)`; `x[-3:]` is
    /// `x.slice(0, -3, None, 1)`. Shares the buffer.
    ///
    /// # Panics
    /// If `step` is 0 or the axis is out of range.
    #[track_caller]
    pub fn slice(&self, axis: isize, start: isize, end: Option<isize>, step: usize) -> Tensor<T> {
        assert!(step > 0, "slice: step must be positive");
        let ax = normalize_axis("slice", axis, self.ndim());
        let size = self.shape()[ax] as isize;
        let clip = |i: isize| (if i < 0 { i + size } else { i }).clamp(0, size) as usize;
        let start = clip(start);
        let end = end.map_or(size as usize, clip);
        let op = SliceOp { axis: ax, start, end: end.max(start), step, from: self.shape().to_vec() };
        self.slice_with(&op)
    }
}

/// A value passed on unchanged as a distinct node: `identity` (derivatives taken with respect
/// to it are separate from those of its input, which the transforms use to keep nested
/// derivatives apart) or `contiguous` (a copy to row-major memory order). Either way its
/// derivative is the identity.
struct PassThrough {
    name: &'static str,
}
const IDENTITY: PassThrough = PassThrough { name: "identity" };
const CONTIGUOUS: PassThrough = PassThrough { name: "contiguous" };
impl<T: Element> Primitive<T> for PassThrough {
    fn name(&self) -> &'static str {
        self.name
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.clone())].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].clone()
    }
}

/// Passes the gradient through a user function on its way back (a hook).
struct GradHook<T: Element> {
    hook: HookFn<T>,
}

type HookFn<T> = std::sync::Arc<dyn Fn(&Tensor<T>) -> Tensor<T> + Send + Sync>;
impl<T: Element> Primitive<T> for GradHook<T> {
    fn name(&self) -> &'static str {
        "grad_hook"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let out = (self.hook)(g);
        assert!(
            out.shape() == x[0].shape(),
            "grad hook: returned a gradient of shape {:?} for a value of shape {:?}",
            out.shape(),
            x[0].shape()
        );
        [Some(out)].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].clone()
    }
}

impl<T: Element> Tensor<T> {
    /// The same value as a new node of the graph (see the transforms, which use it to keep
    /// nested derivatives apart).
    pub fn identity(&self) -> Tensor<T> {
        crate::autodiff::primitive::record(&IDENTITY, &[self], self.data.clone())
    }

    /// The same values in row-major memory order (PyTorch's `contiguous`): a copy after a
    /// [`Tensor::permute`], so that the operations after it read memory in order; the value
    /// itself when it is already row-major.
    pub fn contiguous(&self) -> Tensor<T> {
        match &self.data {
            Data::Array(a) if !a.is_standard_layout() => {
                // assign() walks both in the destination's order with contiguous inner runs,
                // far faster than collecting element by element.
                let data = Data::from_array(crate::tensor::pool::standard_copy(&a.view()));
                crate::autodiff::primitive::record(&CONTIGUOUS, &[self], data)
            }
            _ => self.clone(),
        }
    }

    /// The same value, with `hook` applied to the gradient that flows back through it: read
    /// it (return it unchanged) or modify it (e.g. scale or clip). The hook runs during every
    /// reverse sweep that reaches this value.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// let x = Tensor::var(3.0);
    /// let y = x.with_grad_hook(|g| g * 0.5).sqr(); // d/dx x² = 6, halved by the hook
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().item(), 3.0);
    /// ```
    pub fn with_grad_hook(&self, hook: impl Fn(&Tensor<T>) -> Tensor<T> + Send + Sync + 'static) -> Tensor<T> {
        record_rule(GradHook { hook: std::sync::Arc::new(hook) }, &[self], self.data.clone())
    }
}
