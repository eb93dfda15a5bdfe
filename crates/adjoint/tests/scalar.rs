//! The scalar tape against the tensor engine on random programs: same values, same
//! gradients (reverse), same directional derivatives (forward).

use adjoint::scalar::{Scalar, Tape};
use adjoint::{gradients, jvp_sweep, Tensor};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One step of a random program, applied to both representations.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Div(usize, usize),
    Unary(usize, u8),
    Const(usize, f64),
    Max(usize, usize),
}

fn scalar_step<'t>(op: Op, pool: &[Scalar<'t>]) -> Scalar<'t> {
    match op {
        Op::Add(a, b) => pool[a] + pool[b],
        Op::Sub(a, b) => pool[a] - pool[b],
        Op::Mul(a, b) => pool[a] * pool[b],
        Op::Div(a, b) => pool[a] / (pool[b].sqr() + 1.0),
        Op::Unary(a, k) => match k % 8 {
            0 => pool[a].sin(),
            1 => pool[a].tanh(),
            2 => pool[a].exp().min(pool[a] + 3.0),
            3 => (pool[a].sqr() + 0.5).ln(),
            4 => pool[a].sigmoid(),
            5 => pool[a].cos() * 2.0,
            6 => (pool[a].sqr() + 1.0).sqrt(),
            _ => pool[a].atan(),
        },
        Op::Const(a, c) => c * pool[a] - c,
        Op::Max(a, b) => pool[a].max(pool[b]),
    }
}

fn tensor_step(op: Op, pool: &[Tensor<f64>]) -> Tensor<f64> {
    match op {
        Op::Add(a, b) => &pool[a] + &pool[b],
        Op::Sub(a, b) => &pool[a] - &pool[b],
        Op::Mul(a, b) => &pool[a] * &pool[b],
        Op::Div(a, b) => &pool[a] / &(pool[b].sqr() + 1.0),
        Op::Unary(a, k) => match k % 8 {
            0 => pool[a].sin(),
            1 => pool[a].tanh(),
            2 => pool[a].exp().minimum(&(&pool[a] + 3.0)),
            3 => (pool[a].sqr() + 0.5).log(),
            4 => pool[a].sigmoid(),
            5 => pool[a].cos() * 2.0,
            6 => (pool[a].sqr() + 1.0).sqrt(),
            _ => pool[a].atan(),
        },
        Op::Const(a, c) => c * &pool[a] - c,
        Op::Max(a, b) => pool[a].maximum(&pool[b]),
    }
}

fn random_program(seed: u64, inputs: usize, steps: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..steps)
        .map(|i| {
            let n = inputs + i;
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            match rng.random_range(0..7) {
                0 => Op::Add(a, b),
                1 => Op::Sub(a, b),
                2 => Op::Mul(a, b),
                3 => Op::Div(a, b),
                4 => Op::Unary(a, rng.random()),
                5 => Op::Const(a, rng.random_range(-2.0..2.0)),
                _ => Op::Max(a, b),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn the_scalar_tape_agrees_with_the_tensor_engine(seed in any::<u64>(), steps in 1usize..40) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xa11);
        let inputs: Vec<f64> = (0..3).map(|_| rng.random_range(-1.5..1.5)).collect();
        let program = random_program(seed, inputs.len(), steps);

        let tape = Tape::new();
        let vars: Vec<Scalar> = inputs.iter().map(|&v| tape.var(v)).collect();
        let mut pool = vars.clone();
        for &op in &program {
            let next = scalar_step(op, &pool);
            pool.push(next);
        }
        let out = *pool.last().unwrap();
        let g = tape.gradient(out);

        let leaves: Vec<Tensor<f64>> = inputs.iter().map(|&v| Tensor::var(v)).collect();
        let mut tpool = leaves.clone();
        for &op in &program {
            let next = tensor_step(op, &tpool);
            tpool.push(next);
        }
        let tout = tpool.last().unwrap().clone();
        prop_assert!((out.value() - tout.item()).abs() <= 1e-12 * (1.0 + tout.item().abs()));
        if tout.is_tracked() {
            let refs: Vec<&Tensor<f64>> = leaves.iter().collect();
            let tg = gradients(&tout, &refs, None, false);
            for (k, v) in vars.iter().enumerate() {
                let expected = tg[k].as_ref().map_or(0.0, |t| t.item());
                prop_assert!((g[*v] - expected).abs() <= 1e-10 * (1.0 + expected.abs()), "input {k}: {} vs {expected}", g[*v]);
                let forward = tape.tangent(out, &[(*v, 1.0)]);
                let tforward = jvp_sweep(&[&tout], &[(&leaves[k], Tensor::scalar(1.0))], false).remove(0).item();
                prop_assert!((forward - tforward).abs() <= 1e-10 * (1.0 + tforward.abs()));
            }
        }
    }
}
