//! The backward pass of a small network laid open, layer by layer: shapes of z, a, δ and ∂W;
//! how large the local Jacobians would be if they were built, against the memory the
//! vector-Jacobian products actually use; and the four backpropagation equations, computed
//! by hand and checked against the adjoints the engine found. Batch-major (z = a·W + b),
//! activation on every layer, loss C = 1/(2B) Σ ‖aᴸ − y‖²:
//!
//! - BP1: δᴸ = (aᴸ − y)/B ⊙ σ'(zᴸ)
//! - BP2: δˡ = (δˡ⁺¹ · Wˡ⁺¹ᵀ) ⊙ σ'(zˡ)
//! - BP3: ∂C/∂bˡ = Σ_batch δˡ
//! - BP4: ∂C/∂Wˡ = aˡ⁻¹ᵀ · δˡ

use adjoint::ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};

use adjoint::autodiff::{gradients, no_grad};
use adjoint::nn::{mse_half, Activation, Init};
use adjoint::Tensor;

/// One layer's part of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// 1-based layer number.
    pub index: usize,
    /// Input and output widths.
    pub widths: (usize, usize),
    /// Shapes of z, a, δ and ∂W.
    pub shapes: [Vec<usize>; 4],
    /// Entries of ∂z/∂W for one example if it were built: out × (in·out).
    pub jacobian_entries: usize,
    /// Entries of ∂a/∂z for one example (diagonal for elementwise activations): out × out.
    pub activation_jacobian_entries: usize,
    /// Numbers actually stored for this layer's backward step: δ and ∂W and ∂b.
    pub entries_used: usize,
    /// Largest |hand − engine| for BP1 or BP2 (δ), BP3 (∂b) and BP4 (∂W).
    pub errors: [f64; 3],
    /// The numbers: aˡ⁻¹ (the layer's input), Wˡ, zˡ, aˡ, δˡ (from the engine), ∂C/∂bˡ and
    /// ∂C/∂Wˡ, batch-major.
    pub values: LayerValues,
}

/// The matrices of one layer (see [`LayerReport::values`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerValues {
    /// aˡ⁻¹, `[B, in]`
    pub input: ArrayD<f64>,
    /// Wˡ, `[in, out]`
    pub weight: ArrayD<f64>,
    /// zˡ, `[B, out]`
    pub z: ArrayD<f64>,
    /// aˡ, `[B, out]`
    pub a: ArrayD<f64>,
    /// δˡ = ∂C/∂zˡ, `[B, out]`
    pub delta: ArrayD<f64>,
    /// ∂C/∂bˡ, `[out]`
    pub grad_bias: ArrayD<f64>,
    /// ∂C/∂Wˡ, `[in, out]`
    pub grad_weight: ArrayD<f64>,
}

/// Runs a seeded network of `widths` on a random batch and reports every layer.
pub fn explain(widths: &[usize], activation: Activation, batch: usize, seed: u64) -> Vec<LayerReport> {
    assert!(widths.len() >= 2 && batch > 0, "explain: needs two widths and a batch, got {widths:?} and {batch}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers = widths.len() - 1;
    let ws: Vec<Tensor<f64>> = widths
        .windows(2)
        .map(|w| Tensor::from_array(Init::XavierNormal.sample(&[w[0], w[1]], w[0], w[1], &mut rng)).requires_grad())
        .collect();
    let bs: Vec<Tensor<f64>> = widths[1..]
        .iter()
        .map(|&n| {
            Tensor::from_array(ArrayD::from_shape_simple_fn(IxDyn(&[n]), || rng.random_range(-0.1..0.1)))
                .requires_grad()
        })
        .collect();
    let x =
        Tensor::from_array(ArrayD::from_shape_simple_fn(IxDyn(&[batch, widths[0]]), || rng.random_range(-1.0..1.0)));
    let y = Tensor::from_array(ArrayD::from_shape_simple_fn(IxDyn(&[batch, widths[layers]]), || {
        rng.random_range(0.0..1.0)
    }));

    let (mut zs, mut acts) = (Vec::new(), vec![x.clone()]);
    for l in 0..layers {
        let z = acts[l].matmul(&ws[l]) + &bs[l];
        acts.push(activation.apply(&z));
        zs.push(z);
    }
    let cost = mse_half(&acts[layers], &y);
    // δ of every layer and the parameter gradients, from one reverse sweep; nothing is
    // accumulated anywhere and no graph but this function's own is touched.
    let targets: Vec<&Tensor<f64>> = zs.iter().chain(&ws).chain(&bs).collect();
    let grads: Vec<Tensor<f64>> =
        gradients(&cost, &targets, None, false).into_iter().map(|g| g.expect("every value feeds the cost")).collect();

    // σ'(z) computed directly from the activation's declared derivative, for the
    // hand-written equations.
    let sigma_prime = |z: &Tensor<f64>| -> Tensor<f64> { Tensor::from_array(activation.derivative(&z.to_array())) };
    let max_diff = |a: &Tensor<f64>, b: &Tensor<f64>| {
        a.view().iter().zip(b.view().iter()).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max)
    };
    let mut reports = vec![None; layers];
    let mut delta_hand = no_grad(|| (&acts[layers] - &y) * (1.0 / batch as f64) * sigma_prime(&zs[layers - 1]));
    for l in (0..layers).rev() {
        if l + 1 < layers {
            delta_hand = no_grad(|| delta_hand.matmul(&ws[l + 1].detach().transpose()) * sigma_prime(&zs[l]));
        }
        let delta_engine = &grads[l];
        let db_hand = no_grad(|| delta_hand.sum(&[0], false));
        let dw_hand = no_grad(|| acts[l].detach().transpose().matmul(&delta_hand));
        let (i, o) = (widths[l], widths[l + 1]);
        reports[l] = Some(LayerReport {
            index: l + 1,
            widths: (i, o),
            shapes: [zs[l].shape().to_vec(), acts[l + 1].shape().to_vec(), delta_engine.shape().to_vec(), vec![i, o]],
            jacobian_entries: o * i * o,
            activation_jacobian_entries: o * o,
            entries_used: batch * o + i * o + o,
            errors: [
                max_diff(&delta_hand, delta_engine),
                max_diff(&db_hand, &grads[2 * layers + l]),
                max_diff(&dw_hand, &grads[layers + l]),
            ],
            values: LayerValues {
                input: acts[l].to_array(),
                weight: ws[l].to_array(),
                z: zs[l].to_array(),
                a: acts[l + 1].to_array(),
                delta: delta_engine.to_array(),
                grad_bias: grads[2 * layers + l].to_array(),
                grad_weight: grads[layers + l].to_array(),
            },
        });
    }
    reports.into_iter().map(|r| r.expect("every layer")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_equations_hold_for_every_activation() {
        for act in [Activation::SIGMOID, Activation::TANH, Activation::RELU, Activation::leaky_relu(0.1)] {
            let r = explain(&[4, 5, 3, 2], act, 3, 7);
            assert_eq!(r.len(), 3);
            for l in &r {
                assert!(l.errors.iter().all(|&e| e < 1e-12), "{act}: {l:?}");
            }
            assert_eq!(r[0].shapes, [vec![3, 5], vec![3, 5], vec![3, 5], vec![4, 5]]);
            assert_eq!(r[0].jacobian_entries, 5 * 4 * 5);
        }
    }
}
