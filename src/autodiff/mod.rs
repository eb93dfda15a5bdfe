//! Automatic differentiation over the recorded tape: reverse mode ([`Tensor::backward`],
//! [`gradients`]), forward mode ([`jvp_sweep`]) and gradient checking.
//!
//! [`Tensor::backward`]: crate::Tensor::backward

pub mod forward;
pub mod gradcheck;
pub mod primitive;
pub mod reverse;
pub mod tape;
pub mod transforms;

pub use forward::{jvp_sweep, jvp_sweep_all};
pub use gradcheck::{check_gradients, check_gradients_directional, GradCheckReport, GradCheckSummary};
pub use primitive::{add_optional, Cotangents, Primitive};
pub use reverse::{gradients, BackwardOptions, Gradients};
pub use tape::{is_recording, no_grad, release_tape, tape_len, truncate_tape, Var};
pub use transforms::{
    grad, hessian, hvp, jacobian, jacobian_fwd, jacobian_rev, jvp, value_and_grad, value_and_grad_many, vjp, Pullback,
};
