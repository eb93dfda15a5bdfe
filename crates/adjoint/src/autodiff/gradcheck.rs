//! Checking analytic gradients against central finite differences, in `f64`.
//!
//! (f(x + h) − f(x − h)) / 2h has error O(h²) from truncation and O(ε/h) from rounding;
//! h ≈ 1e-6 balances them for well-scaled `f64` functions.

use std::rc::Rc;

use ndarray::ArrayD;
use rand::{Rng, SeedableRng};

use crate::autodiff::reverse::gradients;
use crate::tensor::Tensor;

/// Scalarises `f`'s output with fixed random weights, so a check of a vector function tests
/// its VJP with a generic cotangent.
fn scalarise(out: &Tensor<f64>, seed: u64) -> Tensor<f64> {
    if out.len() == 1 {
        return out.reshape(crate::tensor::shape::SCALAR);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w: Vec<f64> = (0..out.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    (out * &Tensor::from_vec(w, out.shape())).sum_all()
}

/// `f` at constant inputs. Recording stays on, so an `f` that differentiates internally (a
/// gradient of a gradient) is evaluated correctly; nothing outside it is recorded.
fn eval(f: &dyn Fn(&[Tensor<f64>]) -> Tensor<f64>, inputs: &[ArrayD<f64>], seed: u64) -> f64 {
    let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone())).collect();
    scalarise(&f(&xs), seed).item()
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

/// A function checked by [`check_grads`]: several tensors in, several out.
pub type MultiFn = Rc<dyn Fn(&[Tensor<f64>]) -> Vec<Tensor<f64>>>;

/// Tolerances and step of [`check_grads`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOptions {
    /// The highest order checked (1: first derivatives; 2: also derivatives of them).
    pub order: usize,
    /// Forward, reverse, or both (and at order 2 every combination: JVP of JVP, VJP of VJP,
    /// JVP of VJP, VJP of JVP).
    pub forward: bool,
    /// See `forward`.
    pub reverse: bool,
    /// The finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Seed of the random directions and cotangents.
    pub seed: u64,
}

impl Default for CheckOptions {
    /// Order 2, both modes, step 1e-5, tolerances 1e-5 (as JAX's `check_grads` for `f64`).
    fn default() -> Self {
        CheckOptions { order: 2, forward: true, reverse: true, eps: 1e-5, atol: 1e-5, rtol: 1e-5, seed: 0x5eed }
    }
}

/// A failed [`check_grads`]: which rule, at which level of the recursion, and the numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {what}: analytic {analytic:e}, numeric {numeric:e}")]
pub struct CheckFailure {
    /// The chain of transforms checked, innermost last (e.g. `vjp∘jvp`).
    pub path: String,
    /// What was compared.
    pub what: String,
    /// The analytic value.
    pub analytic: f64,
    /// The finite-difference value.
    pub numeric: f64,
}

/// Checks `f`'s derivative rules the way JAX's `check_grads` does: its JVPs and VJPs against
/// central finite differences at `args`, then, recursively up to `options.order`, those of the
/// functions x ↦ jvp(f)(x, x) and x ↦ vjp(f)(x)(f(x)). At order 2 this checks JVP of JVP, VJP
/// of VJP, JVP of VJP and VJP of JVP — catching, for instance, a pullback that differentiates
/// through its cotangent, or a nested transform that drops a cross term.
///
/// ```
/// use adjoint::{autodiff::gradcheck::{check_grads, CheckOptions}, Tensor};
/// let f = |x: &[Tensor<f64>]| vec![(&x[0] * &x[1]).sin()];
/// let args = [Tensor::from_vec(vec![0.3, -1.2], &[2]), Tensor::from_vec(vec![0.7, 0.4], &[2])];
/// check_grads(f, &args, CheckOptions::default()).unwrap();
/// ```
pub fn check_grads(
    f: impl Fn(&[Tensor<f64>]) -> Vec<Tensor<f64>> + 'static,
    args: &[Tensor<f64>],
    options: CheckOptions,
) -> Result<(), CheckFailure> {
    let args: Vec<Tensor<f64>> = args.iter().map(Tensor::detach).collect();
    check_level(Rc::new(f), &args, options.order, &options, "f")
}

