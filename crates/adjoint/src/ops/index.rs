//! Picking elements by integer index: index_select and gather, with their adjoints
//! index_add and scatter_add (each pair is the other's reverse rule), and where(mask, a, b).

use std::sync::Arc;

use ndarray::{ArrayD, Axis, Dimension, IxDyn, Zip};

use crate::autodiff::primitive::{add_optional, record_rule, Cotangents, Primitive};
use crate::ops::kernel::c;
use crate::ops::kernel::wants;
use crate::tensor::shape::{broadcast_shapes, normalize_axis};
use crate::tensor::{Data, Element, Tensor};

struct IndexSelect {
    axis: usize,
    indices: Arc<[usize]>,
    from: Vec<usize>,
}
impl<T: Element> Primitive<T> for IndexSelect {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.index_add_into(&self.from, self.axis, self.indices.clone()))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.index_select(self.axis as isize, &self.indices))
    }
}

struct IndexAdd {
    axis: usize,
    indices: Arc<[usize]>,
}
impl<T: Element> Primitive<T> for IndexAdd {
    fn name(&self) -> &'static str {
        "index_add"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.index_select(self.axis as isize, &self.indices))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.index_add_into(out.shape(), self.axis, self.indices.clone()))
    }
}

struct Gather {
    axis: usize,
    index: Arc<ArrayD<usize>>,
    from: Vec<usize>,
}
impl<T: Element> Primitive<T> for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.scatter_add_into(&self.from, self.axis, self.index.clone()))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.gather(self.axis as isize, &self.index))
    }
}

struct ScatterAdd {
    axis: usize,
    index: Arc<ArrayD<usize>>,
}
impl<T: Element> Primitive<T> for ScatterAdd {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.gather(self.axis as isize, &self.index))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.scatter_add_into(out.shape(), self.axis, self.index.clone()))
    }
}

/// Flat (row-major) positions for [`Take`] and [`PutAdd`], and, when known, that they stay
/// within planes: with `planes = Some([out, inp])`, element `q·out + r` of `index` lies in
/// `q·inp .. (q + 1)·inp` (max pooling's windows), so put_add can split its work by plane.
#[derive(Clone)]
pub(crate) struct Positions {
    index: Arc<ArrayD<usize>>,
    planes: Option<[usize; 2]>,
}

/// Elements picked by flat (row-major) position: out[i] = x.flat[index[i]].
struct Take {
    at: Positions,
    from: Vec<usize>,
}
impl<T: Element> Primitive<T> for Take {
    fn name(&self) -> &'static str {
        "take"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.put_add_into(&self.from, &self.at))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.take_at(&self.at))
    }
}

/// The adjoint of [`Take`]: zeros with each element added at its flat position.
struct PutAdd {
    at: Positions,
}
impl<T: Element> Primitive<T> for PutAdd {
    fn name(&self) -> &'static str {
        "put_add"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.take_at(&self.at))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.put_add_into(out.shape(), &self.at))
    }
}

/// where(mask, a, b): the gradient goes to `a` where the mask holds, else to `b`.
struct Where<T: Element> {
    mask: Tensor<T>,
}
impl<T: Element> Primitive<T> for Where<T> {
    fn name(&self) -> &'static str {
        "where"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let zero = c::<T>(0.0);
        [
            wants(&x[0]).then(|| Tensor::where_(&self.mask, g, &zero)),
            wants(&x[1]).then(|| Tensor::where_(&self.mask, &zero, g)),
        ]
        .into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let zero = c::<T>(0.0);
        add_optional(
            t[0].as_ref().map(|t| Tensor::where_(&self.mask, t, &zero)),
            t[1].as_ref().map(|t| Tensor::where_(&self.mask, &zero, t)),
        )
    }
}

