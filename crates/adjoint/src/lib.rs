//! # adjoint
//!
//! Automatic differentiation and neural-network training in pure Rust.
//!
//! - [`Tensor`]: n-d arrays of `f32`/`f64` that record the primitives applied to them in a
//!   graph owned by the values (define-by-run: loops and branches just work). Tensors are
//!   `Send + Sync`.
//! - Reverse mode ([`Tensor::backward`], [`gradients`]) pulls adjoints from an output in one
//!   sweep; forward mode ([`jvp_sweep`]) pushes tangents from seeded inputs in one sweep.
//! - Every rule is written over tensors, so recording a backward pass (`create_graph`) gives
//!   derivatives of any order; [`autodiff::transforms`] nest (`grad(grad(f))`).
//! - [`check_gradients`] and [`autodiff::check_grads`] compare derivatives with finite
//!   differences, the latter recursively to any order as JAX's `check_grads`.
//!
//! ```
//! use adjoint::Tensor;
//! // f(x, y) = (x·y + sin x + 4)·(3y² + 6) at (2, 8), as on the lecture slides.
//! let (x, y) = (Tensor::<f64>::var(2.0), Tensor::<f64>::var(8.0));
//! let f = (&x * &y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0);
//! let g = f.backward();
//! assert!((g.wrt(&y).unwrap().item() - 1399.6462764).abs() < 1e-6);
//! ```
//!
//! # A training loop, saving, loading and inference
//!
//! ```
//! use adjoint::nn::{cross_entropy, Activation, Architecture, Module, Network};
//! use adjoint::optim::Optimizer;
//! use adjoint::Tensor;
//! // XOR with a 2-8-2 network.
//! let x = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]);
//! let labels = [0, 1, 1, 0];
//! let mut net = Network::<f32>::new(Architecture::mlp(&[2, 8, 2], Activation::TANH, None), 0).unwrap();
//! let mut opt = Optimizer::adam(0.05);
//! for _ in 0..200 {
//!     cross_entropy(&net.forward(&x), &labels).backward();
//!     opt.step(&mut net); // updates every parameter from its gradient
//!     net.zero_grad();
//! }
//! // Save (architecture, weights and input standardisation in one safetensors file, with
//! // PyTorch's names and layout), load, and predict without recording anything.
//! let path = std::env::temp_dir().join("xor.safetensors");
//! net.save(&path).unwrap();
//! let loaded = Network::<f32>::load(&path).unwrap();
//! let features = adjoint::ndarray::Array2::from_shape_vec((4, 2), x.to_vec()).unwrap();
//! let predicted = loaded.predict(&features).argmax_rows();
//! assert_eq!(predicted, labels);
//! ```
//!
//! For real datasets, [`data::Dataset`] holds examples (classification or regression) with
//! seeded, stratified splits and mini-batches, and [`train::Trainer`] runs epochs, evaluation
//! and checkpoints.
//!
//! # Threads and memory
//!
//! Matrix products and large elementwise kernels are split over the threads of the rayon pool
//! they are called from (the global one unless the caller is inside another); one thread
//! never splits. From a thread outside the pool, such as `main`, only larger sections are
//! split, since waking the pool's threads costs tens of µs. A product's last bits depend on
//! how it was split, so results repeat exactly for the same thread count and the same
//! calling thread (on the pool or not), and may differ in rounding otherwise. Elementwise
//! kernels, sums over the batch axis and optimiser updates give the same bits on any thread
//! count, and their AVX2 and AVX-512 builds (chosen at run time) the same bits as the
//! baseline build. To use fewer threads, run the loop in a pool of your own:
//!
//! ```
//! let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
//! pool.install(|| {
//!     // the training loop
//! });
//! ```
//!
//! Called from a user's `main` (outside any pool), a parallel kernel runs its first part on
//! the calling thread while the pool's threads run the others, so a loop in plain `main`
//! runs about as fast as on the pool; `pool.install` is not needed for speed.
//!
//! A step's large buffers are reused, not asked of the system allocator again: when a value
//! is dropped its buffer goes to a pool keyed by length ([`tensor::pool`]), and kernels take
//! their outputs from it, so no allocator tuning is needed (glibc's defaults map and unmap
//! large buffers, which cost a plain `main` 15.7 ms per step of 784-1024-1024-10 at batch 256
//! against 9.9 ms with the pool, same build and run). The pool keeps about one step's
//! buffers, frees lengths no longer asked for, and [`tensor::pool::release`] empties it.
//!
//! # How long a graph lives
//!
//! Each result holds its graph node, and each node holds its inputs, so a graph lives exactly
//! as long as some value needs it — there is no global tape to release:
//!
//! - a backward pass frees the part of the graph it used (unless `retain_graph`); other
//!   graphs, even ones sharing leaves with it, are untouched, and gradients of several losses
//!   accumulate into the leaves' `.grad()` as in PyTorch (two losses computed from one
//!   forward pass share its graph: the first backward needs `retain_graph`, as in PyTorch);
//! - differentiating through a value whose graph a backward pass freed is an error that says
//!   so ([`GraphError::Freed`]), never a silent constant; [`Tensor::detach`] is the explicit
//!   way to make a constant;
//! - dropping the last value that depends on a graph frees it: an inference loop needs no
//!   [`no_grad`] to stay in bounded memory ([`no_grad`] still saves the recording work).
//!
//! ```
//! use adjoint::{Tensor, BackwardOptions};
//! let x = Tensor::<f64>::var(0.5);
//! let (l1, l2) = (x.sqr(), x.sin());
//! l1.backward();
//! l2.backward(); // a second loss: its own graph, untouched by the first pass
//! assert!((x.grad().unwrap().item() - (1.0 + 0.5f64.cos())).abs() < 1e-15);
//!
//! let h = x.tanh();
//! h.backward(); // frees tanh's record
//! assert!((&h * &h).try_backward().is_err()); // "freed by an earlier backward pass: …"
//!
//! let h = x.tanh();
//! h.backward_with(BackwardOptions { retain_graph: true, ..Default::default() });
//! (&h * &h).backward(); // kept: fine
//! ```

#![warn(missing_docs)]

pub mod autodiff;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod expr;
pub mod io;
pub mod json;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod scalar;
pub mod tensor;
pub mod train;

/// The random-number crate adjoint's initialisers and data loaders take, re-exported so that
/// users need not pin a matching version (`adjoint::rand::SeedableRng`).
pub use rand;

/// The array crate tensors convert to and from, re-exported for the same reason.
pub use ndarray;

/// A textual specification (an activation, an initialiser, a schedule) that could not be
/// understood; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

pub use autodiff::{
    check_gradients, check_gradients_directional, detect_anomaly, gradients, gradients_or_zeros, jvp_sweep, no_grad,
    BackwardOptions, Cotangents, GradCheckReport, Gradients, GraphError, Primitive,
};
pub use ops::elementwise::Scalar;
pub use tensor::{Element, Tensor};
