//! The primitives. Each file holds, for its operations, the forward computation, the reverse
//! rule (VJP), the forward rule (JVP) and the user-facing `Tensor` method, side by side.
//! Elementwise functions are declared once each in [`elementwise`], and everything else about
//! them (expression language, traces, symbolic rules, activations) is derived from there.

pub mod attention;
pub(crate) mod conv;
pub(crate) mod convolution;
pub(crate) mod create;
pub mod elementwise;
pub(crate) mod index;
pub(crate) mod kernel;
pub(crate) mod linalg;
pub(crate) mod matmul;
pub(crate) mod recurrent;
pub(crate) mod reduce;
pub(crate) mod shape;
pub(crate) mod softmax;

pub use attention::{attention_mask, attention_weights, AttentionOptions};
pub use conv::{AvgPoolOptions, PadMode, Window2d};
pub use elementwise::{functions, Binary, Function, Unary, Value};
pub use recurrent::Cell;
