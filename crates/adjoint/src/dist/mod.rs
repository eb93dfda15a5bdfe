//! Data-parallel training: the [`Communicator`] a [`Trainer`](crate::train::Trainer) sums
//! gradients with, and its implementations.
//!
//! Every rank holds the whole model. Step `i` of an epoch takes global batch `i` of the
//! epoch's shuffled order (the same on every rank, from the seed), and rank `r` of `N` takes
//! the rows `⌊r·b/N⌋..⌊(r+1)·b/N⌋` of it (a batch that does not divide evenly gives some
//! ranks one row more). Each rank scales its gradient by its share of the rows, the ranks sum
//! one flat buffer (every gradient, then the loss and a stop flag) with one all-reduce, and
//! every rank applies the same update to the same weights, so they stay equal. The result is
//! single-process training with the same global batch and seed up to the order of the
//! additions (see the tests for the tolerance); dropout draws the masks one process would,
//! since each rank numbers its rows as in the global batch
//! ([`with_random_key_from_row`](crate::nn::with_random_key_from_row)). Batch norm
//! normalises over each rank's rows, as in PyTorch's `DistributedDataParallel`.
//!
//! Invariants the trainer keeps:
//! - every rank makes the same collective calls in the same order with buffers of the same
//!   length (decisions that end an epoch, such as a stop or a non-finite loss, are taken on
//!   reduced values, which are identical everywhere);
//! - reductions return bit-identical results on every rank (the [`LocalGroup`] adds in rank
//!   order; MPI's all-reduce does the same on every rank), so every rank's optimiser state
//!   stays identical; at the start and end of every epoch the ranks check that it is (with
//!   their settings, architecture, schedule and data) and take rank 0's parameters and
//!   buffers (batch norm's running statistics differ between ranks during an epoch).
//!
//! Implementations: [`SingleProcess`] (the default: no communication at all), [`LocalGroup`]
//! (ranks as threads of one process, for tests and for trying the protocol without MPI), and,
//! with the `mpi` cargo feature, `mpi::MpiCommunicator` over the system's MPI library (the
//! same code as below with `Arc::new(MpiCommunicator::init()?)`, one process per rank under
//! `mpirun`).
//!
//! ```
//! use std::sync::Arc;
//! use adjoint::data::Dataset;
//! use adjoint::dist::{Communicator, LocalGroup};
//! use adjoint::nn::{Activation, Architecture, Network};
//! use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
//! use adjoint::train::{TrainSettings, Trainer};
//! // y = x₀ − 2x₁, trained by two ranks (here threads), each on half of every batch of 16.
//! let x = adjoint::ndarray::Array2::from_shape_fn((64, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
//! let y = x.map_axis(adjoint::ndarray::Axis(1), |r| r[0] - 2.0 * r[1]).insert_axis(adjoint::ndarray::Axis(1));
//! let (train, test) = Dataset::regression(x, y).split(0.25, 1);
//! let trainer = || {
//!     let network = Network::new(Architecture::mlp(&[2, 8, 1], Activation::TANH, None), 1).unwrap();
//!     let settings = TrainSettings { batch: 16, epochs: 5, threads: 1, ..TrainSettings::default() };
//!     Trainer::new(network, Optimizer::adam(0.02), Scheduler::new(LrSchedule::Constant, 0.02), settings).unwrap()
//! };
//! let weights: Vec<Vec<f32>> = std::thread::scope(|s| {
//!     let ranks: Vec<_> = LocalGroup::new(2)
//!         .into_iter()
//!         .map(|comm| {
//!             let (train, test) = (&train, &test);
//!             s.spawn(move || {
//!                 let mut t = trainer();
//!                 t.set_communicator(Arc::new(comm));
//!                 t.fit(train, test).unwrap();
//!                 t.network.tensors().into_iter().flat_map(|(_, a)| a.into_iter()).collect()
//!             })
//!         })
//!         .collect();
//!     ranks.into_iter().map(|r| r.join().unwrap()).collect()
//! });
//! assert_eq!(weights[0], weights[1]); // every rank holds the same model
//! ```

