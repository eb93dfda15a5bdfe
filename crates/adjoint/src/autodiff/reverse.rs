//! Reverse mode: one backward sweep from an output fills the adjoint s̄ᵢ = ∂out/∂sᵢ of every
//! node it depends on, in reverse creation (topological) order, summing over every path.
//!
//! A sweep visits only the nodes its output reaches, so its cost follows the output's graph,
//! not whatever else was recorded. Unless the graph is retained, the sweep frees it as it
//! goes: each node's record is dropped once its rule has run, and an intermediate adjoint is
//! dropped once passed on. A sweep that meets a node an earlier pass freed stops with
//! [`GraphError::Freed`]; leaves' `.grad` are only updated by a sweep that completed.

use std::collections::BinaryHeap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::autodiff::graph::{lock, with_recording, Node, NodeKind};
use crate::autodiff::subgraph::GraphError;
use crate::tensor::shape::{broadcasts_to, same_shape};
use crate::tensor::{Element, Tensor};

/// Options of a backward pass; the default is PyTorch's `loss.backward()`.
pub struct BackwardOptions<T: Element> {
    /// The output's cotangent (`None`: ones, only allowed for a one-element output).
    pub cotangent: Option<Tensor<T>>,
    /// Record the backward pass itself, so its results can be differentiated again.
    pub create_graph: bool,
    /// Keep the graph after the pass (implied by `create_graph`).
    pub retain_graph: bool,
    /// Also keep the adjoint of every intermediate value, for [`Gradients::wrt`] (costs the
    /// memory of all of them; by default only the leaves' adjoints are kept).
    pub keep_intermediate: bool,
}

impl<T: Element> Default for BackwardOptions<T> {
    fn default() -> Self {
        BackwardOptions { cotangent: None, create_graph: false, retain_graph: false, keep_intermediate: false }
    }
}

/// The adjoints computed by one backward pass.
pub struct Gradients<T: Element> {
    adjoints: FxHashMap<u64, Tensor<T>>,
}

impl<T: Element> Gradients<T> {
    /// ∂output/∂`tensor` (the adjoint s̄ of that value), or `None` if the output does not
    /// depend on it or the pass did not keep it. [`Tensor::backward`] keeps the leaves'
    /// adjoints; intermediate values need `keep_intermediate` (or use [`gradients`]).
    pub fn wrt(&self, tensor: &Tensor<T>) -> Option<Tensor<T>> {
        self.adjoints.get(&tensor.node.as_ref()?.id).cloned()
    }

    /// Like [`Gradients::wrt`] but zeros (of the tensor's shape) where no gradient flows.
    pub fn wrt_or_zeros(&self, tensor: &Tensor<T>) -> Tensor<T> {
        self.wrt(tensor).unwrap_or_else(|| Tensor::zeros(tensor.shape()))
    }

    /// The adjoint of the node with creation number `id` (see [`Tensor::node_id`]).
    pub fn by_id(&self, id: u64) -> Option<Tensor<T>> {
        self.adjoints.get(&id).cloned()
    }
}

impl<T: Element> Tensor<T> {
    /// Reverse mode from this one-element output (a loss): adds the gradient of every leaf it
    /// depends on into the leaf's [`Tensor::grad`], frees the graph it used, and returns the
    /// leaves' adjoints.
    ///
    /// # Panics
    /// If the tensor has more than one element (use [`Tensor::backward_with`] with a
    /// cotangent), is a constant, or depends on a graph an earlier pass freed (see
    /// [`Tensor::try_backward`]).
    #[track_caller]
    pub fn backward(&self) -> Gradients<T> {
        self.backward_with(BackwardOptions::default())
    }

    /// Like [`Tensor::backward`], returning an error instead of panicking when the graph was
    /// freed or the tensor is a constant.
    pub fn try_backward(&self) -> Result<Gradients<T>, GraphError> {
        self.try_backward_with(BackwardOptions::default())
    }

    /// Reverse mode with options (a given output cotangent, `create_graph`, `retain_graph`).
    ///
    /// # Panics
    /// As [`Tensor::backward`].
    #[track_caller]
    pub fn backward_with(&self, options: BackwardOptions<T>) -> Gradients<T> {
        self.try_backward_with(options).unwrap_or_else(|e| panic!("backward: {e}"))
    }

    /// Reverse mode with options, returning an error when the graph was freed or the tensor
    /// is a constant.
    pub fn try_backward_with(&self, options: BackwardOptions<T>) -> Result<Gradients<T>, GraphError> {
        let release = !(options.retain_graph || options.create_graph);
        let seed = seed_for(self, options.cotangent, "backward")?;
        let keep = if options.keep_intermediate { Keep::All } else { Keep::Leaves };
        let swept = sweep(&[(self, seed)], options.create_graph, release, keep)?;
        for (node, adjoint) in &swept.leaves {
            let NodeKind::Leaf { grad } = &node.kind else { continue };
            let adjoint = if options.create_graph { adjoint.clone() } else { adjoint.detach() };
            let mut slot = lock(grad);
            *slot = Some(match slot.take() {
                Some(previous) => with_recording(options.create_graph, || &previous + &adjoint),
                None => adjoint,
            });
        }
        Ok(Gradients { adjoints: swept.adjoints })
    }
}

