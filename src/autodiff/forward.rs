//! Forward mode: one sweep from seeded inputs pushes tangents s' through the recorded tape in
//! its (topological) order, using each primitive's JVP rule.

use crate::autodiff::tape::{self, with_recording};
use crate::tensor::{Element, Tensor, Track};

/// The tangents of `outputs` given tangents of some inputs (`seeds`: input, its tangent), in
/// one forward sweep over the recorded graph. Outputs that do not depend on any seeded input
/// get zeros. With `create_graph` the sweep is recorded (for mixed-mode higher derivatives).
///
/// # Panics
/// If a seed's tangent has another shape than its input.
pub fn jvp_sweep<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
) -> Vec<Tensor<T>> {
    jvp_sweep_all(outputs, seeds, create_graph).0
}

/// Like [`jvp_sweep`], also returning the tangent of every node up to the last output, by
/// tape position (`None` where it is zero), for traces.
pub fn jvp_sweep_all<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
) -> (Vec<Tensor<T>>, Vec<Option<Tensor<T>>>) {
    let end = T::with_tape(|t| {
        let mut tape = t.borrow_mut();
        outputs.iter().filter_map(|o| tape.resolve(o)).map(|v| v.index() + 1).max().unwrap_or(0)
    });
    let mut tangents: Vec<Option<Tensor<T>>> = vec![None; end];
    let mut start = end;
    for (input, tangent) in seeds {
        assert!(
            tangent.shape() == input.shape(),
            "jvp: tangent of shape {:?} for an input of shape {:?}",
            tangent.shape(),
            input.shape()
        );
        let var = T::with_tape(|t| t.borrow_mut().resolve(input));
        if let Some(var) = var.filter(|v| v.index() < end) {
            tangents[var.index()] = Some(tangent.clone());
            start = start.min(var.index());
        }
    }
    with_recording::<T, _>(create_graph, || {
        let mut input_tangents = Vec::new();
        for i in start..end {
            let node = tape::node::<T>(i);
            let Some(primitive) = node.rule.primitive() else { continue };
            input_tangents.clear();
            input_tangents.extend(node.inputs.iter().map(|input| match &input.track {
                Track::Node(var) => tangents[var.index()].clone(),
                _ => None,
            }));
            if input_tangents.iter().all(Option::is_none) {
                continue;
            }
            let output = node.output_tensor(i);
            let tangent = primitive.jvp(&node.inputs, &output, &input_tangents);
            // A rule may return a tangent that broadcasts to the output: widen it here, once.
            tangents[i] = tangent.map(|t| if t.shape() == output.shape() { t } else { t.broadcast_to(output.shape()) });
        }
    });
    let out = outputs
        .iter()
        .map(|o| {
            let var = T::with_tape(|t| t.borrow_mut().resolve(o));
            var.and_then(|v| tangents.get(v.index()).cloned().flatten()).unwrap_or_else(|| Tensor::zeros(o.shape()))
        })
        .collect();
    (out, tangents)
}
