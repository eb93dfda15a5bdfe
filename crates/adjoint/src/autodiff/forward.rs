//! Forward mode: one sweep from seeded inputs pushes tangents s' through the recorded graph
//! in creation (topological) order, using each primitive's JVP rule. The graph is kept.

use rustc_hash::FxHashMap;

use crate::autodiff::graph::with_recording;
use crate::autodiff::subgraph::{GraphError, Subgraph};
use crate::tensor::{Element, Tensor};

/// The tangents of `outputs` given tangents of some inputs (`seeds`: input, its tangent), in
/// one forward sweep over the recorded graph. Outputs that do not depend on any seeded input
/// get zeros. With `create_graph` the sweep is recorded (for mixed-mode higher derivatives).
///
/// # Panics
/// If a seed's tangent has another shape than its input, or a graph on the way was freed
/// (see [`try_jvp_sweep`]).
#[track_caller]
pub fn jvp_sweep<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
) -> Vec<Tensor<T>> {
    try_jvp_sweep(outputs, seeds, create_graph).unwrap_or_else(|e| panic!("jvp: {e}"))
}

/// Like [`jvp_sweep`], returning an error when a graph on the way was freed.
pub fn try_jvp_sweep<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
) -> Result<Vec<Tensor<T>>, GraphError> {
    Ok(tangent_sweep(outputs, seeds, create_graph)?.0)
}

/// Tangents by node id.
pub(crate) type TangentsById<T> = FxHashMap<u64, Tensor<T>>;

/// The tangents of the outputs and of every node on the way (by node id; absent where zero).
pub(crate) fn tangent_sweep<T: Element>(
    outputs: &[&Tensor<T>],
    seeds: &[(&Tensor<T>, Tensor<T>)],
    create_graph: bool,
) -> Result<(Vec<Tensor<T>>, TangentsById<T>), GraphError> {
    for (input, tangent) in seeds {
        assert!(
            tangent.shape() == input.shape(),
            "jvp: tangent of shape {:?} for an input of shape {:?}",
            tangent.shape(),
            input.shape()
        );
    }
    let graph = Subgraph::collect(outputs)?;
    let mut tangents: Vec<Option<Tensor<T>>> = vec![None; graph.len()];
    let mut start = graph.len();
    for (input, tangent) in seeds {
        let Some(i) = input.node.as_ref().and_then(|n| graph.position(n.id)) else { continue };
        tangents[i] = Some(match tangents[i].take() {
            Some(previous) => &previous + tangent,
            None => tangent.clone(),
        });
        start = start.min(i);
    }
    let seeded: Vec<bool> = tangents.iter().map(Option::is_some).collect();
    with_recording(create_graph, || {
        let mut input_tangents = Vec::new();
        for i in start..graph.len() {
            let entry = &graph.entries[i];
            if seeded[i] {
                continue;
            }
            let Some(record) = &entry.record else { continue };
            input_tangents.clear();
            input_tangents.extend(entry.inputs.iter().map(|p| p.and_then(|j| tangents[j as usize].clone())));
            if input_tangents.iter().all(Option::is_none) {
                continue;
            }
            let output = entry.output().expect("an operation node has a record");
            let tangent = record.rule.primitive().jvp(&record.inputs, &output, &input_tangents);
            // A rule may return a tangent that broadcasts to the output: widen it here, once.
            tangents[i] = tangent.map(|t| if t.shape() == output.shape() { t } else { t.broadcast_to(output.shape()) });
        }
    });
    let out = outputs
        .iter()
        .map(|o| {
            o.node
                .as_ref()
                .and_then(|n| graph.position(n.id))
                .and_then(|i| tangents[i].clone())
                .unwrap_or_else(|| Tensor::zeros(o.shape()))
        })
        .collect();
    let by_id =
        graph.entries.iter().zip(tangents).filter_map(|(e, t)| t.map(|t| (e.id(), t))).collect::<FxHashMap<_, _>>();
    Ok((out, by_id))
}
