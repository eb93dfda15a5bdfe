//! Plain gradient descent on any function of some parameters, as in the lectures:
//! x ← x − α∇L(x), stopping when the step α‖∇L‖ is at most ε or after N steps.

use crate::autodiff::reverse::gradients;
use crate::tensor::{Element, Tensor};

/// Settings for [`minimize`].
#[derive(Debug, Clone, Copy)]
pub struct GradientDescent {
    /// The step size α.
    pub lr: f64,
    /// Stop when α‖∇L‖ ≤ ε.
    pub tolerance: f64,
    /// Stop after this many steps at the most.
    pub max_steps: usize,
    /// Multiply α by this after every step (1 keeps it fixed).
    pub decay: f64,
}

impl Default for GradientDescent {
    /// α = 0.1, ε = 1e-9, at most 1000 steps, no decay.
    fn default() -> Self {
        GradientDescent { lr: 0.1, tolerance: 1e-9, max_steps: 1000, decay: 1.0 }
    }
}

/// The result of [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct Minimized {
    /// Steps taken.
    pub steps: usize,
    /// Whether the tolerance was reached.
    pub converged: bool,
    /// The loss at the final point.
    pub loss: f64,
}

/// Minimises `loss(params)` by gradient descent, updating `params` in place.
///
/// ```
/// use adjoint::{optim::{minimize, GradientDescent}, Tensor};
/// let mut x = [Tensor::<f64>::var(0.0)];
/// let gd = GradientDescent { lr: 0.1, tolerance: 1e-9, max_steps: 1000, decay: 1.0 };
/// let r = minimize(|p| (&p[0] - 5.0).sqr(), &mut x, gd);
/// assert!(r.converged && (x[0].item() - 5.0).abs() < 1e-7);
/// ```
pub fn minimize<T: Element>(
    loss: impl Fn(&[Tensor<T>]) -> Tensor<T>,
    params: &mut [Tensor<T>],
    settings: GradientDescent,
) -> Minimized {
    let mut lr = settings.lr;
    let mut steps = 0;
    loop {
        let l = loss(params);
        let value = l.item().to_f64_lossless();
        if steps >= settings.max_steps || !l.is_tracked() {
            return Minimized { steps, converged: false, loss: value };
        }
        let refs: Vec<&Tensor<T>> = params.iter().collect();
        let grads = gradients(&l, &refs, None, false);
        let norm = grads
            .iter()
            .flatten()
            .map(|g| g.view().iter().map(|v| v.to_f64_lossless().powi(2)).sum::<f64>())
            .sum::<f64>()
            .sqrt();
        if lr * norm <= settings.tolerance {
            return Minimized { steps, converged: true, loss: value };
        }
        let step = T::from_f64_lossy(lr);
        for (p, g) in params.iter_mut().zip(&grads) {
            if let Some(g) = g {
                let g = g.view();
                p.update(|mut w| ndarray::Zip::from(&mut w).and(&g).for_each(|w, &g| *w -= step * g));
            }
        }
        lr *= settings.decay;
        steps += 1;
    }
}
