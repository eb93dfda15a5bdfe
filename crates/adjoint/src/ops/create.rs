//! Making tensors (ranges, identities, seeded random values) and two structural primitives
//! users reach for: `cumsum` (its VJP is the reversed cumulative sum, its JVP itself) and
//! `stack` (a concatenation along a new axis, differentiable through `concat`).

use ndarray::{ArrayD, Axis, IxDyn};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::tensor::shape::normalize_axis;
use crate::tensor::{Data, Element, Tensor};

/// Running sums along an axis, from the start (or, `reverse`, from the end).
struct Cumsum {
    axis: usize,
    reverse: bool,
}
impl<T: Element> Primitive<T> for Cumsum {
    fn name(&self) -> &'static str {
        "cumsum"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        // out_i = Σ_{j ≤ i} x_j, so x̄_j = Σ_{i ≥ j} ḡ_i: the cumulative sum from the other end.
        [Some(g.cumsum_from(self.axis, !self.reverse))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.cumsum_from(self.axis, self.reverse))
    }
}

impl<T: Element> Tensor<T> {
    /// The cumulative sum along `axis` (negative counts from the end): `out[i] = Σ_{j ≤ i} x[j]`.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], &[3]);
    /// assert_eq!(x.cumsum(0).to_vec(), [1.0, 3.0, 6.0]);
    /// ```
    ///
    /// # Panics
    /// If the axis is out of range.
    #[track_caller]
    pub fn cumsum(&self, axis: isize) -> Tensor<T> {
        let ax = normalize_axis("cumsum", axis, self.ndim());
        self.cumsum_from(ax, false)
    }

    /// The cumulative sum along `axis` from the last element back: `out[i] = Σ_{j ≥ i} x[j]`.
    ///
    /// # Panics
    /// If the axis is out of range.
    #[track_caller]
    pub fn cumsum_reverse(&self, axis: isize) -> Tensor<T> {
        let ax = normalize_axis("cumsum_reverse", axis, self.ndim());
        self.cumsum_from(ax, true)
    }

    fn cumsum_from(&self, axis: usize, reverse: bool) -> Tensor<T> {
        let mut out = self.view().to_owned();
        for mut lane in out.lanes_mut(Axis(axis)) {
            let mut sum = T::zero();
            let n = lane.len();
            for k in 0..n {
                let i = if reverse { n - 1 - k } else { k };
                sum += lane[i];
                lane[i] = sum;
            }
        }
        record_rule(Cumsum { axis, reverse }, &[self], Data::from_array(out))
    }

    /// Tensors of one shape joined along a new axis `axis` (NumPy's and PyTorch's `stack`).
    ///
    /// # Panics
    /// If `tensors` is empty, the shapes differ or the axis is out of range.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor<T>], axis: isize) -> Tensor<T> {
        assert!(!tensors.is_empty(), "stack: no tensors");
        let shape = tensors[0].shape().to_vec();
        for t in tensors {
            assert!(t.shape() == shape.as_slice(), "stack: shapes {shape:?} and {:?} differ", t.shape());
        }
        let ax = normalize_axis("stack", axis, shape.len() + 1);
        let mut one = shape.clone();
        one.insert(ax, 1);
        let parts: Vec<Tensor<T>> = tensors.iter().map(|t| t.reshape(&one)).collect();
        let refs: Vec<&Tensor<T>> = parts.iter().collect();
        Tensor::concat(&refs, ax as isize)
    }

    /// `start, start + step, …` below `end` (NumPy's `arange`), as a constant 1-D tensor.
    ///
    /// # Panics
    /// If `step` is zero or not finite.
    pub fn arange(start: f64, end: f64, step: f64) -> Tensor<T> {
        assert!(step != 0.0 && step.is_finite(), "arange: step must be finite and non-zero, got {step}");
        let count = ((end - start) / step).ceil().max(0.0) as usize;
        let values = (0..count).map(|i| T::from_f64_lossy(start + i as f64 * step)).collect();
        Tensor::from_vec(values, &[count])
    }

    /// The `n`×`n` identity matrix.
    pub fn eye(n: usize) -> Tensor<T> {
        Tensor::from_array(ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| if i[0] == i[1] { T::one() } else { T::zero() }))
    }

    /// Values drawn uniformly from [`low`, `high`), reproducibly from `seed`.
    ///
    /// # Panics
    /// If the range is empty or not finite.
    pub fn rand_uniform(shape: &[usize], low: f64, high: f64, seed: u64) -> Tensor<T> {
        let d = Uniform::new(low, high)
            .unwrap_or_else(|e| panic!("rand_uniform: [{low}, {high}) is not a usable range ({e})"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Tensor::from_array(ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_f64_lossy(d.sample(&mut rng))))
    }

    /// Values drawn from N(`mean`, `std`²), reproducibly from `seed`.
    ///
    /// # Panics
    /// If `std` is negative or not finite.
    pub fn rand_normal(shape: &[usize], mean: f64, std: f64, seed: u64) -> Tensor<T> {
        let d = Normal::new(mean, std)
            .unwrap_or_else(|e| panic!("rand_normal: N({mean}, {std}²) is not a usable distribution ({e})"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Tensor::from_array(ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_f64_lossy(d.sample(&mut rng))))
    }
}
