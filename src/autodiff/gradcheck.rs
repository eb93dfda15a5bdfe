//! Checking analytic gradients against central finite differences, in `f64`.
//!
//! (f(x + h) − f(x − h)) / 2h has error O(h²) from truncation and O(ε/h) from rounding;
//! h ≈ 1e-6 balances them for well-scaled `f64` functions.

use ndarray::ArrayD;
use rand::{Rng, SeedableRng};

use crate::autodiff::reverse::gradients;
use crate::autodiff::tape::{no_grad, tape_len, truncate_tape};
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
    no_grad::<f64, _>(|| {
        let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone())).collect();
        scalarise(&f(&xs), seed).item()
    })
}

/// The analytic gradient of the scalarised `f` at `inputs`, one array per input.
fn analytic(f: &dyn Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[ArrayD<f64>], seed: u64) -> Vec<ArrayD<f64>> {
    let mark = tape_len::<f64>();
    let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone()).requires_grad()).collect();
    let loss = scalarise(&f(&xs), seed);
    let refs: Vec<&Tensor<f64>> = xs.iter().collect();
    let grads = if loss.is_tracked() { gradients(&loss, &refs, None, false) } else { vec![None; xs.len()] };
    let out = grads
        .into_iter()
        .zip(inputs)
        .map(|(g, x)| g.map_or_else(|| ArrayD::zeros(x.raw_dim()), |g| g.to_array()))
        .collect();
    truncate_tape::<f64>(mark);
    out
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
    let mut xs = inputs.to_vec();
    for (i, g) in grads.iter().enumerate() {
        for j in 0..xs[i].len() {
            let x0 = xs[i]
                .as_slice_memory_order()
                .map(|s| s[j])
                .unwrap_or_else(|| xs[i].iter().nth(j).copied().unwrap_or(0.0));
            set(&mut xs[i], j, x0 + h);
            let up = eval(&f, &xs, seed);
            set(&mut xs[i], j, x0 - h);
            let down = eval(&f, &xs, seed);
            set(&mut xs[i], j, x0);
            let numeric = (up - down) / (2.0 * h);
            let a = g.iter().nth(j).copied().unwrap_or(0.0);
            report.add((i, j), a, numeric);
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

fn set(a: &mut ArrayD<f64>, j: usize, v: f64) {
    if let Some(x) = a.iter_mut().nth(j) {
        *x = v;
    }
}

/// Accumulates comparisons into a [`GradCheck`]; see [`GradCheckReport::summary`].
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
