//! The tape: an append-only list of recorded primitive applications, one per thread and
//! element type.
//!
//! Invariants:
//! - nodes are appended as operations run, so an input's node always precedes its user's:
//!   the tape's order is a topological order. The reverse sweep walks it backwards and the
//!   forward sweep forwards; neither inspects what kind of operation a node holds;
//! - a [`Var`] names a node by index and by the tape generation it was made in. Releasing
//!   the tape (after a backward pass) or truncating it bumps the generation, so a tensor that
//!   pointed into a released graph is recognised as stale and treated as a constant;
//! - nothing is recorded while recording is off ([`no_grad`]) or when no input is tracked.

use std::rc::Rc;

use smallvec::SmallVec;

use crate::autodiff::primitive::Primitive;
use crate::tensor::{Data, Element, LeafState, Tensor, Track};

/// A node's position on the tape, valid while its generation is current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Var {
    /// The node's index on the tape (its step number in a trace, from 0).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// How a node was made: a leaf, or a primitive (stateless ones are not allocated).
#[derive(Clone)]
pub(crate) enum Rule<T: Element> {
    Leaf(Rc<LeafState<T>>),
    Static(&'static dyn Primitive<T>),
    Shared(Rc<dyn Primitive<T>>),
}

impl<T: Element> Rule<T> {
    pub(crate) fn shared(p: impl Primitive<T>) -> Self {
        Rule::Shared(Rc::new(p))
    }

    pub(crate) fn primitive(&self) -> Option<&dyn Primitive<T>> {
        match self {
            Rule::Leaf(_) => None,
            Rule::Static(p) => Some(*p),
            Rule::Shared(p) => Some(p.as_ref()),
        }
    }
}

/// One recorded step.
#[derive(Clone)]
pub(crate) struct Node<T: Element> {
    pub(crate) rule: Rule<T>,
    /// Inputs as recorded: each either a constant or tracked by a `Track::Node` of this tape.
    pub(crate) inputs: SmallVec<[Tensor<T>; 2]>,
    pub(crate) output: Data<T>,
    pub(crate) generation: u32,
}

impl<T: Element> Node<T> {
    pub(crate) fn output_tensor(&self, index: usize) -> Tensor<T> {
        Tensor {
            data: self.output.clone(),
            track: Track::Node(Var { index: index as u32, generation: self.generation }),
        }
    }
}

/// The thread-local record of operations for one element type.
pub struct Tape<T: Element> {
    pub(crate) nodes: Vec<Node<T>>,
    generation: u32,
    recording: bool,
}

impl<T: Element> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Tape<T> {
    /// An empty tape that records.
    pub fn new() -> Self {
        Tape { nodes: Vec::new(), generation: 0, recording: true }
    }

    pub(crate) fn is_live(&self, var: Var) -> bool {
        self.nodes.get(var.index as usize).is_some_and(|n| n.generation == var.generation)
    }

    fn push(&mut self, node: Node<T>) -> Var {
        let index = u32::try_from(self.nodes.len()).expect("tape: more than 2^32 recorded operations");
        self.nodes.push(node);
        Var { index, generation: self.generation }
    }

    /// The tape's node for a tensor, making a leaf join this graph on first use.
    pub(crate) fn resolve(&mut self, tensor: &Tensor<T>) -> Option<Var> {
        match &tensor.track {
            Track::Constant => None,
            Track::Node(var) => self.is_live(*var).then_some(*var),
            Track::Leaf(state) => {
                if let Some(var) = state.var.get() {
                    if self.is_live(var) {
                        return Some(var);
                    }
                }
                let node = Node {
                    rule: Rule::Leaf(state.clone()),
                    inputs: SmallVec::new(),
                    output: tensor.data.clone(),
                    generation: self.generation,
                };
                let var = self.push(node);
                state.var.set(Some(var));
                Some(var)
            }
        }
    }

    /// Drops every node after the first `len`; tensors that named them become stale.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.nodes.len() {
            // Dropping nodes only releases reference counts; it never touches the tape.
            self.nodes.truncate(len);
            self.generation = self.generation.wrapping_add(1);
        }
    }
}

/// Whether `var` still names a node of this thread's tape.
pub(crate) fn is_live<T: Element>(var: Var) -> bool {
    T::with_tape(|t| t.borrow().is_live(var))
}

