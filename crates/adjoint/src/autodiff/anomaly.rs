//! Anomaly mode: catching the first non-finite value where it starts.
//!
//! Inside [`detect_anomaly`](crate::autodiff::detect_anomaly), every recorded primitive's
//! output is checked as it is made, and every adjoint as the backward pass reaches it. The
//! first NaN or infinity stops the program with an [`Anomaly`]: the primitive's name, the
//! shapes and statistics of its inputs, and the place in the user's program where the value
//! was made (the caller of the tensor method, through `#[track_caller]`). The anomaly is
//! raised as a panic whose payload is the [`Anomaly`] itself, so a program can catch it with
//! `std::panic::catch_unwind` and read it with `downcast_ref::<Anomaly>()`.

use std::fmt;
use std::panic::Location;

use crate::tensor::{Data, Element, Tensor};

/// The first non-finite value anomaly mode met.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// `"forward"` (a primitive's output) or `"backward"` (an adjoint).
    pub pass: &'static str,
    /// The primitive.
    pub op: &'static str,
    /// Where the value was made in the program (`file:line:column`).
    pub location: String,
    /// The part of the program (see `with_context`), e.g. `layer 2 (linear 100→10)`; empty
    /// if none was named.
    pub context: String,
    /// Shape and statistics of each input (forward pass) or of the adjoint (backward pass).
    pub details: Vec<String>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.pass == "forward" { "output" } else { "adjoint" };
        write!(f, "anomaly: the {what} of `{}`", self.op)?;
        if !self.context.is_empty() {
            write!(f, " in {}", self.context)?;
        }
        write!(f, " (made at {}) is not finite", self.location)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Shape, count of non-finite elements and range of a value, for messages.
pub(crate) fn describe<T: Element>(label: &str, shape: &[usize], values: impl Iterator<Item = T>) -> String {
    let (mut nan, mut inf, mut lo, mut hi, mut n) = (0usize, 0usize, f64::INFINITY, f64::NEG_INFINITY, 0usize);
    for v in values {
        let v = v.to_f64_lossless();
        n += 1;
        if v.is_nan() {
            nan += 1;
        } else if v.is_infinite() {
            inf += 1;
        } else {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let range = if lo <= hi { format!("finite values in [{lo:.4e}, {hi:.4e}]") } else { "no finite values".into() };
    format!("{label}: shape {shape:?}, {n} elements, {nan} NaN, {inf} ±inf, {range}")
}

fn finite<T: Element>(data: &Data<T>) -> bool {
    match data {
        Data::Scalar(v) => v.is_finite(),
        Data::Array(a) => a.iter().all(|v| v.is_finite()),
    }
}

/// Called for every recorded primitive in anomaly mode.
pub(crate) fn check_forward<T: Element>(
    op: &'static str,
    inputs: &[&Tensor<T>],
    output: &Data<T>,
    location: &'static Location<'static>,
) {
    if finite(output) {
        return;
    }
    let mut details: Vec<String> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| describe(&format!("input {i}"), t.shape(), t.view().iter().copied()))
        .collect();
    details.push(describe("output", output.shape(), output.view().iter().copied()));
    let context = crate::autodiff::graph::context();
    std::panic::panic_any(Anomaly { pass: "forward", op, location: location.to_string(), context, details });
}

/// Called for every cotangent a rule passes back in anomaly mode: the first non-finite one
/// is blamed on the rule that made it (its incoming adjoint is shown too).
pub(crate) fn check_backward<T: Element>(
    op: &'static str,
    incoming: &Tensor<T>,
    produced: &Tensor<T>,
    location: &'static Location<'static>,
) {
    if finite(&produced.data) {
        return;
    }
    let details = vec![
        describe("incoming adjoint", incoming.shape(), incoming.view().iter().copied()),
        describe("gradient passed to an input", produced.shape(), produced.view().iter().copied()),
    ];
    std::panic::panic_any(Anomaly {
        pass: "backward",
        op,
        location: location.to_string(),
        context: String::new(),
        details,
    });
}
