//! [`MpiCommunicator`]: the ranks of an MPI job (`mpirun -np N …`), over the system's MPI
//! library (Open MPI or MPICH) through the `mpi` crate.
//!
//! MPI is initialised at the `MPI_THREAD_SERIALIZED` level and every call goes through one
//! mutex, so the communicator can be used from any thread (the trainer calls it from its
//! worker pool) while MPI sees one call at a time. MPI is finalised when the communicator is
//! dropped, which must happen on the thread that created it, after every rank's last
//! collective call (finalising waits for the other ranks). Errors inside MPI use MPI's
//! default handler, which aborts the job: `mpirun` then stops every rank and names the one
//! that failed.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Threading;

use super::{CommError, Communicator};

/// The world of an MPI job: rank and size from `MPI_COMM_WORLD`.
pub struct MpiCommunicator {
    rank: usize,
    size: usize,
    /// Holds MPI open (dropping the universe finalises it) and serialises the calls.
    state: Mutex<State>,
    library: String,
}

struct State {
    universe: Universe,
    /// Send buffers kept between calls (MPI_Allreduce needs one apart from the result's).
    send_f32: Vec<f32>,
    send_f64: Vec<f64>,
}

impl std::fmt::Debug for MpiCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCommunicator").field("rank", &self.rank).field("size", &self.size).finish()
    }
}

impl MpiCommunicator {
    /// Initialises MPI (once per process) and joins `MPI_COMM_WORLD`.
    ///
    /// # Errors
    /// If MPI was already initialised, or the library cannot serve calls from several
    /// threads one at a time.
    pub fn init() -> Result<MpiCommunicator, CommError> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| CommError::Library("MPI is already initialised in this process".into()))?;
        if level < Threading::Serialized {
            return Err(CommError::Library(format!(
                "the MPI library offers thread level {level:?}; adjoint needs Serialized or better"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let library = mpi::environment::library_version()
            .map(|v| v.split([',', '\n']).next().unwrap_or("").trim().to_string())
            .unwrap_or_else(|_| "MPI".into());
        let state = State { universe, send_f32: Vec::new(), send_f64: Vec::new() };
        Ok(MpiCommunicator { rank, size, state: Mutex::new(state), library })
    }

    /// Ends every rank of the job at once (`MPI_Abort`) with exit code `code`: for a failure
    /// on one rank, which the others, waiting in a collective, would never learn of.
    pub fn abort(&self, code: i32) -> ! {
        self.call(|s| s.universe.world().abort(code))
    }

    fn call<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }
}

/// Sums `buffer` over the ranks, through `send` (kept between calls).
fn all_reduce<T: mpi::datatype::Equivalence + Copy>(universe: &Universe, send: &mut Vec<T>, buffer: &mut [T]) {
    send.clear();
    send.extend_from_slice(buffer);
    universe.world().all_reduce_into(&send[..], buffer, SystemOperation::sum());
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        // Finalising waits for the other ranks, which may be waiting for this one: a rank
        // unwinding from a panic ends the job instead.
        if std::thread::panicking() {
            eprintln!("adjoint: rank {} failed; ending the MPI job", self.rank);
            self.abort(1);
        }
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, buffer: &mut [f32]) -> Result<(), CommError> {
        self.call(|s| all_reduce(&s.universe, &mut s.send_f32, buffer));
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buffer: &mut [f64]) -> Result<(), CommError> {
        self.call(|s| all_reduce(&s.universe, &mut s.send_f64, buffer));
        Ok(())
    }
    fn broadcast_f32(&self, buffer: &mut [f32], root: usize) -> Result<(), CommError> {
        assert!(root < self.size, "broadcast_f32: root {root} of {} ranks", self.size);
        self.call(|s| s.universe.world().process_at_rank(root as i32).broadcast_into(buffer));
        Ok(())
    }
    fn describe(&self) -> String {
        format!("MPI ({})", self.library)
    }
}