/// The seed of a sweep from `output`: the given cotangent or ones.
fn seed_for<T: Element>(
    output: &Tensor<T>,
    cotangent: Option<Tensor<T>>,
    op: &'static str,
) -> Result<Tensor<T>, GraphError> {
    if !output.is_tracked() {
        return Err(GraphError::NotTracked(op));
    }
    Ok(match cotangent {
        Some(c) => {
            assert!(
                same_shape(c.shape(), output.shape()),
                "{op}: cotangent of shape {:?} for an output of shape {:?}",
                c.shape(),
                output.shape()
            );
            c
        }
        None => {
            assert!(output.len() == 1, "{op}: output of shape {:?} is not a scalar; pass a cotangent", output.shape());
            Tensor::ones(output.shape())
        }
    })
}

/// ∂`output`/∂`wrt[i]` for each i, without touching accumulated `.grad`s or freeing the graph
/// (like `torch.autograd.grad` with `retain_graph`). `wrt` may hold leaves or intermediate
/// values. With `create_graph` the results are themselves recorded and can be differentiated
/// again. `None` where the output does not depend on it (see [`gradients_or_zeros`]).
///
/// # Panics
/// If the output is a constant or its graph was freed (see [`try_gradients`]), or on a
/// cotangent of the wrong shape.
#[track_caller]
pub fn gradients<T: Element>(
    output: &Tensor<T>,
    wrt: &[&Tensor<T>],
    cotangent: Option<Tensor<T>>,
    create_graph: bool,
) -> Vec<Option<Tensor<T>>> {
    try_gradients(output, wrt, cotangent, create_graph).unwrap_or_else(|e| panic!("gradients: {e}"))
}

/// Like [`gradients`], with zeros of the right shape where the output does not depend on an
/// input (PyTorch's `allow_unused` with `materialize_grads`).
#[track_caller]
pub fn gradients_or_zeros<T: Element>(
    output: &Tensor<T>,
    wrt: &[&Tensor<T>],
    cotangent: Option<Tensor<T>>,
    create_graph: bool,
) -> Vec<Tensor<T>> {
    gradients(output, wrt, cotangent, create_graph)
        .into_iter()
        .zip(wrt)
        .map(|(g, x)| g.unwrap_or_else(|| Tensor::zeros(x.shape())))
        .collect()
}

/// Like [`gradients`], returning an error when the output is a constant or its graph was
/// freed.
pub fn try_gradients<T: Element>(
    output: &Tensor<T>,
    wrt: &[&Tensor<T>],
    cotangent: Option<Tensor<T>>,
    create_graph: bool,
) -> Result<Vec<Option<Tensor<T>>>, GraphError> {
    let seed = seed_for(output, cotangent, "gradients")?;
    multi_gradients(&[(output, seed)], wrt, create_graph)
}

/// Gradients of Σᵢ ⟨seedᵢ, outputᵢ⟩ with respect to `wrt`, in one sweep over several outputs
/// (the graph is retained). Untracked outputs contribute nothing.
pub(crate) fn multi_gradients<T: Element>(
    roots: &[(&Tensor<T>, Tensor<T>)],
    wrt: &[&Tensor<T>],
    create_graph: bool,
) -> Result<Vec<Option<Tensor<T>>>, GraphError> {
    let ids: Vec<u64> = wrt.iter().filter_map(|t| t.node.as_ref().map(|n| n.id)).collect();
    let roots: Vec<(&Tensor<T>, Tensor<T>)> =
        roots.iter().filter(|(o, _)| o.is_tracked()).map(|(o, s)| (*o, s.clone())).collect();
    if roots.is_empty() {
        return Ok(vec![None; wrt.len()]);
    }
    let swept = sweep(&roots, create_graph, false, Keep::Ids(&ids))?;
    Ok(wrt.iter().map(|t| t.node.as_ref().and_then(|n| swept.adjoints.get(&n.id).cloned())).collect())
}

/// Which adjoints a sweep hands back.
pub(crate) enum Keep<'a> {
    /// The leaves' (a backward pass).
    Leaves,
    /// Those of the nodes with these ids; nodes older than all of them are not visited.
    Ids(&'a [u64]),
    /// Every node's (traces, `keep_intermediate`).
    All,
}

