//! # adjoint-explain
//!
//! Seeing inside automatic differentiation, for students and teachers, built on the public
//! introspection API of [`adjoint`]:
//!
//! - [`trace`]: the evaluation trace as the lectures write it (s1 = x, s2 = y, s3 = s1 × s2,
//!   …) with every tangent and adjoint and their formulas filled in;
//! - [`graph`]: the computation graph as Graphviz DOT and as a self-drawn SVG;
//! - [`compare`]: symbolic differentiation, finite differences, forward and reverse mode side
//!   by side, with what each costs;
//! - [`backprop`]: a small network's backward pass laid open, the four equations of
//!   backpropagation checked against the engine.
//!
//! ```
//! use adjoint::expr::Expr;
//! use adjoint_explain::trace::{Trace, TraceOptions};
//! let f = Expr::parse("(x*y + sin(x) + 4) * (3*y^2 + 6)").unwrap();
//! let at = [("x".to_string(), 2.0), ("y".to_string(), 8.0)];
//! let t = Trace::record(&f, &at, &TraceOptions { forward_wrt: Some("y".into()), reverse: true, degrees: false }).unwrap();
//! assert_eq!(t.steps.len(), 10);
//! assert!((t.steps[1].adjoint.unwrap() - 1399.6462764876).abs() < 1e-9);
//! ```

#![warn(missing_docs)]

pub mod backprop;
pub mod compare;
pub mod graph;
pub mod html;
pub mod trace;
