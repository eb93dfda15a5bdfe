//! Times the one all-reduce a data-parallel step makes, for the gradient sizes of the
//! networks in BENCHMARKS.md, to check the ring all-reduce cost model
//! t ≈ 2(N−1)·α + 2(N−1)/N · bytes / β on this machine.
//!
//! ```sh
//! cargo build --release --features mpi --example allreduce
//! mpirun --oversubscribe -np 4 target/release/examples/allreduce
//! ```
//!
//! Rank 0 prints, per size: the median time of 50 all-reduces (each after a barrier, so that
//! waiting for a late rank is not counted) and the bus bandwidth 2(N−1)/N · bytes / t.

#[cfg(feature = "mpi")]
fn main() {
    use adjoint::dist::{mpi::MpiCommunicator, Communicator};
    use std::time::Instant;

    let comm = MpiCommunicator::init().expect("joins the MPI job");
    let n = comm.size();
    // Parameters + loss + stop flag of each network's flat gradient buffer.
    let sizes = [
        ("tiny (latency)", 2usize),
        ("lecture net 784-100-10", 79_510 + 2),
        ("LeNet-5 (conv 20, 50; fc 500)", 431_080 + 2),
        ("big MLP 784-1024-1024-10", 1_863_690 + 2),
    ];
    if comm.rank() == 0 {
        println!("{n} ranks over {}", comm.describe());
        println!("{:<32} {:>12} {:>14} {:>16}", "buffer", "bytes", "median time", "bus bandwidth");
    }
    for (name, len) in sizes {
        let mut buffer = vec![1.0f32; len];
        let mut times = Vec::new();
        for round in 0..55 {
            let mut barrier = [0.0f64];
            comm.all_reduce_sum_f64(&mut barrier).expect("barrier");
            let started = Instant::now();
            comm.all_reduce_sum_f32(&mut buffer).expect("all-reduce");
            if round >= 5 {
                times.push(started.elapsed().as_secs_f64());
            }
            buffer.iter_mut().for_each(|v| *v = 1.0);
        }
        times.sort_by(f64::total_cmp);
        // The slowest rank decides when a step can go on: gather every rank's median (a sum
        // of one-hot vectors) and take the largest.
        let mut medians = vec![0.0f64; n];
        medians[comm.rank()] = times[times.len() / 2];
        if std::env::var_os("ALLREDUCE_DEBUG").is_some() {
            eprintln!(
                "rank {} {name}: min {:.1} µs median {:.1} µs max {:.1} µs",
                comm.rank(),
                times[0] * 1e6,
                times[times.len() / 2] * 1e6,
                times[times.len() - 1] * 1e6
            );
        }
        comm.all_reduce_sum_f64(&mut medians).expect("gather");
        let slowest = medians.iter().copied().fold(0.0, f64::max);
        if comm.rank() == 0 {
            let bytes = 4 * len;
            let moved = 2.0 * (n as f64 - 1.0) / n as f64 * bytes as f64;
            println!(
                "{name:<32} {bytes:>12} {:>11.1} µs {:>11.2} GB/s",
                slowest * 1e6,
                if n > 1 { moved / slowest / 1e9 } else { f64::NAN }
            );
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn main() {
    eprintln!("build with --features mpi and run under mpirun (see the top of examples/allreduce.rs)");
    std::process::exit(2);
}