#[cfg(feature = "mpi")]
pub mod mpi;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Why a collective operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommError {
    /// Another rank left the group (it stopped or failed) while this one waited for it.
    #[error("rank {rank} of {size} left the job; rank {this} cannot continue without it")]
    RankLeft {
        /// The rank that left.
        rank: usize,
        /// The number of ranks.
        size: usize,
        /// The rank that noticed.
        this: usize,
    },
    /// Another rank called a different collective, so the group cannot go on.
    #[error("rank {rank} of {size} called a different collective operation; rank {this} cannot continue")]
    Aborted {
        /// The rank that found the mismatch.
        rank: usize,
        /// The number of ranks.
        size: usize,
        /// The rank that noticed.
        this: usize,
    },
    /// The ranks called the operation with different buffers.
    #[error(
        "rank {this} called a collective with {len} numbers, rank {other} with {other_len} or another operation: \
         the ranks disagree"
    )]
    Mismatch {
        /// This rank.
        this: usize,
        /// Its buffer length.
        len: usize,
        /// Another rank.
        other: usize,
        /// That rank's buffer length.
        other_len: usize,
    },
    /// The ranks are not set up alike (settings, model or position in training).
    #[error("{0}")]
    Disagree(String),
    /// The communication library failed.
    #[error("{0}")]
    Library(String),
}

/// A group of ranks that train one model together: sums over all ranks and broadcasts from
/// one. Every rank must make the same calls in the same order with buffers of the same length.
pub trait Communicator: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Replaces `buffer` on every rank by the elementwise sum of all ranks' buffers; the
    /// result is bit-identical on every rank.
    ///
    /// # Errors
    /// If a rank left or the communication failed.
    fn all_reduce_sum_f32(&self, buffer: &mut [f32]) -> Result<(), CommError>;

    /// As [`Communicator::all_reduce_sum_f32`], in `f64` (counts and sums of metrics).
    ///
    /// # Errors
    /// If a rank left or the communication failed.
    fn all_reduce_sum_f64(&self, buffer: &mut [f64]) -> Result<(), CommError>;

    /// Replaces `buffer` on every rank by `root`'s.
    ///
    /// # Errors
    /// If a rank left or the communication failed.
    fn broadcast_f32(&self, buffer: &mut [f32], root: usize) -> Result<(), CommError>;

    /// What carries the messages, for logs ("single process", "4 threads", "MPI (Open MPI
    /// v4.1.4)").
    fn describe(&self) -> String;
}

/// One process alone: every collective is the identity. The trainer's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<(), CommError> {
        Ok(())
    }
    fn broadcast_f32(&self, _: &mut [f32], _: usize) -> Result<(), CommError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "single process".into()
    }
}

/// The rows `start..end` of a batch of `len` rows that rank `rank` of `ranks` takes: in rank
/// order, covering the batch once, sizes differing by at most one.
///
/// ```
/// assert_eq!(adjoint::dist::shard(10, 0, 4), 0..2);
/// assert_eq!(adjoint::dist::shard(10, 3, 4), 7..10);
/// ```
pub fn shard(len: usize, rank: usize, ranks: usize) -> std::ops::Range<usize> {
    assert!(ranks > 0 && rank < ranks, "shard: rank {rank} of {ranks} ranks");
    (len * rank / ranks)..(len * (rank + 1) / ranks)
}

