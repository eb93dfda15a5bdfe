//! The primitives. Each file holds, for its operations, the forward computation, the reverse
//! rule (VJP), the forward rule (JVP) and the user-facing `Tensor` method, side by side.

pub(crate) mod arith;
pub(crate) mod binary;
pub(crate) mod index;
pub(crate) mod kernel;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod softmax;
pub(crate) mod unary;
