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
//! never splits. Run a training loop *on* the pool, as [`train::Trainer`] does, rather than
//! from a thread outside it such as `main`: from outside, each split section is handed over
//! to the pool while the caller sleeps, so only large sections are split there. The lecture
//! network's step (784-100-10, batch 500, 2 threads) measured 1.20 ms on the pool and
//! 1.25–1.30 ms from `main` (before later speed-ups brought it to 1.04 ms on the pool); a 20-64-64-4 network on batches of 4000, 3.9 ms on the pool
//! and 4.1–4.3 ms from `main`. A product's last bits depend on how it was split, so results
//! repeat exactly for the same thread count and the same calling thread (on the pool or
//! not), and may differ in rounding otherwise. Elementwise kernels, sums over the batch axis
//! and optimiser updates give the same bits on any thread count, and their AVX2 build
//! (chosen at run time on x86-64 CPUs that have it) the same bits as the baseline build.
//!
//! ```
//! let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
//! pool.install(|| {
//!     // the training loop
//! });
//! ```
//!
//! A step allocates its large buffers afresh and frees them. glibc's allocator, by default,
//! maps buffers above a threshold that adapts only as they are freed, and hands freed memory
//! back to the system, so a program's first large network can pay page faults on every step
//! (784-1024-1024-10, batch 256, 2 threads: 16.4–17.1 ms against 13.6–14.0). The `adjoint`
//! binary sets `mallopt(M_MMAP_THRESHOLD, 32 MiB)` and `mallopt(M_TRIM_THRESHOLD, 256 MiB)`
//! at start; a program of your own can do the same, or use an allocator such as mimalloc or
//! jemalloc (PyTorch's performance guide gives the same advice).
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
pub use tensor::{Element, Tensor};
