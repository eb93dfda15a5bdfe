//! The part of the graph that some values reach, in creation (topological) order: what every
//! sweep, trace and drawing walks.
//!
//! Collecting is a depth-first walk from the outputs through the recorded inputs; the nodes
//! found are then sorted by creation number, which puts every input before its users. No
//! sweep looks at what kind of operation a node holds.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use smallvec::SmallVec;

use crate::autodiff::graph::{lock, Node, NodeKind, OpState, Record};
use crate::tensor::{Element, Tensor};

/// Why a graph could not be differentiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A value on the path was made by an operation whose graph an earlier backward pass
    /// freed.
    #[error(
        "the graph behind this value was freed by an earlier backward pass: `{op}` (recorded at {location}) \
         can no longer be differentiated through; pass `retain_graph` to the earlier backward pass to keep \
         the graph, or compute the value again"
    )]
    Freed {
        /// The operation whose record is gone.
        op: &'static str,
        /// Where it was called in the program.
        location: String,
    },
    /// The value differentiated is a constant, not computed from a variable.
    #[error("{0}: the tensor is a constant, not the result of recorded operations on a variable")]
    NotTracked(&'static str),
}

impl GraphError {
    /// The error for meeting `node`, whose record an earlier pass freed.
    pub(crate) fn freed<T: Element>(node: &Node<T>) -> Self {
        let (op, location) = node.freed_cause();
        GraphError::Freed { op, location: location.to_string() }
    }
}

/// One node of a collected subgraph.
pub(crate) struct Entry<T: Element> {
    pub(crate) node: Arc<Node<T>>,
    /// The node's record (taken or copied); `None` for leaves, or once a sweep consumed it.
    pub(crate) record: Option<Record<T>>,
    /// For each recorded input, the position of its entry (`None` for constants).
    pub(crate) inputs: SmallVec<[Option<u32>; 2]>,
}

impl<T: Element> Entry<T> {
    pub(crate) fn id(&self) -> u64 {
        self.node.id
    }

    /// The output as a tracked tensor (rules that use their output record a dependence on it
    /// when the sweep itself is recorded).
    pub(crate) fn output(&self) -> Option<Tensor<T>> {
        self.record.as_ref().map(|r| Tensor { data: r.output.clone(), node: Some(self.node.clone()) })
    }
}

/// An entry with the ids of its inputs, before positions are known.
type Found<T> = (Entry<T>, SmallVec<[Option<u64>; 2]>);

/// The nodes some outputs reach, inputs before users.
pub(crate) struct Subgraph<T: Element> {
    pub(crate) entries: Vec<Entry<T>>,
}

impl<T: Element> Subgraph<T> {
    /// Collects what `outputs` reach, copying the records (the graph is kept).
    pub(crate) fn collect(outputs: &[&Tensor<T>]) -> Result<Self, GraphError> {
        let mut seen: FxHashSet<u64> = FxHashSet::default();
        let mut stack: Vec<Arc<Node<T>>> = Vec::new();
        for o in outputs {
            if let Some(node) = &o.node {
                if seen.insert(node.id) {
                    stack.push(node.clone());
                }
            }
        }
        // Entries in discovery order, with the ids of their inputs.
        let mut found: Vec<Found<T>> = Vec::new();
        while let Some(node) = stack.pop() {
            let record = match &node.kind {
                NodeKind::Leaf { .. } => None,
                NodeKind::Op(_) => Some(node.record().ok_or_else(|| GraphError::freed(&node))?),
            };
            let mut input_ids = SmallVec::new();
            if let Some(r) = &record {
                for input in &r.inputs {
                    input_ids.push(input.node.as_ref().map(|n| n.id));
                    if let Some(n) = &input.node {
                        if seen.insert(n.id) {
                            stack.push(n.clone());
                        }
                    }
                }
            }
            found.push((Entry { node, record, inputs: SmallVec::new() }, input_ids));
        }
        // Creation order: sort small keys, not the entries themselves.
        let mut keys: Vec<(u64, u32)> = found.iter().enumerate().map(|(i, (e, _))| (e.node.id, i as u32)).collect();
        keys.sort_unstable();
        let ids: Vec<u64> = keys.iter().map(|&(id, _)| id).collect();
        let mut slots: Vec<Option<Found<T>>> = found.into_iter().map(Some).collect();
        let entries = keys
            .iter()
            .map(|&(_, i)| {
                let (mut entry, input_ids) = slots[i as usize].take().expect("each entry is placed once");
                entry.inputs = input_ids
                    .iter()
                    .map(|id| id.map(|id| ids.binary_search(&id).expect("inputs are collected") as u32))
                    .collect();
                entry
            })
            .collect();
        Ok(Subgraph { entries })
    }

    /// The position of the entry with creation number `id`.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.node.id).ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `outputs` depend on a tracked value from outside a scope that began at creation
/// number `mark` and whose own variables are the leaves `own`: a node older than the scope,
/// or a leaf the scope did not make. Walks only nodes made inside the scope.
pub(crate) fn reaches_outside<T: Element>(outputs: &[&Tensor<T>], mark: u64, own: &[u64]) -> bool {
    let mut seen: FxHashSet<u64> = FxHashSet::default();
    let mut stack: Vec<Arc<Node<T>>> = outputs.iter().filter_map(|o| o.node.clone()).collect();
    while let Some(node) = stack.pop() {
        if node.id < mark {
            return true;
        }
        if !seen.insert(node.id) {
            continue;
        }
        match &node.kind {
            NodeKind::Leaf { .. } => {
                if !own.contains(&node.id) {
                    return true;
                }
            }
            NodeKind::Op(m) => match &*lock(m) {
                OpState::Recorded(r) => stack.extend(r.inputs.iter().filter_map(|t| t.node.clone())),
                // A freed node made inside the scope: its inputs are unknown, assume outside.
                _ => return true,
            },
        }
    }
    false
}
