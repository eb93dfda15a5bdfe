//! Neural networks built from the primitives: the [`Module`] trait, layers, architectures
//! that can be saved with their weights, initialisers, losses and metrics.
//!
//! Invariant: a module's parameters are leaf tensors visited under stable names
//! (`"0.weight"`, `"0.bias"`, …) in a fixed order, which state dicts and optimisers use.

pub mod arch;
pub mod attention;
pub mod generate;
pub mod image;
pub mod init;
pub mod inspect;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod module;
pub mod network;
pub mod norm;
pub mod recurrent;

pub use attention::{
    sinusoidal_positions, AttentionMasks, FeedForwardActivation, MultiheadAttention, PositionalEmbedding,
    SinusoidalPositions, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer, TransformerOptions,
};
pub use generate::{pick_token, SampleOptions};
pub use image::{AvgPool2d, Conv2d, Flatten, MaxPool2d, Padding, Unflatten};
pub use init::Init;
pub use layers::{mlp, Activation, ActivationLayer, Linear, PRelu, Sequential};
pub use loss::{
    binary_logistic, cross_entropy, cross_entropy_composed, cross_entropy_with, l2_penalty, mse, mse_half,
    CrossEntropyOptions, CrossEntropyTarget, Reduction,
};
pub use metrics::{accuracy, ConfusionMatrix};
pub use module::{ForwardError, LoadReport, Module, StateDictError};
pub use network::{Architecture, LayerSpec, Network, NetworkError};
pub use norm::{with_random_key, with_random_key_from_row, BatchNorm, Dropout, LayerNorm};
pub use recurrent::{CellKind, CellWeights, Embedding, Recurrent, RecurrentOptions, RecurrentState};