/// What a sweep found.
pub(crate) struct Swept<T: Element> {
    /// Kept adjoints by node id.
    pub(crate) adjoints: FxHashMap<u64, Tensor<T>>,
    /// The leaves reached and their adjoints (for `.grad` accumulation).
    pub(crate) leaves: Vec<(Arc<Node<T>>, Tensor<T>)>,
}

/// The reverse sweep from several roots, each with its seed cotangent. Rules run with
/// recording set to `create_graph`. With `release`, each node's record is taken out as the
/// sweep reaches it and dropped as soon as its rule has run.
///
/// Order: a max-heap of creation numbers holds the frontier (nodes whose adjoint is being
/// summed). The node popped has the largest id left, so every user of it — all have larger
/// ids, and all are reachable through nodes still in the heap — has already passed on its
/// contribution: its adjoint is complete. This is reverse topological order from the
/// creation numbers alone; the heap and the adjoints held at any time are as wide as the
/// graph, not as long, and nothing is sorted.
pub(crate) fn sweep<T: Element>(
    roots: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
    release: bool,
    keep: Keep<'_>,
) -> Result<Swept<T>, GraphError> {
    // A node older than every requested value cannot lead to one: do not descend below it.
    let floor = match &keep {
        Keep::Ids(ids) => ids.iter().copied().min().unwrap_or(u64::MAX),
        Keep::Leaves | Keep::All => 0,
    };
    let mut heap: BinaryHeap<u64> = BinaryHeap::new();
    let mut frontier: FxHashMap<u64, Slot<T>> = FxHashMap::default();
    for (output, seed) in roots {
        let Some(node) = &output.node else { continue };
        let slot = frontier.entry(node.id).or_insert_with(|| {
            heap.push(node.id);
            (node.clone(), None)
        });
        accumulate(&mut slot.1, seed.clone());
    }
    let mut swept = Swept { adjoints: FxHashMap::default(), leaves: Vec::new() };
    let anomaly = crate::autodiff::graph::anomaly_mode();
    // The nodes this pass freed, to mark if it has to stop (so later passes name the cause).
    let mut freed: Vec<Arc<Node<T>>> = Vec::new();
    let result = with_recording(create_graph, || {
        while let Some(id) = heap.pop() {
            let (node, cotangent) = frontier.remove(&id).expect("every heap entry has a slot");
            let Some(cotangent) = cotangent else { continue };
            let kept = match &keep {
                Keep::Leaves => node.is_leaf(),
                Keep::Ids(ids) => ids.contains(&id),
                Keep::All => true,
            };
            if kept {
                swept.adjoints.insert(id, cotangent.clone());
            }
            if node.is_leaf() {
                swept.leaves.push((node, cotangent));
                continue;
            }
            let record = if release { node.take_record() } else { node.record() };
            let Some(record) = record else {
                return Err(node.freed_cause());
            };
            if release {
                freed.push(node.clone());
            }
            let primitive = record.rule.primitive();
            let output = Tensor { data: record.output.clone(), node: Some(node.clone()) };
            let cotangents = primitive.vjp(&record.inputs, &output, &cotangent);
            assert!(
                cotangents.len() == record.inputs.len(),
                "vjp of {}: {} cotangents for {} inputs",
                primitive.name(),
                cotangents.len(),
                record.inputs.len()
            );
            for (input, c) in record.inputs.iter().zip(cotangents) {
                let (Some(input_node), Some(c)) = (&input.node, c) else { continue };
                if input_node.id < floor {
                    continue;
                }
                if anomaly {
                    crate::autodiff::anomaly::check_backward(primitive.name(), &cotangent, &c, node.location);
                }
                // Broadcasting's reduction happens here, once, not in every rule.
                let c = if same_shape(c.shape(), input.shape()) {
                    c
                } else {
                    assert!(
                        broadcasts_to(input.shape(), c.shape()),
                        "vjp of {}: cotangent of shape {:?} for an input of shape {:?}",
                        primitive.name(),
                        c.shape(),
                        input.shape()
                    );
                    c.sum_to(input.shape())
                };
                let slot = frontier.entry(input_node.id).or_insert_with(|| {
                    heap.push(input_node.id);
                    (input_node.clone(), None)
                });
                accumulate(&mut slot.1, c);
            }
            // `record` (inputs and output) is dropped here: a released graph is freed as the
            // sweep passes.
        }
        Ok(())
    });
    if let Err(cause) = result {
        for node in &freed {
            node.mark_stopped(cause);
        }
        return Err(GraphError::Freed { op: cause.0, location: cause.1.to_string() });
    }
    Ok(swept)
}

/// A frontier node and the sum of the cotangents reaching it so far.
type Slot<T> = (Arc<Node<T>>, Option<Tensor<T>>);

fn accumulate<T: Element>(slot: &mut Option<Tensor<T>>, c: Tensor<T>) {
    *slot = Some(match slot.take() {
        Some(previous) => &previous + &c,
        None => c,
    });
}
