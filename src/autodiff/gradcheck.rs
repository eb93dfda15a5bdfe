//! Checking analytic gradients against central finite differences, in `f64`.
//!
//! (f(x + h) − f(x − h)) / 2h has error O(h²) from truncation and O(ε/h) from rounding;
//! h ≈ 1e-6 balances them for well-scaled `f64` functions.

use ndarray::ArrayD;
use rand::{Rng, SeedableRng};

use crate::autodiff::graph::no_grad;
use crate::autodiff::reverse::gradients;
use crate::tensor::Tensor;

/// Scalarises `f`'s output with fixed random weights, so a check of a vector function tests
/// its VJP with a generic cotangent.
fn scalarise(out: &Tensor<f64>, seed: u64) -> Tensor<f64> {
    if out.len() == 1 {
        return out.reshape(&[]);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w: Vec<f64> = (0..out.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    (out * &Tensor::from_vec(w, out.shape())).sum_all()
}

fn eval(f: &dyn Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[ArrayD<f64>], seed: u64) -> f64 {
    no_grad(|| {
        let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone())).collect();
        scalarise(&f(&xs), seed).item()
    })
}

/// The analytic gradient of the scalarised `f` at `inputs`, one array per input.
fn analytic(f: &dyn Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[ArrayD<f64>], seed: u64) -> Vec<ArrayD<f64>> {
    let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone()).requires_grad()).collect();
    let loss = scalarise(&f(&xs), seed);
    let refs: Vec<&Tensor<f64>> = xs.iter().collect();
    let grads = if loss.is_tracked() { gradients(&loss, &refs, None, false) } else { vec![None; xs.len()] };
    grads.into_iter().zip(inputs).map(|(g, x)| g.map_or_else(|| ArrayD::zeros(x.raw_dim()), |g| g.to_array())).collect()
}

/// Compares every partial derivative of `f` (scalarised with fixed random weights if its
/// output is not a scalar) with a central difference of step `h`.
///
/// ```
/// use adjoint::{check_gradients, Tensor};
/// use ndarray::arr1;
/// let report = check_gradients(|x| (&x[0] * &x[0]).sin().sum_all(), &[arr1(&[0.3, -1.2]).into_dyn()], 1e-6);
/// assert!(report.passes(1e-7, 1e-6), "{report:?}");
/// ```
pub fn check_gradients(f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[ArrayD<f64>], h: f64) -> GradCheckReport {
    let seed = 0x5eed;
    let grads = analytic(&f, inputs, seed);
    let mut report = GradCheckReport::default();
    // Contiguous row-major copies, so element j means the same thing everywhere.
    let mut xs: Vec<ArrayD<f64>> = inputs.iter().map(|x| x.as_standard_layout().into_owned()).collect();
    for (i, g) in grads.iter().enumerate() {
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout is contiguous");
        for (j, &a) in g.iter().enumerate() {
            let x0 = xs[i].as_slice().expect("standard layout")[j];
            xs[i].as_slice_mut().expect("standard layout")[j] = x0 + h;
            let up = eval(&f, &xs, seed);
            xs[i].as_slice_mut().expect("standard layout")[j] = x0 - h;
            let down = eval(&f, &xs, seed);
            xs[i].as_slice_mut().expect("standard layout")[j] = x0;
            report.add((i, j), a, (up - down) / (2.0 * h));
        }
    }
    report
}

/// Like [`check_gradients`] but along `directions` random unit directions u: compares
/// ⟨∇f, u⟩ with (f(x + hu) − f(x − hu)) / 2h. Costs 2 evaluations per direction, whatever
/// the number of inputs, so it suits large inputs.
pub fn check_gradients_directional(
    f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>,
    inputs: &[ArrayD<f64>],
    h: f64,
    directions: usize,
    seed: u64,
) -> GradCheckReport {
    let grads = analytic(&f, inputs, seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut report = GradCheckReport::default();
    for d in 0..directions {
        let mut u: Vec<ArrayD<f64>> = inputs.iter().map(|x| x.mapv(|_| rng.random_range(-1.0..1.0))).collect();
        let norm = u.iter().map(|a| a.iter().map(|v| v * v).sum::<f64>()).sum::<f64>().sqrt().max(1e-300);
        u.iter_mut().for_each(|a| a.mapv_inplace(|v| v / norm));
        let step = |s: f64| -> Vec<ArrayD<f64>> { inputs.iter().zip(&u).map(|(x, u)| x + &(u * s)).collect() };
        let numeric = (eval(&f, &step(h), seed) - eval(&f, &step(-h), seed)) / (2.0 * h);
        let a: f64 = grads.iter().zip(&u).map(|(g, u)| (g * u).sum()).sum();
        report.add((0, d), a, numeric);
    }
    report
}

/// Accumulates comparisons; see [`GradCheckReport::summary`].
#[derive(Debug, Clone, Default)]
pub struct GradCheckReport {
    /// The summary so far.
    pub summary: GradCheckSummary,
    pairs: Vec<(f64, f64)>,
}

/// Largest errors of a gradient check and where they occurred.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradCheckSummary {
    /// Largest |analytic − numeric|.
    pub max_abs_error: f64,
    /// Largest |analytic − numeric| / max(|analytic|, |numeric|) (0 where both are 0).
    pub max_rel_error: f64,
    /// (input, flat element) — or (0, direction) for the directional check — of the largest
    /// absolute error.
    pub worst: (usize, usize),
    /// The analytic and numeric values there.
    pub worst_values: (f64, f64),
    /// How many derivatives were compared.
    pub checked: usize,
}

impl GradCheckReport {
    fn add(&mut self, at: (usize, usize), analytic: f64, numeric: f64) {
        let s = &mut self.summary;
        let abs = (analytic - numeric).abs();
        let scale = analytic.abs().max(numeric.abs());
        let rel = if scale > 0.0 { abs / scale } else { 0.0 };
        if abs > s.max_abs_error || s.checked == 0 || abs.is_nan() {
            s.max_abs_error = abs;
            s.worst = at;
            s.worst_values = (analytic, numeric);
        }
        s.max_rel_error = s.max_rel_error.max(rel);
        s.checked += 1;
        self.pairs.push((analytic, numeric));
    }

    /// Whether every entry satisfied |analytic − numeric| ≤ `atol` + `rtol`·|numeric|.
    pub fn passes(&self, atol: f64, rtol: f64) -> bool {
        self.pairs.iter().all(|&(a, n)| (a - n).abs() <= atol + rtol * n.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn transposed_inputs_are_checked_element_by_element() {
        // A column-major input: the check must still pair each analytic partial with the
        // difference quotient of the same element.
        let x = arr2(&[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]).reversed_axes().into_dyn();
        let w = arr2(&[[1.0, -2.0], [3.0, 0.5], [-1.0, 2.0]]).into_dyn();
        let r = check_gradients(
            |v| (&v[0] * &Tensor::from_array(w.clone())).sin().sum_all(),
            std::slice::from_ref(&x),
            1e-6,
        );
        assert!(r.passes(1e-8, 1e-6), "{:?}", r.summary);
        assert_eq!(r.summary.checked, 6);
        // A wrong gradient is caught.
        let bad = check_gradients(
            |v| v[0].sum(&[0], false).sqr().sum_all().detach() + v[0].sum_all(),
            std::slice::from_ref(&x),
            1e-6,
        );
        assert!(!bad.passes(1e-6, 1e-6));
    }
}