/// Records a primitive application whose forward value is `output`, if recording is on and
/// some input is tracked; otherwise returns a constant. `rule` is only built when recorded.
pub(crate) fn record_with<T: Element>(
    rule: impl FnOnce() -> Rule<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    T::with_tape(|cell| {
        let mut tape = cell.borrow_mut();
        if !tape.recording {
            return Tensor::constant_data(output);
        }
        let mut recorded: SmallVec<[Tensor<T>; 2]> = SmallVec::with_capacity(inputs.len());
        let mut any_tracked = false;
        for input in inputs {
            let track = match tape.resolve(input) {
                Some(var) => {
                    any_tracked = true;
                    Track::Node(var)
                }
                None => Track::Constant,
            };
            recorded.push(Tensor { data: input.data.clone(), track });
        }
        if !any_tracked {
            return Tensor::constant_data(output);
        }
        let node = Node { rule: rule(), inputs: recorded, output: output.clone(), generation: tape.generation };
        let var = tape.push(node);
        Tensor { data: output, track: Track::Node(var) }
    })
}

/// Records a stateless primitive (no allocation for the rule).
pub(crate) fn record<T: Element>(
    primitive: &'static dyn Primitive<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    record_with(|| Rule::Static(primitive), inputs, output)
}

/// Whether operations are being recorded on this thread's `T` tape.
pub fn is_recording<T: Element>() -> bool {
    T::with_tape(|t| t.borrow().recording)
}

/// Turns recording on or off, returning the previous setting.
pub(crate) fn set_recording<T: Element>(on: bool) -> bool {
    T::with_tape(|t| std::mem::replace(&mut t.borrow_mut().recording, on))
}

/// Runs `f` without recording `T` operations: results are constants (like `torch.no_grad`).
pub fn no_grad<T: Element, R>(f: impl FnOnce() -> R) -> R {
    with_recording::<T, R>(false, f)
}

/// Restores the recording flag even if the closure panics.
struct RestoreRecording<T: Element> {
    previous: bool,
    _t: std::marker::PhantomData<T>,
}

impl<T: Element> Drop for RestoreRecording<T> {
    fn drop(&mut self) {
        set_recording::<T>(self.previous);
    }
}

/// Runs `f` with recording set to `on`, restoring the previous setting afterwards.
pub(crate) fn with_recording<T: Element, R>(on: bool, f: impl FnOnce() -> R) -> R {
    let previous = set_recording::<T>(on);
    let guard = RestoreRecording::<T> { previous, _t: std::marker::PhantomData };
    let result = f();
    drop(guard);
    result
}

/// The number of nodes on this thread's `T` tape.
pub fn tape_len<T: Element>() -> usize {
    T::with_tape(|t| t.borrow().nodes.len())
}

/// Releases this thread's `T` tape: every recorded node is dropped (capacity is kept, so a
/// training loop does not reallocate). Leaves rejoin the next graph when next used.
pub fn release_tape<T: Element>() {
    truncate_tape::<T>(0);
}

/// Drops the nodes recorded after the first `len` (a mark taken with [`tape_len`]).
pub fn truncate_tape<T: Element>(len: usize) {
    T::with_tape(|t| t.borrow_mut().truncate(len));
}

/// Moves every node out of the tape (for a releasing sweep, which records nothing).
pub(crate) fn take_nodes<T: Element>() -> Vec<Node<T>> {
    T::with_tape(|t| std::mem::take(&mut t.borrow_mut().nodes))
}

/// Ends a releasing sweep: drops the nodes and gives their buffer back to the tape, so the
/// next graph of the same size records without reallocating.
pub(crate) fn restore_released<T: Element>(mut nodes: Vec<Node<T>>) {
    nodes.clear();
    T::with_tape(|t| {
        let mut tape = t.borrow_mut();
        // Anything recorded meanwhile (nothing, as recording was off) is dropped too.
        if tape.nodes.capacity() < nodes.capacity() {
            tape.nodes = nodes;
        } else {
            tape.nodes.clear();
        }
        tape.generation = tape.generation.wrapping_add(1);
    });
}

/// A copy of node `index` (cheap: reference-counted parts).
pub(crate) fn node<T: Element>(index: usize) -> Node<T> {
    T::with_tape(|t| t.borrow().nodes[index].clone())
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn tensors_and_nodes_stay_small() {
        // The scalar-graph speed depends on these: a node is written once and read once.
        eprintln!(
            "Tensor {} Node {} Rule {}",
            std::mem::size_of::<Tensor<f64>>(),
            std::mem::size_of::<Node<f64>>(),
            std::mem::size_of::<Rule<f64>>()
        );
        assert!(std::mem::size_of::<Tensor<f64>>() <= 32);
        assert!(std::mem::size_of::<Node<f64>>() <= 128);
    }
}
