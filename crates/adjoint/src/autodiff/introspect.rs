//! Looking inside a recorded graph, for teaching tools and debugging: every node an output
//! depends on, in creation (topological) order, with its operation, parameters, inputs and
//! value; each node's local derivatives; and the tangent or adjoint of every node after one
//! forward or reverse sweep. Nothing here changes or frees the graph.
//!
//! ```
//! use adjoint::{autodiff::introspect, Tensor};
//! let (x, y) = (Tensor::<f64>::var(2.0), Tensor::<f64>::var(8.0));
//! let f = &x * &y + x.sin();
//! let nodes = introspect::graph(&[&f]).unwrap();
//! let ops: Vec<&str> = nodes.iter().map(|n| n.op).collect();
//! assert_eq!(ops, ["leaf", "leaf", "mul", "sin", "add"]);
//! let adjoints = introspect::adjoints(&f).unwrap();
//! assert_eq!(adjoints[&y.node_id().unwrap()].item(), 2.0); // ∂f/∂y = x
//! ```

use std::collections::HashMap;

use crate::autodiff::forward::tangent_sweep;
use crate::autodiff::graph::{no_grad, Record};
use crate::autodiff::reverse::{sweep, Keep};
use crate::autodiff::subgraph::{GraphError, Subgraph};
use crate::tensor::{Element, Tensor};

/// An input of a node: another node of the view, or a constant.
#[derive(Clone)]
pub enum Input<T: Element> {
    /// The node at this position of the view.
    Node(usize),
    /// A constant (not tracked) value.
    Constant(Tensor<T>),
}

/// One node of a recorded graph.
pub struct Node<T: Element> {
    /// The node's creation number (see [`Tensor::node_id`]).
    pub id: u64,
    /// The primitive's name, or `"leaf"` for a variable.
    pub op: &'static str,
    /// The primitive's constant parameters (the n of `powi`), if any.
    pub params: Vec<f64>,
    /// The inputs, in the primitive's order (none for a leaf).
    pub inputs: Vec<Input<T>>,
    /// The value (a plain constant; for a leaf, its value when the view was taken).
    pub value: Tensor<T>,
    /// Where in the program the value was made (`file:line:column`).
    pub location: String,
    record: Option<(Record<T>, Tensor<T>)>,
}

impl<T: Element> Node<T> {
    /// Whether this is a variable rather than a recorded operation.
    pub fn is_leaf(&self) -> bool {
        self.record.is_none()
    }

    /// The vector-Jacobian product of this node's primitive alone: the cotangent reaching
    /// each input for `cotangent` on the output (nothing is recorded). With a cotangent of
    /// ones on a scalar output these are the local partial derivatives ∂sᵢ/∂(input k).
    pub fn local_vjp(&self, cotangent: &Tensor<T>) -> Vec<Option<Tensor<T>>> {
        match &self.record {
            None => Vec::new(),
            Some((record, output)) => {
                no_grad(|| record.rule.primitive().vjp(&record.inputs, output, cotangent).into_iter().collect())
            }
        }
    }
}

/// Every node `outputs` depend on, inputs before users.
///
/// # Errors
/// If a node on the way was freed by a backward pass.
pub fn graph<T: Element>(outputs: &[&Tensor<T>]) -> Result<Vec<Node<T>>, GraphError> {
    let graph = Subgraph::collect(outputs)?;
    // A leaf keeps no record: its value is what its users (or the outputs) hold.
    let mut leaf_values: HashMap<u64, Tensor<T>> = HashMap::new();
    let held = graph.entries.iter().filter_map(|e| e.record.as_ref()).flat_map(|r| r.inputs.iter());
    for t in outputs.iter().copied().chain(held) {
        if let Some(id) = t.node_id() {
            leaf_values.entry(id).or_insert_with(|| t.detach());
        }
    }
    Ok(graph
        .entries
        .iter()
        .map(|e| {
            let (op, params, inputs, value, record) = match &e.record {
                None => {
                    let value = leaf_values.get(&e.id()).cloned().unwrap_or_else(|| Tensor::scalar(T::nan()));
                    ("leaf", Vec::new(), Vec::new(), value, None)
                }
                Some(record) => {
                    let p = record.rule.primitive();
                    let inputs = record
                        .inputs
                        .iter()
                        .zip(&e.inputs)
                        .map(|(t, position)| match position {
                            Some(j) => Input::Node(*j as usize),
                            None => Input::Constant(t.clone()),
                        })
                        .collect();
                    let output = e.output().expect("an operation has a record");
                    (p.name(), p.parameters(), inputs, output.detach(), Some((record.clone(), output)))
                }
            };
            Node { id: e.id(), op, params, inputs, value, location: e.node.location.to_string(), record }
        })
        .collect())
}

/// The tangent of every node `outputs` depend on, by creation number, after one forward
/// sweep from `seeds` (nodes whose tangent is zero are absent).
///
/// # Errors
/// If a node on the way was freed by a backward pass.
pub fn tangents<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
) -> Result<HashMap<u64, Tensor<T>>, GraphError> {
    Ok(tangent_sweep(outputs, seeds, false)?.1.into_iter().collect())
}

/// The adjoint ∂`output`/∂sᵢ of every node sᵢ the one-element `output` depends on, by
/// creation number, after one reverse sweep (the graph is kept; nothing is accumulated).
///
/// # Errors
/// If `output` is a constant or a node on the way was freed by a backward pass.
pub fn adjoints<T: Element>(output: &Tensor<T>) -> Result<HashMap<u64, Tensor<T>>, GraphError> {
    if !output.is_tracked() {
        return Err(GraphError::NotTracked("adjoints"));
    }
    let seed = Tensor::ones(output.shape());
    Ok(sweep(&[(output, seed)], false, false, Keep::All)?.adjoints.into_iter().collect())
}
