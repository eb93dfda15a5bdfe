//! # adjoint
//!
//! Automatic differentiation and neural-network training in pure Rust.
//!
//! - [`Tensor`]: n-d arrays of `f32`/`f64` that record the primitives applied to them in a
//!   graph owned by the values (define-by-run: loops and branches just work; a graph lives as
//!   long as a value needs it; tensors are `Send + Sync`).
//! - Reverse mode ([`Tensor::backward`], [`gradients`]) pulls adjoints from an output in one
//!   sweep; forward mode ([`jvp_sweep`]) pushes tangents from seeded inputs in one sweep.
//! - Every rule is written over tensors, so recording a backward pass (`create_graph`) gives
//!   derivatives of any order.
//! - [`check_gradients`] compares any function's gradient with finite differences.
//!
//! ```
//! use adjoint::Tensor;
//! // f(x, y) = (x·y + sin x + 4)·(3y² + 6) at (2, 8), as on the lecture slides.
//! let (x, y) = (Tensor::<f64>::var(2.0), Tensor::<f64>::var(8.0));
//! let f = (&x * &y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0);
//! let g = f.backward();
//! assert!((g.wrt(&y).unwrap().item() - 1399.6462764).abs() < 1e-6);
//! ```

#![warn(missing_docs)]

pub mod autodiff;
pub mod cli;
pub mod data;
pub mod expr;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod tensor;
pub mod train;

pub use autodiff::{
    check_gradients, check_gradients_directional, detect_anomaly, gradients, gradients_or_zeros, jvp_sweep, no_grad,
    BackwardOptions, Cotangents, GradCheckReport, Gradients, GraphError, Primitive,
};
pub use tensor::{Element, Tensor};
