//! The buffer pool and calls from outside rayon's pool, as a program's plain `main` makes
//! them: a training loop keeps about one step's buffers, gives a dropped network's back,
//! and gets the same bits from `main` as on the pool's threads.
//!
//! One test per concern, each in this process with a global pool of two threads; the pool's
//! figures are process-wide, so the memory test runs its steps under a lock the others take.

use std::sync::Mutex;

use adjoint::nn::{cross_entropy, Activation, Architecture, Module, Network};
use adjoint::optim::Optimizer;
use adjoint::tensor::pool;
use adjoint::Tensor;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn two_threads() {
    // Every test asks; the first one sets it (later calls fail harmlessly).
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
}

fn data(rows: usize, cols: usize, seed: usize) -> Tensor<f32> {
    Tensor::from_vec((0..rows * cols).map(|i| ((i * 37 + seed) % 101) as f32 / 101.0 - 0.5).collect(), &[rows, cols])
}

fn steps(net: &mut Network<f32>, x: &Tensor<f32>, labels: &[usize], n: usize) {
    let mut opt = Optimizer::sgd(0.05);
    for _ in 0..n {
        cross_entropy(&net.forward(x), labels).backward();
        opt.step(net);
        net.zero_grad();
    }
}

#[test]
fn a_loop_keeps_about_one_step_and_a_dropped_networks_buffers_are_given_back() {
    two_threads();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let labels: Vec<usize> = (0..128).map(|i| i % 10).collect();
    let x = data(128, 256, 1);
    let mut big = Network::<f32>::new(Architecture::mlp(&[256, 1024, 1024, 10], Activation::RELU, None), 1).unwrap();
    steps(&mut big, &x, &labels, 3);
    let after_3 = pool::stats();
    steps(&mut big, &x, &labels, 20);
    let after_23 = pool::stats();
    assert!(after_3.kept_bytes > 0, "a step's buffers are kept: {after_3:?}");
    assert!(
        after_23.kept_bytes <= after_3.kept_bytes + (1 << 20),
        "the pool does not grow step after step: {after_3:?} then {after_23:?}"
    );
    let hits = after_23.hits - after_3.hits;
    let misses = after_23.misses - after_3.misses;
    assert!(hits > 20 * misses, "in steady state buffers come from the pool: {hits} hits, {misses} misses");
    // A step of the big network keeps megabytes (1024² weights' gradients, 128×1024 layers).
    let big_kept = after_23.kept_bytes;
    assert!(big_kept > 4 << 20, "{after_23:?}");

    drop(big);
    let small_labels: Vec<usize> = (0..512).map(|i| i % 4).collect();
    let small_x = data(512, 16, 2);
    let mut small = Network::<f32>::new(Architecture::mlp(&[16, 32, 4], Activation::TANH, None), 2).unwrap();
    // Enough requests of the small network's lengths for the big ones to count as idle.
    let mut rounds = 0;
    while pool::stats().kept_bytes > big_kept / 4 && rounds < 2000 {
        steps(&mut small, &small_x, &small_labels, 10);
        rounds += 1;
    }
    let now = pool::stats();
    assert!(now.kept_bytes <= big_kept / 4, "the big network's buffers were given back: {now:?}, {rounds} rounds");
    assert!(now.freed > after_23.freed);

    pool::release();
    assert_eq!(pool::stats().kept_bytes, 0);
    assert_eq!(pool::stats().kept_buffers, 0);
}

#[test]
fn kernels_called_from_main_give_the_bits_they_give_on_the_pool() {
    two_threads();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Large enough to be split from outside the pool too: products of 2²⁰·… multiply-adds,
    // elementwise kernels and batch sums of 2¹⁹ elements.
    let work = || {
        let a = data(512, 1024, 3);
        let b = data(1024, 512, 4);
        let p = a.matmul(&b);
        let t = (&p * 0.01).tanh() + &p.sin();
        let s = t.sum(&[0], false);
        let g = a.transpose().matmul(&t);
        [p, t, s, g].iter().map(Tensor::to_vec).collect::<Vec<_>>()
    };
    let from_main = std::thread::spawn(work).join().unwrap();
    assert!(rayon::current_thread_index().is_none());
    let on_pool = rayon::join(work, || ()).0;
    for (k, (a, b)) in from_main.iter().zip(&on_pool).enumerate() {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "result {k} differs between main and the pool");
    }
}
