//! `adjoint train --distributed`: joining the MPI job `mpirun` started, and ending it.
//!
//! Every rank runs the same command; rank 0 writes the run folder and prints, the others
//! train silently. Failures the ranks reach together (a stop, divergence) end every rank
//! normally and only rank 0 reports them; a failure on one rank (a file it cannot read, a
//! full disk, a bug) is printed with the rank's number and ends the whole job with
//! `MPI_Abort`, since the other ranks would otherwise wait for it forever.

use std::sync::Arc;

use adjoint::dist::{Communicator, SingleProcess};

use crate::CliError;

/// This process's place in the job.
pub(crate) struct Job {
    comm: Arc<dyn Communicator>,
    /// Set when the ranks agreed to fail (see [`Job::agree`]): ending needs no abort.
    settled: std::cell::Cell<bool>,
    #[cfg(feature = "mpi")]
    mpi: Option<Arc<adjoint::dist::mpi::MpiCommunicator>>,
}

impl Job {
    /// A single process, or with `distributed` this process's rank of the MPI job.
    ///
    /// # Errors
    /// Exit 2 when `distributed` is asked for without `mpirun`, or of a binary built without
    /// the `mpi` feature.
    pub(crate) fn join(distributed: bool) -> Result<Job, CliError> {
        let launched = adjoint::dist::launcher_ranks();
        if !distributed {
            if let Some(n) = launched.filter(|&n| n > 1) {
                // Every rank would train a model of its own into the same folder; rank 0 says so.
                let message = format!(
                    "started by an MPI launcher with {n} ranks but without --distributed: add --distributed \
                     to train one model on all of them, or run adjoint without mpirun"
                );
                return Err(if adjoint::dist::launcher_rank().unwrap_or(0) == 0 {
                    CliError::Usage(message)
                } else {
                    CliError::Reported(2)
                });
            }
            return Ok(Job::single());
        }
        #[cfg(not(feature = "mpi"))]
        {
            if adjoint::dist::launcher_rank().is_some_and(|r| r > 0) {
                return Err(CliError::Reported(2)); // rank 0 says it for all
            }
            Err(CliError::Usage(
                "--distributed: this adjoint was built without MPI; build it with \
                 `cargo install --path crates/adjoint-cli --features mpi` (needs an MPI library: \
                 on Debian, apt install libopenmpi-dev openmpi-bin libclang-dev)"
                    .into(),
            ))
        }
        #[cfg(feature = "mpi")]
        {
            if launched.is_none() {
                return Err(CliError::Usage(
                    "--distributed: not started by an MPI launcher; run `mpirun -np N adjoint train --distributed …`"
                        .into(),
                ));
            }
            let mpi = Arc::new(
                adjoint::dist::mpi::MpiCommunicator::init()
                    .map_err(|e| CliError::Internal(format!("cannot join the MPI job: {e}")))?,
            );
            Ok(Job { comm: mpi.clone(), settled: Default::default(), mpi: Some(mpi) })
        }
    }

    fn single() -> Job {
        Job {
            comm: Arc::new(SingleProcess),
            settled: Default::default(),
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The communicator the trainer sums gradients with.
    pub(crate) fn communicator(&self) -> Arc<dyn Communicator> {
        self.comm.clone()
    }

    /// The number of ranks (1 alone).
    pub(crate) fn size(&self) -> usize {
        self.comm.size()
    }

    /// Whether this process writes and prints (rank 0).
    pub(crate) fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Whether any rank's `flag` is set (a collective call in a group).
    pub(crate) fn any(&self, flag: bool) -> Result<bool, CliError> {
        let mut b = [if flag { 1.0 } else { 0.0 }];
        self.comm.all_reduce_sum_f64(&mut b).map_err(|e| CliError::Internal(e.to_string()))?;
        Ok(b[0] > 0.0)
    }

    /// Agrees on how setting up went: alone, `result` as it is; in a group, a collective call
    /// after which every rank fails if any did (`undo` cleans up a rank that had succeeded).
    /// The lowest failing rank prints its failure (naming itself unless it is rank 0); every
    /// rank exits with 2 if any rank's input was bad, else 1.
    pub(crate) fn agree<T>(&self, result: Result<T, CliError>, undo: impl FnOnce(&T)) -> Result<T, CliError> {
        if self.size() == 1 {
            return result;
        }
        // [any bad input, then one slot per rank: 1 where it failed]
        let code = result.as_ref().err().map_or(0, CliError::exit_code);
        let mut b = vec![0.0f64; 1 + self.size()];
        b[0] = f64::from(u8::from(code == 2));
        b[1 + self.comm.rank()] = f64::from(u8::from(code != 0));
        self.comm.all_reduce_sum_f64(&mut b).map_err(|e| CliError::Internal(e.to_string()))?;
        let Some(reporter) = b[1..].iter().position(|&f| f > 0.0) else { return result };
        self.settled.set(true);
        let job_code = if b[0] > 0.0 { 2 } else { 1 };
        match result {
            // The lowest failing rank speaks for all (rank 0 without its number).
            Err(e) if reporter == self.comm.rank() => {
                if self.is_root() {
                    eprintln!("adjoint: {e}");
                } else {
                    eprintln!("adjoint: rank {} of {}: {e}", self.comm.rank(), self.size());
                }
            }
            Err(_) => {}
            Ok(done) => undo(&done),
        }
        Err(CliError::Reported(job_code))
    }

    /// Marks a failure every rank reached together (ending needs no abort).
    pub(crate) fn settle(&self) {
        self.settled.set(true);
    }

    /// Ends the command: `agreed` failures (every rank reached the same one) are reported
    /// by rank 0 alone; any other failure in a group is printed with the rank's number and
    /// ends every rank of the job.
    pub(crate) fn finish(self, result: Result<(), CliError>, agreed: bool) -> Result<(), CliError> {
        let Err(e) = result else { return Ok(()) };
        if self.size() == 1 {
            return Err(e);
        }
        if agreed || self.settled.get() || matches!(e, CliError::Reported(_)) {
            // Rank 0 speaks first; no rank exits before it has (mpirun ends the job at the
            // first rank that exits with an error, which could cut rank 0 off).
            if self.is_root() && !matches!(e, CliError::Reported(_)) {
                eprintln!("adjoint: {e}");
            }
            let _ = self.any(false);
            return Err(CliError::Reported(e.exit_code()));
        }
        eprintln!("adjoint: rank {} of {}: {e}", self.comm.rank(), self.size());
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.abort(e.exit_code());
        }
        Err(CliError::Reported(e.exit_code()))
    }
}