fn check_level(
    f: MultiFn,
    args: &[Tensor<f64>],
    order: usize,
    o: &CheckOptions,
    path: &str,
) -> Result<(), CheckFailure> {
    if order == 0 {
        return Ok(());
    }
    if o.forward {
        check_jvp(&f, args, o, path)?;
        if order > 1 {
            let inner = f.clone();
            let n = args.len();
            // x ↦ (f(x), J(x)·x): the primals and tangents of one JVP, both as outputs.
            let f_jvp: MultiFn = Rc::new(move |xs: &[Tensor<f64>]| {
                let (ys, ts) = crate::autodiff::transforms::jvp(|v: &[Tensor<f64>]| inner(v), &xs[..n], &xs[n..]);
                ys.into_iter().chain(ts).collect()
            });
            let doubled: Vec<Tensor<f64>> = args.iter().chain(args).cloned().collect();
            check_level(f_jvp, &doubled, order - 1, o, &format!("jvp∘{path}"))?;
        }
    }
    if o.reverse {
        check_vjp(&f, args, o, path)?;
        if order > 1 {
            let inner = f.clone();
            // x ↦ J(x)ᵀ f(x): the pullback called with the outputs themselves.
            let f_vjp: MultiFn = Rc::new(move |xs: &[Tensor<f64>]| {
                let (ys, pullback) = crate::autodiff::transforms::vjp(|v: &[Tensor<f64>]| inner(v), xs);
                pullback.call(&ys)
            });
            check_level(f_vjp, args, order - 1, o, &format!("vjp∘{path}"))?;
        }
    }
    Ok(())
}

fn random_like(shapes: &[Tensor<f64>], rng: &mut rand::rngs::StdRng) -> Vec<Tensor<f64>> {
    shapes
        .iter()
        .map(|t| Tensor::from_array(ArrayD::from_shape_simple_fn(t.shape(), || rng.random_range(-1.0..1.0))))
        .collect()
}

fn inner(a: &[Tensor<f64>], b: &[Tensor<f64>]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.view().iter().zip(y.view().iter()).map(|(p, q)| p * q).sum::<f64>()).sum()
}

/// (f(x + εv) − f(x − εv)) / 2ε, output by output.
fn numeric_jvp(f: &MultiFn, args: &[Tensor<f64>], v: &[Tensor<f64>], eps: f64) -> Vec<Tensor<f64>> {
    // Recording stays on: `f` may differentiate internally (the recursion's functions do).
    // Its inputs are constants here, so nothing outside it is recorded.
    let shifted = |s: f64| -> Vec<Tensor<f64>> { args.iter().zip(v).map(|(x, v)| x + &(v * s)).collect() };
    let (up, down) = (f(&shifted(eps)), f(&shifted(-eps)));
    up.iter().zip(&down).map(|(u, d)| (u - d) * (0.5 / eps)).collect()
}

fn close(o: &CheckOptions, analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= o.atol + o.rtol * numeric.abs().max(analytic.abs())
}

fn check_jvp(f: &MultiFn, args: &[Tensor<f64>], o: &CheckOptions, path: &str) -> Result<(), CheckFailure> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let v = random_like(args, &mut rng);
    let (_, tangents) = crate::autodiff::transforms::jvp(|x: &[Tensor<f64>]| f(x), args, &v);
    let numeric = numeric_jvp(f, args, &v, o.eps);
    for (k, (t, n)) in tangents.iter().zip(&numeric).enumerate() {
        for (i, (a, b)) in t.view().iter().zip(n.view().iter()).enumerate() {
            if !close(o, *a, *b) {
                let what = format!("JVP of output {k}, element {i}");
                return Err(CheckFailure { path: format!("jvp of {path}"), what, analytic: *a, numeric: *b });
            }
        }
    }
    Ok(())
}

fn check_vjp(f: &MultiFn, args: &[Tensor<f64>], o: &CheckOptions, path: &str) -> Result<(), CheckFailure> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed ^ 0x7e57);
    let v = random_like(args, &mut rng);
    let (ys, pullback) = crate::autodiff::transforms::vjp(|x: &[Tensor<f64>]| f(x), args);
    let c = random_like(&ys, &mut rng);
    let g = pullback.call(&c);
    let analytic = inner(&g, &v);
    let numeric = inner(&c, &numeric_jvp(f, args, &v, o.eps));
    if !close(o, analytic, numeric) {
        let what = "⟨Jᵀc, v⟩ against ⟨c, J v⟩".to_string();
        return Err(CheckFailure { path: format!("vjp of {path}"), what, analytic, numeric });
    }
    Ok(())
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