impl<T: Element> Tensor<T> {
    /// The slices at `indices` along `axis`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is out of range for the axis.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Tensor<T> {
        let ax = normalize_axis("index_select", axis, self.ndim());
        let size = self.shape()[ax];
        if let Some(bad) = indices.iter().find(|&&i| i >= size) {
            panic!("index_select: index {bad} is out of range for axis {ax} of shape {:?}", self.shape());
        }
        let out = self.view().select(Axis(ax), indices);
        let rule = IndexSelect { axis: ax, indices: indices.into(), from: self.shape().to_vec() };
        record_rule(rule, &[self], Data::from_array(out))
    }

    /// Zeros of `shape` with the slices of `self` added at `indices` along `axis`: the
    /// adjoint of [`Tensor::index_select`].
    fn index_add_into(&self, shape: &[usize], axis: usize, indices: Arc<[usize]>) -> Tensor<T> {
        let mut out = ArrayD::zeros(IxDyn(shape));
        let src = self.view();
        for (k, &i) in indices.iter().enumerate() {
            let mut dst = out.index_axis_mut(Axis(axis), i);
            dst += &src.index_axis(Axis(axis), k);
        }
        record_rule(IndexAdd { axis, indices }, &[self], Data::from_array(out))
    }

    /// Picks one element along `axis` for every position of `index` (PyTorch's `gather`):
    /// `out[i][j] = self[i][index[i][j]]` for `axis = 1`. `index` has as many axes as `self`;
    /// its other axes must not exceed `self`'s. Used to pick each label's log-probability.
    ///
    /// # Panics
    /// On mismatched axes or an index out of range.
    pub fn gather(&self, axis: isize, index: &ArrayD<usize>) -> Tensor<T> {
        let ax = normalize_axis("gather", axis, self.ndim());
        let fits = index.ndim() == self.ndim()
            && index.shape().iter().zip(self.shape()).enumerate().all(|(i, (a, b))| i == ax || a <= b);
        assert!(fits, "gather: index of shape {:?} does not fit a tensor of shape {:?}", index.shape(), self.shape());
        let src = self.view();
        let size = self.shape()[ax];
        let mut pos = IxDyn(&vec![0; self.ndim()]);
        let out = ArrayD::from_shape_fn(index.raw_dim(), |at| {
            let k = index[&at];
            assert!(k < size, "gather: index {k} is out of range for axis {ax} of shape {:?}", self.shape());
            for d in 0..at.ndim() {
                pos[d] = at[d];
            }
            pos[ax] = k;
            src[&pos]
        });
        let rule = Gather { axis: ax, index: Arc::new(index.clone()), from: self.shape().to_vec() };
        record_rule(rule, &[self], Data::from_array(out))
    }

    /// Zeros of `shape` with each element of `self` added at its `index` along `axis`: the
    /// adjoint of [`Tensor::gather`].
    fn scatter_add_into(&self, shape: &[usize], axis: usize, index: Arc<ArrayD<usize>>) -> Tensor<T> {
        let mut out = ArrayD::zeros(IxDyn(shape));
        let mut pos = IxDyn(&vec![0; shape.len()]);
        for (at, &k) in index.indexed_iter() {
            for d in 0..at.ndim() {
                pos[d] = at[d];
            }
            pos[axis] = k;
            out[&pos] += self.view()[&at];
        }
        record_rule(ScatterAdd { axis, index }, &[self], Data::from_array(out))
    }

    /// The elements at flat (row-major) positions `index`, in the shape of `index`
    /// (PyTorch's `take`, JAX's `take` without an axis). Max pooling is built on it.
    ///
    /// # Panics
    /// If an index is past the last element, naming it and the shape.
    #[track_caller]
    pub fn take(&self, index: &ArrayD<usize>) -> Tensor<T> {
        let len = self.len();
        if let Some(bad) = index.iter().find(|&&i| i >= len) {
            panic!("take: index {bad} is out of range for a tensor of shape {:?}", self.shape());
        }
        let index = index.as_standard_layout().into_owned();
        self.take_at(&Positions { index: Arc::new(index), planes: None })
    }

    /// Max pooling's take: `values` are `self`'s elements at `index` (computed with it), every
    /// index in range and plane-local as [`Positions`] says.
    pub(crate) fn take_computed(&self, index: ArrayD<usize>, values: ArrayD<T>, planes: [usize; 2]) -> Tensor<T> {
        debug_assert!(index.is_standard_layout() && index.shape() == values.shape());
        let at = Positions { index: Arc::new(index), planes: Some(planes) };
        record_rule(Take { at, from: self.shape().to_vec() }, &[self], Data::from_array(values))
    }

    /// `take` at positions known to be in range and row-major.
    fn take_at(&self, at: &Positions) -> Tensor<T> {
        let x = self.view();
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let index = at.index.as_slice().expect("positions are row-major");
        let out = crate::ops::kernel::map_slice(index, &|i| x[i]);
        let out = ArrayD::from_shape_vec(at.index.raw_dim(), out).expect("one value per position");
        let rule = Take { at: at.clone(), from: self.shape().to_vec() };
        record_rule(rule, &[self], Data::from_array(out))
    }

    /// Zeros of `shape` with each element of `self` added at its flat position in `at`:
    /// the adjoint of [`Tensor::take`]. Split by plane across threads when the positions
    /// are plane-local.
    fn put_add_into(&self, shape: &[usize], at: &Positions) -> Tensor<T> {
        assert_eq!(at.index.shape(), self.shape(), "put_add: index and values differ in shape");
        let mut out = crate::tensor::pool::zeros::<T>(shape.iter().product());
        let g = self.view();
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let index = at.index.as_slice().expect("positions are row-major");
        match at.planes {
            Some([per_out, per_in]) if per_out > 0 && per_in > 0 => {
                let threads = crate::ops::kernel::threads_for(out.len(), crate::ops::kernel::PARALLEL_MIN);
                crate::ops::kernel::for_each_run(&mut out, per_in, threads, |q, plane| {
                    let (from, to) = (&index[q * per_out..][..per_out], &g[q * per_out..][..per_out]);
                    for (&i, &v) in from.iter().zip(to) {
                        plane[i - q * per_in] += v;
                    }
                });
            }
            _ => {
                for (&i, &v) in index.iter().zip(g) {
                    out[i] += v;
                }
            }
        }
        let out = ArrayD::from_shape_vec(IxDyn(shape), out).expect("sized from shape");
        record_rule(PutAdd { at: at.clone() }, &[self], Data::from_array(out))
    }

    /// `a` where `mask` is non-zero, else `b`, elementwise with broadcasting of all three.
    /// The mask is a constant (e.g. from [`Tensor::gt_mask`]); no gradient flows into it.
    pub fn where_(mask: &Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
        let ab = broadcast_shapes(a.shape(), b.shape());
        let shape = ab.and_then(|s| broadcast_shapes(&s, mask.shape())).unwrap_or_else(|| {
            panic!(
                "where: mask {:?}, a {:?} and b {:?} cannot be broadcast together",
                mask.shape(),
                a.shape(),
                b.shape()
            )
        });
        let dim = IxDyn(&shape);
        let (m, av, bv) = (mask.view(), a.view(), b.view());
        let out = Zip::from(&m.broadcast(dim.clone()).expect("checked"))
            .and(&av.broadcast(dim.clone()).expect("checked"))
            .and(&bv.broadcast(dim).expect("checked"))
            .map_collect(|&m, &x, &y| if m != T::zero() { x } else { y });
        record_rule(Where { mask: mask.detach() }, &[a, b], Data::from_array(out))
    }

    /// A constant mask: 1 where `self > other` (broadcasting), else 0.
    pub fn gt_mask(&self, other: &Tensor<T>) -> Tensor<T> {
        Tensor::constant_data(crate::ops::kernel::zip(
            "gt",
            self,
            other,
            |a, b| if a > b { T::one() } else { T::zero() },
        ))
    }
}
