//! Neural networks built from the primitives: the [`Module`] trait, layers, an MLP builder,
//! initialisers, losses and metrics.
//!
//! Invariant: a module's parameters are leaf tensors; `parameters()` lists them under stable
//! names (`"0.weight"`, `"0.bias"`, …) in a fixed order, which checkpoints and optimisers use.

pub mod backprop;
pub mod init;
pub mod inspect;
pub mod layers;
pub mod loss;
pub mod metrics;

pub use init::Init;
pub use layers::{mlp, Activation, ActivationLayer, Linear, PRelu, Sequential};
pub use loss::{binary_logistic, cross_entropy, cross_entropy_composed, l2_penalty, mse, mse_half};
pub use metrics::{accuracy, ConfusionMatrix};

use crate::tensor::{Element, Tensor};

/// A differentiable function with named parameters.
///
/// Modules are `Send + Sync` (their parameters are tensors), so a model can be moved to
/// another thread or shared by several threads for inference.
pub trait Module<T: Element>: Send + Sync {
    /// Applies the module to a batch (batch-major: one row per example).
    fn forward(&self, x: &Tensor<T>) -> Tensor<T>;

    /// The parameters under stable names, in a fixed order.
    fn parameters(&self) -> Vec<(String, &Tensor<T>)>;

    /// The parameters, mutably, in the same order as [`Module::parameters`].
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)>;

    /// Switches between training and evaluation behaviour (a no-op for most layers).
    fn set_training(&mut self, _training: bool) {}

    /// Forgets every parameter's accumulated gradient.
    fn zero_grad(&self) {
        for (_, p) in self.parameters() {
            p.zero_grad();
        }
    }
}
