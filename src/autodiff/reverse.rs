//! Reverse mode: one backward sweep from an output fills the adjoint of every node it
//! depends on, in the tape's reverse (topological) order, summing over every path.

use std::rc::Rc;

use crate::autodiff::tape::{self, with_recording, Node, Rule, Var};
use crate::tensor::{Element, LeafState, Tensor, Track};

/// Options of a backward pass; the default is PyTorch's `loss.backward()`.
pub struct BackwardOptions<T: Element> {
    /// The output's cotangent (`None`: ones, only allowed for a one-element output).
    pub cotangent: Option<Tensor<T>>,
    /// Record the backward pass itself, so its results can be differentiated again.
    pub create_graph: bool,
    /// Keep the graph after the pass (implied by `create_graph`).
    pub retain_graph: bool,
}

impl<T: Element> Default for BackwardOptions<T> {
    fn default() -> Self {
        BackwardOptions { cotangent: None, create_graph: false, retain_graph: false }
    }
}

/// The adjoints computed by one backward pass, for every node the output depends on.
pub struct Gradients<T: Element> {
    adjoints: Vec<Option<Tensor<T>>>,
    generations: Vec<u32>,
}

impl<T: Element> Gradients<T> {
    /// ∂output/∂`tensor` (the adjoint s̄ of that value), or `None` if the output does not
    /// depend on it in the recorded graph. Works for leaves and intermediate values.
    pub fn wrt(&self, tensor: &Tensor<T>) -> Option<Tensor<T>> {
        let var = match &tensor.track {
            Track::Constant => return None,
            Track::Node(var) => *var,
            Track::Leaf(state) => state.var.get()?,
        };
        self.get(var)
    }

    /// Like [`Gradients::wrt`] but zeros (of the tensor's shape) where no gradient flows.
    pub fn wrt_or_zeros(&self, tensor: &Tensor<T>) -> Tensor<T> {
        self.wrt(tensor).unwrap_or_else(|| Tensor::zeros(tensor.shape()))
    }

    /// The adjoint of the node at tape position `var`.
    pub fn get(&self, var: Var) -> Option<Tensor<T>> {
        let i = var.index as usize;
        if self.generations.get(i) != Some(&var.generation) {
            return None;
        }
        self.adjoints[i].clone()
    }
}

impl<T: Element> Tensor<T> {
    /// Reverse mode from this one-element output (a loss): returns every adjoint, adds the
    /// gradient of each leaf into its [`Tensor::grad`], and releases the graph.
    ///
    /// # Panics
    /// If the tensor has more than one element (use [`Tensor::backward_with`] with a
    /// cotangent) or is not part of a recorded graph.
    pub fn backward(&self) -> Gradients<T> {
        self.backward_with(BackwardOptions::default())
    }

    /// Reverse mode with options (a given output cotangent, `create_graph`, `retain_graph`).
    pub fn backward_with(&self, options: BackwardOptions<T>) -> Gradients<T> {
        let release = !(options.retain_graph || options.create_graph);
        let (grads, leaves) = sweep(self, options.cotangent, options.create_graph, release);
        for (state, adjoint) in leaves {
            let adjoint = if options.create_graph { adjoint } else { adjoint.detach() };
            let mut slot = state.grad.borrow_mut();
            *slot = Some(match slot.take() {
                Some(previous) => with_recording::<T, _>(options.create_graph, || &previous + &adjoint),
                None => adjoint,
            });
        }
        grads
    }
}

/// ∂`output`/∂`wrt[i]` for each i, without touching accumulated `.grad`s or releasing the
/// graph (like `torch.autograd.grad`). With `create_graph` the results are themselves
/// recorded and can be differentiated again. `None` where the output does not depend on it.
pub fn gradients<T: Element>(
    output: &Tensor<T>,
    wrt: &[&Tensor<T>],
    cotangent: Option<Tensor<T>>,
    create_graph: bool,
) -> Vec<Option<Tensor<T>>> {
    let (grads, _) = sweep(output, cotangent, create_graph, false);
    wrt.iter().map(|t| grads.wrt(t)).collect()
}

/// The adjoints reaching each leaf node, for `.grad` accumulation.
type LeafAdjoints<T> = Vec<(Rc<LeafState<T>>, Tensor<T>)>;

/// The reverse sweep. Rules run with recording set to `create_graph`. With `release`, the
/// tape's nodes are moved out and read in place (no per-node copies), then released.
pub(crate) fn sweep<T: Element>(
    output: &Tensor<T>,
    cotangent: Option<Tensor<T>>,
    create_graph: bool,
    release: bool,
) -> (Gradients<T>, LeafAdjoints<T>) {
    let root = match &output.track {
        Track::Node(var) if tape::is_live::<T>(*var) => *var,
        Track::Leaf(state) => match state.var.get().filter(|v| tape::is_live::<T>(*v)) {
            Some(var) => var,
            None => T::with_tape(|t| t.borrow_mut().resolve(output)).expect("a leaf always resolves"),
        },
        Track::Node(_) => panic!(
            "backward: the graph of this tensor was already released by an earlier backward pass (pass retain_graph to keep it)"
        ),
        Track::Constant => panic!("backward: the tensor is a constant, not the result of recorded operations on a variable"),
    };
    let seed = match cotangent {
        Some(c) => {
            assert!(
                c.shape() == output.shape(),
                "backward: cotangent of shape {:?} for an output of shape {:?}",
                c.shape(),
                output.shape()
            );
            c
        }
        None => {
            assert!(
                output.len() == 1,
                "backward: output of shape {:?} is not a scalar; pass a cotangent",
                output.shape()
            );
            Tensor::ones(output.shape())
        }
    };
    let n = root.index as usize + 1;
    let mut adjoints: Vec<Option<Tensor<T>>> = vec![None; n];
    let mut generations = vec![u32::MAX; n];
    let mut leaves = Vec::new();
    adjoints[n - 1] = Some(seed);
    // Nothing is recorded during a sweep that does not create a graph, so the nodes can be
    // moved out of the tape while the rules run.
    let taken: Option<Vec<Node<T>>> = (release && !create_graph).then(|| tape::take_nodes::<T>());
    with_recording::<T, _>(create_graph, || {
        let mut copy;
        for i in (0..n).rev() {
            let Some(cotangent) = adjoints[i].clone() else { continue };
            let node: &Node<T> = match &taken {
                Some(nodes) => &nodes[i],
                None => {
                    copy = tape::node::<T>(i);
                    &copy
                }
            };
            generations[i] = node.generation;
            let primitive = match &node.rule {
                Rule::Leaf(state) => {
                    leaves.push((state.clone(), cotangent));
                    continue;
                }
                Rule::Static(p) => *p,
                Rule::Shared(p) => p.as_ref(),
            };
            let output = node.output_tensor(i);
            let cotangents = primitive.vjp(&node.inputs, &output, &cotangent);
            for (input, input_cotangent) in node.inputs.iter().zip(cotangents) {
                let (Track::Node(var), Some(c)) = (&input.track, input_cotangent) else { continue };
                // Broadcasting's reduction happens here, once, not in every rule.
                let c = if c.shape() == input.shape() { c } else { c.sum_to(input.shape()) };
                let slot = &mut adjoints[var.index as usize];
                *slot = Some(match slot.take() {
                    Some(previous) => &previous + &c,
                    None => c,
                });
            }
        }
    });
    match taken {
        Some(nodes) => tape::restore_released::<T>(nodes),
        None if release => tape::release_tape::<T>(),
        None => {}
    }
    (Gradients { adjoints, generations }, leaves)
}
