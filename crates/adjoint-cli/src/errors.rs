//! The command line's one exit-code policy:
//!
//! - **2, bad input**: a flag value, an expression, or a file the user named is wrong or cannot
//!   be read (missing, corrupt, of another model, too large), or an output folder cannot be
//!   used (it holds another run, it is locked, it is not a folder);
//! - **1, internal failure**: something that is not the user's fault, including failing to
//!   write results (a full disk) and bugs (a panic is reported as one, without a backtrace);
//! - **3, diverged**: training stopped at the first non-finite loss or gradient (or, with
//!   `--detect-anomaly`, value); the run folder keeps the last good epoch;
//! - **130, interrupted**: Ctrl-C, SIGTERM or SIGHUP; the step in progress was finished and
//!   the run saved, so `--resume` continues exactly where it stopped.
//!
//! Library errors are mapped here, once.

use adjoint::data::DataError;
use adjoint::dist::CommError;
use adjoint::expr::{EvalError, ParseError};
use adjoint::io::IoError;
use adjoint::nn::NetworkError;
use adjoint::train::{Stopped, TrainError};
use adjoint::SpecError;

/// A failure to report, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input was wrong: a message saying what and how to fix it (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed that is not the user's fault (exit 1).
    #[error("{0}")]
    Internal(String),
    /// Training stopped at a non-finite value (exit 3).
    #[error("{0}")]
    Diverged(String),
    /// Interrupted by the user after saving (exit 130).
    #[error("{0}")]
    Interrupted(String),
    /// Already reported by another process (rank 0 of a distributed run speaks for all): exit
    /// with this code and print nothing.
    #[error("")]
    Reported(i32),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Internal(_) => 1,
            CliError::Diverged(_) => 3,
            CliError::Interrupted(_) => 130,
            CliError::Reported(code) => *code,
        }
    }

    /// A failure to write results (exit 1), naming what was being written.
    pub fn writing(e: impl std::fmt::Display) -> Self {
        CliError::Internal(format!("cannot write results: {e}"))
    }
}

impl From<SpecError> for CliError {
    fn from(e: SpecError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<DataError> for CliError {
    fn from(e: DataError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<ParseError> for CliError {
    fn from(e: ParseError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<EvalError> for CliError {
    fn from(e: EvalError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<NetworkError> for CliError {
    /// Building or loading a network: the architecture or the model file is the user's.
    fn from(e: NetworkError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<TrainError> for CliError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Mismatch(_) | TrainError::Network(_) | TrainError::Io(IoError::Invalid { .. }) => {
                CliError::Usage(e.to_string())
            }
            TrainError::Io(IoError::Io { ref source, .. })
                if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) =>
            {
                CliError::Usage(e.to_string())
            }
            // Ranks set up differently: the user's doing, reported by every rank alike.
            TrainError::Stopped(Stopped::Communication { error: CommError::Disagree(_), .. })
            | TrainError::Communication(CommError::Disagree(_)) => {
                CliError::Usage(format!("{e}: start every rank with the same flags and files"))
            }
            TrainError::Stopped(Stopped::Communication { .. }) => CliError::Internal(e.to_string()),
            TrainError::Stopped(_) => CliError::Diverged(e.to_string()),
            TrainError::Io(_) | TrainError::Threads { .. } | TrainError::Communication(_) => {
                CliError::Internal(e.to_string())
            }
        }
    }
}