/// The number of ranks the environment says this process was started with by an MPI launcher
/// (`mpirun`, `mpiexec`), if it says: read from the variables Open MPI and MPICH's PMI set,
/// without initialising MPI.
pub fn launcher_ranks() -> Option<usize> {
    env_number(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
}

/// This process's rank as an MPI launcher set it in the environment (Open MPI, MPICH's PMI,
/// PMIx), if it was started by one.
pub fn launcher_rank() -> Option<usize> {
    env_number(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"])
}

fn env_number(names: &[&str]) -> Option<usize> {
    names.iter().find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Ranks as threads of one process: `LocalGroup::new(n)` gives the `n` communicators, one
/// per thread. Sums add the ranks' buffers in rank order, so every rank gets the same bits.
/// A communicator that is dropped leaves the group: the others' pending and later calls fail
/// with [`CommError::RankLeft`] instead of waiting forever.
#[derive(Debug)]
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    state: Mutex<Round>,
    changed: Condvar,
}

/// One collective in progress: the ranks deposit their buffers, the last one to arrive
/// combines them, and each rank takes the result; the round ends when all have taken it.
#[derive(Debug, Default)]
struct Round {
    generation: u64,
    deposits: Vec<Option<(Combine, Deposit)>>,
    result: Option<Deposit>,
    taken: usize,
    /// A rank that left (its communicator was dropped), or that ended the group on a mismatch.
    left: Option<(usize, Ending)>,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Left,
    Aborted,
}

#[derive(Debug, Clone)]
enum Deposit {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Deposit {
    fn len(&self) -> usize {
        match self {
            Deposit::F32(v) => v.len(),
            Deposit::F64(v) => v.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    From(usize),
}

impl LocalGroup {
    /// `size` communicators of one group, rank `i` at index `i`.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        assert!(size > 0, "LocalGroup::new: a group needs at least one rank");
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Round { deposits: vec![None; size], ..Round::default() }),
            changed: Condvar::new(),
        });
        (0..size).map(|rank| LocalGroup { rank, shared: shared.clone() }).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A rank that panicked while holding the lock has left; the state is still whole.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn collective(&self, mine: Deposit, how: Combine) -> Result<Deposit, CommError> {
        let size = self.shared.size;
        let ended = |(rank, ending): (usize, Ending)| match ending {
            Ending::Left => CommError::RankLeft { rank, size, this: self.rank },
            Ending::Aborted => CommError::Aborted { rank, size, this: self.rank },
        };
        let mut round = self.lock();
        // Wait for the previous round to be taken by everyone.
        while round.result.is_some() {
            if let Some(e) = round.left {
                return Err(ended(e));
            }
            round = self.shared.changed.wait(round).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = round.left {
            return Err(ended(e));
        }
        assert!(
            round.deposits[self.rank].is_none(),
            "LocalGroup: rank {} made two collective calls at once (one call at a time per rank)",
            self.rank
        );
        let other = round.deposits.iter().enumerate().find_map(|(i, d)| {
            let (other_how, d) = d.as_ref()?;
            Some((i, *other_how, d.len(), std::mem::discriminant(d)))
        });
        if let Some((other, other_how, other_len, kind)) = other {
            if other_how != how || other_len != mine.len() || kind != std::mem::discriminant(&mine) {
                // The group cannot go on: the waiting ranks are released with this rank's name.
                round.left = Some((self.rank, Ending::Aborted));
                self.shared.changed.notify_all();
                return Err(CommError::Mismatch { this: self.rank, len: mine.len(), other, other_len });
            }
        }
        round.deposits[self.rank] = Some((how, mine));
        let generation = round.generation;
        if round.deposits.iter().all(Option::is_some) {
            let deposits: Vec<Deposit> =
                round.deposits.iter_mut().map(|d| d.take().expect("all deposited").1).collect();
            round.result = Some(combine(deposits, &how));
            round.taken = 0;
            self.shared.changed.notify_all();
        } else {
            // A result already made is taken even if a rank left after making its deposit.
            while round.result.is_none() || round.generation != generation {
                if let Some(e) = round.left {
                    return Err(ended(e));
                }
                round = self.shared.changed.wait(round).unwrap_or_else(|e| e.into_inner());
            }
        }
        let out = round.result.clone().expect("the round's result");
        round.taken += 1;
        if round.taken == size {
            round.result = None;
            round.generation += 1;
            self.shared.changed.notify_all();
        }
        Ok(out)
    }
}

fn combine(deposits: Vec<Deposit>, how: &Combine) -> Deposit {
    match how {
        Combine::From(root) => deposits.into_iter().nth(*root).expect("root deposited"),
        Combine::Sum => {
            let mut it = deposits.into_iter();
            let mut acc = it.next().expect("at least one rank");
            for d in it {
                match (&mut acc, d) {
                    (Deposit::F32(a), Deposit::F32(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
                    (Deposit::F64(a), Deposit::F64(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
                    _ => unreachable!("element types are checked on deposit"),
                }
            }
            acc
        }
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let mut round = self.lock();
        if round.left.is_none() && self.shared.size > 1 {
            round.left = Some((self.rank, Ending::Left));
        }
        self.shared.changed.notify_all();
    }
}

impl Communicator for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_sum_f32(&self, buffer: &mut [f32]) -> Result<(), CommError> {
        if let Deposit::F32(sum) = self.collective(Deposit::F32(buffer.to_vec()), Combine::Sum)? {
            buffer.copy_from_slice(&sum);
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buffer: &mut [f64]) -> Result<(), CommError> {
        if let Deposit::F64(sum) = self.collective(Deposit::F64(buffer.to_vec()), Combine::Sum)? {
            buffer.copy_from_slice(&sum);
        }
        Ok(())
    }
    fn broadcast_f32(&self, buffer: &mut [f32], root: usize) -> Result<(), CommError> {
        assert!(root < self.shared.size, "broadcast_f32: root {root} of {} ranks", self.shared.size);
        if let Deposit::F32(v) = self.collective(Deposit::F32(buffer.to_vec()), Combine::From(root))? {
            buffer.copy_from_slice(&v);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("{} threads of one process", self.shared.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_once_and_differ_by_at_most_one_row() {
        for len in 0..40 {
            for ranks in 1..7 {
                let parts: Vec<_> = (0..ranks).map(|r| shard(len, r, ranks)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[ranks - 1].end, len);
                assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
                let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{len} {ranks} {sizes:?}");
            }
        }
    }

    #[test]
    fn local_group_sums_in_rank_order_and_broadcasts_many_rounds() {
        let group = LocalGroup::new(3);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut last = Vec::new();
                        for round in 0..200 {
                            let mut b = vec![c.rank() as f32 + round as f32, 1e8, 1.0];
                            c.all_reduce_sum_f32(&mut b).unwrap();
                            assert_eq!(b[0], (3 * round + 3) as f32);
                            // (1e8 + 1e8) + 1e8 in rank order, whatever the arrival order.
                            assert_eq!(b[1], 3e8);
                            let mut x = vec![c.rank() as f32; 2];
                            c.broadcast_f32(&mut x, 2).unwrap();
                            assert_eq!(x, [2.0, 2.0]);
                            let mut d = vec![0.5f64; 1];
                            c.all_reduce_sum_f64(&mut d).unwrap();
                            last = vec![b[2], d[0] as f32];
                        }
                        last
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| r == &[3.0, 1.5]));
    }

    #[test]
    fn a_rank_that_leaves_stops_the_others_with_its_name() {
        let mut group = LocalGroup::new(3);
        let leaving = group.pop().unwrap();
        let err = std::thread::scope(|s| {
            let waiting: Vec<_> = group
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut b = [1.0f32];
                        c.all_reduce_sum_f32(&mut b)
                    })
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(leaving);
            waiting.into_iter().map(|h| h.join().unwrap().unwrap_err()).collect::<Vec<_>>()
        });
        assert_eq!(err[0], CommError::RankLeft { rank: 2, size: 3, this: 0 });
        assert!(err[1].to_string().contains("rank 2 of 3 left"), "{}", err[1]);
    }

    #[test]
    fn different_lengths_are_an_error_not_garbage() {
        let group = LocalGroup::new(2);
        let (second, first) = std::thread::scope(|s| {
            let a = s.spawn(|| group[0].all_reduce_sum_f32(&mut [1.0, 2.0]));
            std::thread::sleep(std::time::Duration::from_millis(20));
            let b = group[1].all_reduce_sum_f32(&mut [1.0]);
            (b, a.join().unwrap())
        });
        // The rank that arrived second sees the mismatch; the one waiting is released, naming it.
        match (&first, &second) {
            (Err(CommError::Aborted { rank: 1, .. }), Err(CommError::Mismatch { this: 1, .. }))
            | (Err(CommError::Mismatch { this: 0, .. }), Err(CommError::Aborted { rank: 0, .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sum_on_one_rank_and_a_broadcast_on_another_is_an_error() {
        let group = LocalGroup::new(2);
        let (first, second) = std::thread::scope(|s| {
            let a = s.spawn(|| group[0].all_reduce_sum_f32(&mut [1.0, 2.0]));
            let b = s.spawn(|| group[1].broadcast_f32(&mut [1.0, 2.0], 0));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
    }

    #[test]
    fn single_process_changes_nothing() {
        let mut b = [1.0f32, 2.0];
        SingleProcess.all_reduce_sum_f32(&mut b).unwrap();
        SingleProcess.broadcast_f32(&mut b, 0).unwrap();
        assert_eq!(b, [1.0, 2.0]);
        assert_eq!((SingleProcess.rank(), SingleProcess.size()), (0, 1));
    }
}
