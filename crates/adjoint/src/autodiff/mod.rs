//! Automatic differentiation over the recorded graph: reverse mode ([`Tensor::backward`],
//! [`gradients`]), forward mode ([`jvp_sweep`]), function transforms, gradient checking and
//! anomaly detection.
//!
//! # Graph lifetime
//!
//! The graph belongs to the values that depend on it (see [`graph`]):
//!
//! ```
//! use adjoint::Tensor;
//! let x = Tensor::<f64>::var(0.5);
//! // Two losses on the same leaf: each backward pass frees its own graph only, and the
//! // gradients accumulate into x.grad() as in PyTorch.
//! let l1 = x.sqr().sum_all();
//! let l2 = x.sin().sum_all();
//! l1.backward();
//! l2.backward();
//! assert!((x.grad().unwrap().item() - (1.0 + 0.5f64.cos())).abs() < 1e-12);
//!
//! // A value whose graph a backward pass freed cannot be differentiated through again:
//! // that is an error saying so, never a silent constant.
//! let h = x.tanh();
//! h.sum_all().backward();
//! let again = (&(&h * &h) + &x).sum_all();
//! assert!(again.try_backward().is_err());
//! // Keep the graph with retain_graph, or compute the value again.
//! ```
//!
//! Values that are dropped take their graph with them, so an inference loop needs no
//! [`no_grad`] to stay within bounded memory (it still saves the recording work).
//!
//! [`Tensor::backward`]: crate::Tensor::backward

pub mod anomaly;
pub mod forward;
pub mod gradcheck;
pub mod graph;
pub mod introspect;
pub mod primitive;
pub mod reverse;
pub(crate) mod subgraph;
pub mod transforms;

pub use anomaly::Anomaly;
pub use forward::{jvp_sweep, try_jvp_sweep};
pub use gradcheck::{
    check_gradients, check_gradients_directional, check_grads, CheckFailure, CheckOptions, GradCheckReport,
    GradCheckSummary,
};
pub use graph::{anomaly_mode, detect_anomaly, is_recording, live_nodes, no_grad, set_recording, with_context};
pub use primitive::{add_optional, Cotangents, Primitive};
pub use reverse::{gradients, gradients_or_zeros, try_gradients, BackwardOptions, Gradients};
pub use subgraph::GraphError;
pub use transforms::{
    grad, grad_many, hessian, hvp, jacobian, jacobian_fwd, jacobian_rev, jvp, value_and_grad, value_and_grad_many, vjp,
    Pullback,
};
