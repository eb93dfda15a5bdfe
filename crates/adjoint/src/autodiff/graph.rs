//! The computation graph, owned by the values that depend on it.
//!
//! Every tracked [`Tensor`] holds an `Arc` of its graph node; an operation's node holds its
//! input tensors (and through them their nodes), its rule and its output. So:
//!
//! - **a graph lives exactly as long as something needs it.** Dropping the last value that
//!   depends on a node frees it (iteratively, so a chain of a million nodes does not overflow
//!   the stack). Forward passes whose outputs are dropped leave nothing behind, with or without
//!   [`no_grad`];
//! - **creation numbers give a topological order for free.** Node ids come from one global
//!   counter, taken when the node is made, after its inputs exist; so an input's id is always
//!   smaller than its user's. Sweeps collect the nodes an output reaches and order them by id;
//!   they never look at what kind of operation a node holds;
//! - **a backward pass frees the graph it used** (unless asked to retain it): it takes each
//!   visited node's record (rule, inputs, output) and drops it once the node's rule has run.
//!   A node whose record is gone is *freed*: differentiating through it again is an error that
//!   says so, never a silent constant. Other graphs, even ones sharing leaves, are untouched;
//! - **it is thread-safe.** Nodes use `Arc` and a `Mutex` per node, so tensors and models are
//!   `Send` and `Sync`: a model can be moved to another thread or shared by several.
//!
//! Recording is switched per thread ([`no_grad`], [`is_recording`]). Library kernels that fan
//! out on rayon run inside `parallel`, which gives the thread the default state while it
//! waits, so a job rayon steals onto the thread never inherits another job's setting.

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use smallvec::SmallVec;

use crate::autodiff::primitive::Primitive;
use crate::tensor::{Data, Element, Tensor};

/// The next creation number. Starts at 1 so that 0 can mean "before everything".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Nodes alive in the process (for tests and diagnostics: see [`live_nodes`]).
static LIVE_NODES: AtomicUsize = AtomicUsize::new(0);

/// A fresh creation number, larger than every number handed out before.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The creation number the next node will get at the earliest: every node made from now on
/// has an id at least this large.
pub(crate) fn id_mark() -> u64 {
    NEXT_ID.load(Ordering::Relaxed)
}

/// The number of graph nodes (leaves and recorded operations) alive in the process.
///
/// Useful to check that a program frees its graphs: after the values that depend on a graph
/// are dropped, the count returns to where it was. Other threads' nodes are counted too.
pub fn live_nodes() -> usize {
    LIVE_NODES.load(Ordering::Relaxed)
}

/// How a node was made: a stateless primitive (no allocation) or one with state.
pub(crate) enum Rule<T: Element> {
    Static(&'static dyn Primitive<T>),
    Shared(Arc<dyn Primitive<T>>),
}

impl<T: Element> Rule<T> {
    pub(crate) fn primitive(&self) -> &dyn Primitive<T> {
        match self {
            Rule::Static(p) => *p,
            Rule::Shared(p) => p.as_ref(),
        }
    }
}

impl<T: Element> Clone for Rule<T> {
    fn clone(&self) -> Self {
        match self {
            Rule::Static(p) => Rule::Static(*p),
            Rule::Shared(p) => Rule::Shared(p.clone()),
        }
    }
}

/// What a recorded operation keeps for the sweeps.
pub(crate) struct Record<T: Element> {
    pub(crate) rule: Rule<T>,
    /// The inputs as given: tracked ones carry their nodes, constants only their values.
    pub(crate) inputs: SmallVec<[Tensor<T>; 2]>,
    pub(crate) output: Data<T>,
}

impl<T: Element> Clone for Record<T> {
    fn clone(&self) -> Self {
        Record { rule: self.rule.clone(), inputs: self.inputs.clone(), output: self.output.clone() }
    }
}

/// A leaf (a variable or parameter) or a recorded operation.
pub(crate) enum NodeKind<T: Element> {
    /// Gradient accumulated by [`Tensor::backward`], as in PyTorch's `.grad`.
    Leaf {
        grad: Mutex<Option<Tensor<T>>>,
    },
    Op(Mutex<OpState<T>>),
}

/// An operation node's record, or why it is gone.
pub(crate) enum OpState<T: Element> {
    Recorded(Record<T>),
    /// Freed by a backward pass.
    Freed,
    /// Freed by a backward pass that then stopped at an operation an earlier pass had freed
    /// (named here, so that every later attempt reports the same cause).
    Stopped {
        op: &'static str,
        location: &'static Location<'static>,
    },
}

/// One vertex of the graph. See the module docs for the invariants.
pub(crate) struct Node<T: Element> {
    /// Creation number: larger than the ids of all inputs.
    pub(crate) id: u64,
    /// The operation's name (for messages about freed graphs); `"leaf"` for leaves.
    pub(crate) name: &'static str,
    /// Where in the user's program the value was made (for messages and anomaly mode).
    pub(crate) location: &'static Location<'static>,
    pub(crate) kind: NodeKind<T>,
}

/// Locks a node's mutex, ignoring poisoning: a panic in another thread's rule leaves the
/// record itself intact (records are replaced whole, never half-written).
pub(crate) fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Element> Node<T> {
    #[track_caller]
    pub(crate) fn leaf() -> Arc<Self> {
        LIVE_NODES.fetch_add(1, Ordering::Relaxed);
        let kind = NodeKind::Leaf { grad: Mutex::new(None) };
        Arc::new(Node { id: next_id(), name: "leaf", location: Location::caller(), kind })
    }

    pub(crate) fn is_leaf(&self) -> bool {
        matches!(self.kind, NodeKind::Leaf { .. })
    }

    /// A copy of the record (cheap: reference-counted parts), or `None` if freed or a leaf.
    pub(crate) fn record(&self) -> Option<Record<T>> {
        match &self.kind {
            NodeKind::Op(m) => match &*lock(m) {
                OpState::Recorded(r) => Some(r.clone()),
                _ => None,
            },
            NodeKind::Leaf { .. } => None,
        }
    }

    /// Takes the record out, freeing the node's part of the graph.
    pub(crate) fn take_record(&self) -> Option<Record<T>> {
        match &self.kind {
            NodeKind::Op(m) => {
                let mut state = lock(m);
                match std::mem::replace(&mut *state, OpState::Freed) {
                    OpState::Recorded(r) => Some(r),
                    other => {
                        *state = other;
                        None
                    }
                }
            }
            NodeKind::Leaf { .. } => None,
        }
    }

    /// Whether a backward pass freed this operation's record.
    pub(crate) fn is_freed(&self) -> bool {
        matches!(&self.kind, NodeKind::Op(m) if !matches!(&*lock(m), OpState::Recorded(_)))
    }

    /// The operation to blame for this node being freed: itself, or the one an aborted pass
    /// stopped at.
    pub(crate) fn freed_cause(&self) -> (&'static str, &'static Location<'static>) {
        match &self.kind {
            NodeKind::Op(m) => match &*lock(m) {
                OpState::Stopped { op, location } => (op, location),
                _ => (self.name, self.location),
            },
            NodeKind::Leaf { .. } => (self.name, self.location),
        }
    }

    /// Marks a node this pass freed as freed because the pass stopped at `cause`.
    pub(crate) fn mark_stopped(&self, cause: (&'static str, &'static Location<'static>)) {
        if let NodeKind::Op(m) = &self.kind {
            let mut state = lock(m);
            if matches!(*state, OpState::Freed) {
                *state = OpState::Stopped { op: cause.0, location: cause.1 };
            }
        }
    }
}

impl<T: Element> Drop for Node<T> {
    /// Frees the graph behind this node without recursion: inputs whose last reference this
    /// was are unlinked in a loop, so dropping a long chain needs no stack.
    fn drop(&mut self) {
        LIVE_NODES.fetch_sub(1, Ordering::Relaxed);
        let NodeKind::Op(m) = &mut self.kind else { return };
        let state = std::mem::replace(m.get_mut().unwrap_or_else(|e| e.into_inner()), OpState::Freed);
        let OpState::Recorded(record) = state else { return };
        let mut stack: Vec<Arc<Node<T>>> = Vec::new();
        push_input_nodes(record, &mut stack);
        while let Some(node) = stack.pop() {
            if let Some(mut node) = Arc::into_inner(node) {
                if let NodeKind::Op(m) = &mut node.kind {
                    let state = std::mem::replace(m.get_mut().unwrap_or_else(|e| e.into_inner()), OpState::Freed);
                    if let OpState::Recorded(record) = state {
                        push_input_nodes(record, &mut stack);
                    }
                }
                // `node` is dropped here with its record already taken: no recursion.
            }
        }
    }
}

fn push_input_nodes<T: Element>(record: Record<T>, stack: &mut Vec<Arc<Node<T>>>) {
    for input in record.inputs {
        if let Some(node) = input.node {
            stack.push(node);
        }
    }
}

/// Records a primitive application whose forward value is `output`, if recording is on and
/// some input is tracked; otherwise returns a constant. `rule` is only built when recorded.
#[track_caller]
pub(crate) fn record_with<T: Element>(
    rule: impl FnOnce() -> Rule<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    if !inputs.iter().any(|t| t.node.is_some()) || !is_recording() {
        return Tensor::constant_data(output);
    }
    let location = Location::caller();
    let rule = rule();
    let name = rule.primitive().name();
    if anomaly_mode() {
        crate::autodiff::anomaly::check_forward(name, inputs, &output, location);
    }
    let record = Record { rule, inputs: inputs.iter().map(|t| (*t).clone()).collect(), output: output.clone() };
    LIVE_NODES.fetch_add(1, Ordering::Relaxed);
    let kind = NodeKind::Op(Mutex::new(OpState::Recorded(record)));
    let node = Arc::new(Node { id: next_id(), name, location, kind });
    Tensor { data: output, node: Some(node) }
}

/// Records a stateless primitive (no allocation for the rule).
#[track_caller]
pub(crate) fn record<T: Element>(
    primitive: &'static dyn Primitive<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    record_with(|| Rule::Static(primitive), inputs, output)
}

/// Records a primitive that carries state (an axis, a shape, a constant).
#[track_caller]
pub(crate) fn record_rule<T: Element>(
    primitive: impl Primitive<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    record_with(|| Rule::Shared(Arc::new(primitive)), inputs, output)
}

/// Per-thread switches.
#[derive(Clone, Copy)]
struct ThreadState {
    recording: bool,
    anomaly: bool,
}

const DEFAULT_STATE: ThreadState = ThreadState { recording: true, anomaly: false };

thread_local! {
    static STATE: Cell<ThreadState> = const { Cell::new(DEFAULT_STATE) };
}

/// Whether operations on tracked values are being recorded on this thread.
pub fn is_recording() -> bool {
    STATE.with(|s| s.get().recording)
}

/// Whether anomaly mode is on for this thread (see [`detect_anomaly`]).
pub fn anomaly_mode() -> bool {
    STATE.with(|s| s.get().anomaly)
}

/// Restores the thread's previous state, even if the closure panics.
struct Restore(ThreadState);

impl Drop for Restore {
    fn drop(&mut self) {
        STATE.with(|s| s.set(self.0));
    }
}

fn with_state<R>(change: impl FnOnce(&mut ThreadState), f: impl FnOnce() -> R) -> R {
    let previous = STATE.with(|s| s.get());
    let mut next = previous;
    change(&mut next);
    STATE.with(|s| s.set(next));
    let _restore = Restore(previous);
    f()
}

/// Runs `f` without recording: results are constants, whatever their inputs (like
/// `torch.no_grad`). Applies to every element type; nests; restored on panic.
///
/// The switch belongs to the calling thread, as `torch.no_grad` does: work that `f` hands
/// to other threads (your own rayon loop) records as usual there. And while a thread inside
/// `f` waits for such a loop, rayon may run an unrelated job on it (another thread's
/// `pool.install`), which would then not record. So in your own parallel loops, call
/// `no_grad` inside each task (`par_iter().for_each(|x| no_grad(|| …)))`), not around the
/// loop. (The library's own parallel kernels already run stolen jobs with the default state.)
///
/// ```
/// use adjoint::{no_grad, Tensor};
/// let x = Tensor::<f32>::var(2.0);
/// let y = no_grad(|| &x * &x);
/// assert!(!y.is_tracked());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_recording(false, f)
}

/// Turns recording on this thread on or off and returns the previous setting, for scopes
/// that are not closures (a Python `with no_grad():` block enters and exits in two calls).
/// Prefer [`no_grad`] in Rust: it restores the setting even if the closure panics.
pub fn set_recording(on: bool) -> bool {
    STATE.with(|s| {
        let mut state = s.get();
        let previous = state.recording;
        state.recording = on;
        s.set(state);
        previous
    })
}

/// Runs `f` with recording set to `on`, restoring the previous setting afterwards.
pub(crate) fn with_recording<R>(on: bool, f: impl FnOnce() -> R) -> R {
    with_state(|s| s.recording = on, f)
}

/// Runs `f` in anomaly mode: every recorded primitive's output is checked in the forward
/// pass, and every adjoint in the backward pass; the first non-finite value panics with the
/// primitive's name, its inputs' shapes and statistics, and where in the program the value
/// was made (PyTorch's `detect_anomaly`, pointing at the user's code). Off by default; when
/// off it costs one thread-local read per recorded operation.
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> R {
    with_state(|s| s.anomaly = true, f)
}

thread_local! {
    static CONTEXT: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` inside a named part of the program (a layer), so that anomaly mode can say where
/// a non-finite value appeared ("layer 2 (linear 100→10)"). The name is only made when
/// anomaly mode is on; otherwise this is just `f()`.
pub fn with_context<R>(name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !anomaly_mode() {
        return f();
    }
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            CONTEXT.with(|c| c.borrow_mut().pop());
        }
    }
    CONTEXT.with(|c| c.borrow_mut().push(name()));
    let _pop = Pop;
    f()
}

/// The names of the parts of the program being run (outermost first).
pub(crate) fn context() -> String {
    CONTEXT.with(|c| c.borrow().join(" › "))
}

/// Runs a rayon-parallel section of a kernel. While this thread waits for the section it may
/// run jobs that rayon steals onto it; they must see the default per-thread state, not the
/// caller's (a training run on the same pool must not inherit another run's `no_grad`).
pub(crate) fn parallel<R>(f: impl FnOnce() -> R) -> R {
    with_state(|s| *s = DEFAULT_STATE, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_stay_small_and_are_send_and_sync() {
        fn send_sync<X: Send + Sync>() {}
        send_sync::<Tensor<f32>>();
        send_sync::<Tensor<f64>>();
        assert!(std::mem::size_of::<Tensor<f64>>() <= 24, "{}", std::mem::size_of::<Tensor<f64>>());
    }

    #[test]
    fn dropping_a_long_chain_needs_no_stack() {
        let x = Tensor::<f64>::var(0.5);
        let mut y = x.clone();
        for _ in 0..300_000 {
            y = y.sin();
        }
        // A recursive drop would overflow the 2 MiB test-thread stack here.
        drop(y);
    }
}
